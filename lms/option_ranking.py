"""Closed-option ranking for :class:`lms.local_engine.LocalEngine`: option tries, the ranking memo and ``rank``.

A greedy closed-option field (the O*NET occupation) is answered by the top option of a ranking (``choice_decoding=
'ranked'``): a beam over the option trie (:func:`lms.ranking.rank_beam`) for the batch's prompts, or the exact
best-first search with tree attention (``ranking='exact'``, :func:`lms.ranking.rank_tree`). Rankings are kept
per prompt, so :meth:`OptionRanking.rank` on a prompt the engine already answered costs nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from lms import structured
from lms.chat_template import end_of_turn_ids, normalize_messages, render_prompt
from lms.constrained import OptionTrie
from lms.generation import Segment, SegmentResult
from lms.model_store import LoadedModel
from lms.ranking import rank_beam, rank_tree

logger = logging.getLogger(__name__)

_RANKED_MEMO_SIZE = 4096


class OptionRanking:
    """The ranking half of :class:`~lms.local_engine.LocalEngine` (a mixin: it uses the engine's settings, loaded
    models, prefix caches and batching worker)."""

    def trie(self, loaded: LoadedModel, options: tuple[str, ...]) -> OptionTrie:
        """Cached option trie for a model and option list."""
        key = (loaded.spec.spec, loaded.fingerprint, hash(options))
        if key not in self._tries:
            self._tries[key] = OptionTrie(loaded.tokenizer, list(options), _terminators(loaded.tokenizer))
        return self._tries[key]

    def _ranked_results(self, loaded: LoadedModel, ranked: list[tuple[int, Segment]],
                        starts: list[Any] | None = None) -> dict[int, SegmentResult]:
        """Greedy closed-option rows answered by the ranking's top option (the ranking is kept for :meth:`rank`);
        ``starts`` holds each row's KV cache from its previous field (or None)."""
        out = {}
        by_trie: dict[int, list[tuple[int, list[int], OptionTrie, Any]]] = {}
        for (index, segment), start in zip(ranked, starts or [None] * len(ranked), strict=True):
            ids = loaded.tokenizer(segment.prompt, add_special_tokens=False)["input_ids"]
            by_trie.setdefault(id(segment.constraint.trie), []).append((index, ids, segment.constraint.trie, start))
        for items in by_trie.values():
            trie = items[0][2]
            lists = self._rank_ids(loaded, [ids for _, ids, _, _ in items], trie, self.rank_k,
                                   starts=[start for *_, start in items])
            for (index, ids, _, _), top in zip(items, lists, strict=True):
                option = top[0][0]
                out[index] = SegmentResult(text=option, prompt_tokens=len(ids),
                                           output_tokens=len(trie.token_ids[option]) + 1)
        return out

    def _rank_key(self, loaded: LoadedModel, ids: list[int], trie: OptionTrie) -> tuple:
        return (loaded.spec.spec, loaded.fingerprint, loaded.dtype, self.ranking, self.rank_width,
                self.rank_first_width, id(trie), tuple(ids))

    def _rank_ids(self, loaded: LoadedModel, prompts: list[list[int]], trie: OptionTrie,
                  k: int, starts: list[Any] | None = None) -> list[list[tuple[str, float]]]:
        """Top-k options per prompt (kept rankings first, the rest in one batched search; ``starts``: each prompt's
        earlier KV cache, or None). Runs on the caller's thread: call it from the batching worker."""
        import torch

        keys = [self._rank_key(loaded, ids, trie) for ids in prompts]
        out: list[list[tuple[str, float]] | None] = [None] * len(prompts)
        with self._ranked_lock:
            for i, key in enumerate(keys):
                if key in self._ranked and len(self._ranked[key]) >= min(k, len(trie.options)):
                    self._ranked.move_to_end(key)
                    out[i] = self._ranked[key][:k]
                    self.stats["rank_memo_hits"] += 1
        todo = [i for i, value in enumerate(out) if value is None]
        todo_starts = [starts[i] for i in todo] if starts else None
        if todo:
            depth = max(k, self.rank_k)
            self.stats["rank_calls"] += 1
            certificates: list[bool] = []
            with loaded.lock, torch.inference_mode():
                if self.ranking == "exact":
                    lists = rank_tree(loaded.model, [prompts[i] for i in todo], trie, depth,
                                      pad=loaded.tokenizer.pad_token_id, prefix_cache=self.prefix_cache(loaded),
                                      share_prefix=self.share_prefix, starts=todo_starts)
                    certificates = [True] * len(todo)
                else:
                    lists = rank_beam(loaded.model, [prompts[i] for i in todo], trie, depth, width=self.rank_width,
                                      first_width=self.rank_first_width, pad=loaded.tokenizer.pad_token_id,
                                      prefix_cache=self.prefix_cache(loaded), share_prefix=self.share_prefix,
                                      certificates=certificates, starts=todo_starts)
            self.stats["rank_certified"] = self.stats.get("rank_certified", 0) + sum(certificates)
            with self._ranked_lock:
                for i, ranking in zip(todo, lists, strict=True):
                    self._ranked[keys[i]] = ranking
                    out[i] = ranking[:k]
                while len(self._ranked) > _RANKED_MEMO_SIZE:
                    self._ranked.popitem(last=False)
        return out

    def field_prefix(self, model_name: str, messages: list[dict[str, str]], field_name: str,
                     prefix_fields: dict[str, str] | None = None) -> tuple[LoadedModel, list[int], OptionTrie]:
        """Prompt tokens ending right before ``field_name``'s value, and that field's option trie.

        The prompt is the chat-templated ``messages`` followed, inside the open assistant turn, by the output fields
        that precede ``field_name`` in the signature (``[[ ## f ## ]]\\n<value>\\n\\n``, values from
        ``prefix_fields`` or else generated greedily by this engine exactly as in ``complete``) and then the
        header ``[[ ## field_name ## ]]\\n``.
        """
        messages = normalize_messages(messages)
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
        fields = structured.detect_output_fields(system, last_user, self.constrained_fields)
        if not fields:
            raise ValueError("messages are not a DSPy ChatAdapter request (no 'Respond with the corresponding output "
                             "fields' instruction in the last user message)")
        names = [f.name for f in fields]
        if field_name not in names:
            raise ValueError(f"Field {field_name!r} is not an output field of these messages; output fields: {names}")
        spec = fields[names.index(field_name)]
        if spec.kind != "choice":
            raise ValueError(f"Field {field_name!r} has no closed option list; pass constrained_fields="
                             f"{{{field_name!r}: [...]}} to the engine (lms.load) or use a Literal type")
        before = fields[: names.index(field_name)]
        if prefix_fields is not None:
            missing = [f.name for f in before if f.name not in prefix_fields]
            if missing:
                raise ValueError(f"prefix_fields lacks the fields preceding {field_name!r}: {missing}")
            values = [(f.name, str(prefix_fields[f.name]).strip()) for f in before]
        elif before:
            job = self._job(model_name, messages, None, fields=before)
            self._submit(job)
            values = job.values
        else:
            values = []
        loaded = self.loaded(model_name)
        prompt = render_prompt(loaded.tokenizer, messages, structured.prefix_before(values, spec))
        ids = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return loaded, ids, self.trie(loaded, spec.options)

    def rank(self, model_name: str, messages: list[dict[str, str]], field_name: str, k: int = 5,
             prefix_fields: dict[str, str] | None = None) -> list[tuple[str, float]]:
        """Top-k options of a constrained field with total log-probabilities (see :meth:`field_prefix`).

        A prompt this engine has already answered by ranking (``choice_decoding='ranked'``) returns the kept
        ranking without running the model again."""
        loaded, ids, trie = self.field_prefix(model_name, messages, field_name, prefix_fields)
        return self.run_on_worker(lambda: self._rank_ids(loaded, [ids], trie, k)[0])


def _terminators(tokenizer: Any) -> list[int]:
    """Tokens that may follow a closed-option value: single-token newlines and end of turn."""
    ids = set(end_of_turn_ids(tokenizer))
    for text in ("\n", "\n\n"):
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    return sorted(ids)
