"""Batched generation of one segment per row: shared-prefix KV reuse, per-row constraints, stops and budgets.

:func:`generate_segments` decodes several prompts (rows) together. Each row has its own constraint (see
``lms.constrained``), stop strings and token budget. The default loop drops a row from the batch -- and its KV-cache
row -- as soon as it is done, so short answers do not pay for the longest one; ``hf_generate=True`` uses a single
``model.generate`` with a per-row ``StoppingCriteria`` instead (same greedy output, tested). The token prefix common
to all prompts (DSPy's system message) is prefilled once and its cache repeated over the rows (rows as long as a
sliding attention window: continued one by one, :mod:`lms.row_prefill`). Stop strings are
checked by decoding only the last few tokens of a row (``generate(stop_strings=...)`` was measured ~10x slower).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from lms.constrained import RowConstraintsProcessor, TrieConstraint
from lms.next_token import next_tokens
from lms.progress import count_tokens
from lms.row_prefill import prefill_rows, take_row

logger = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]+")


@dataclass
class Segment:
    """One row of a batched generation.

    Attributes:
        prompt: Full prompt text (chat template applied, special tokens as text).
        max_new_tokens: Token budget of this row.
        stops: Stop strings; the value is cut at the first one.
        constraint: Optional row constraint from ``lms.constrained``.
        terminators: Token ids that end this row (besides end of turn), e.g. newline after a constrained value.
        stop_repeated_lines: Stop when a completed line repeats an earlier one (small models loop); the value is
            cut before the repeat.
    """

    prompt: str
    max_new_tokens: int
    stops: tuple[str, ...] = ()
    constraint: Any = None
    terminators: tuple[int, ...] = ()
    stop_repeated_lines: bool = False


@dataclass
class SegmentResult:
    """Generated text of one row, its prompt and generated token counts and whether it ran out of budget."""

    text: str
    prompt_tokens: int
    output_tokens: int
    truncated: bool = False
    token_ids: list[int] = field(default_factory=list)
    kv: Any = None


def row_done(tokenizer: Any, seg: Segment, generated: list[int], end_ids: set[int], tail: int = 8) -> bool:
    """Whether a row is finished: budget reached, an end/terminator token, a stop string or a repeated line."""
    if not generated:
        return False
    last = generated[-1]
    if len(generated) >= seg.max_new_tokens or last in end_ids or last in seg.terminators:
        return True
    if seg.stops:
        text = tokenizer.decode(generated[-tail:], skip_special_tokens=False)
        if any(stop in text for stop in seg.stops):
            return True
    if seg.stop_repeated_lines and "\n" in tokenizer.decode([last]):
        return repeated_line_cut(tokenizer.decode(generated, skip_special_tokens=True)) is not None
    return False


def _tail(segments: list[Segment]) -> int:
    return max([8] + [len(stop) + 2 for seg in segments for stop in seg.stops])


class RowStoppingCriteria(StoppingCriteria):
    """Per-row stopping for ``model.generate`` (see :func:`row_done`)."""

    def __init__(self, tokenizer: Any, prompt_len: int, segments: list[Segment], end_ids: list[int]):
        self.tokenizer, self.prompt_len, self.segments = tokenizer, prompt_len, segments
        self.end_ids, self.tail = set(end_ids), _tail(segments)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.tensor([row_done(self.tokenizer, seg, input_ids[row, self.prompt_len:].tolist(), self.end_ids,
                                      self.tail) for row, seg in enumerate(self.segments)], dtype=torch.bool)


def repeated_line_cut(text: str) -> int | None:
    """Offset of the first completed line that repeats an earlier non-empty line, or None.

    Lines are compared with their digits removed: small models loop by copying a history line with the next year
    (``- 1984-1985: Clerks (age 23)``, ``- 1985-1986: Clerks (age 23)``, ...).
    """
    seen, offset = set(), 0
    for line in text.split("\n")[:-1]:
        key = _DIGITS.sub("", line).strip(" \t-*.:,;()")
        if key and key in seen:
            return offset
        seen.add(key)
        offset += len(line) + 1
    return None


def generate_segments(model: Any, tokenizer: Any, segments: list[Segment], end_ids: list[int],
                      sampling: dict[str, Any] | None = None, seed: int | None = None,
                      share_prefix: bool = True, hf_generate: bool = False,
                      prefix_cache: Any = None, starts: list[Any] | None = None,
                      keep: list[bool] | None = None) -> list[SegmentResult]:
    """Generate all rows of a batch together.

    The default decoding loop drops finished rows from the batch (and their KV cache rows) at every step, so a
    batch costs what its unfinished rows cost; ``hf_generate=True`` runs one ``model.generate`` instead (finished
    rows keep being computed until the longest one ends). Both are greedy-identical.

    Args:
        model: Causal LM in eval mode.
        tokenizer: Its tokenizer (left padding).
        segments: One segment per row.
        end_ids: End-of-turn token ids (stop every row).
        sampling: ``{"temperature", "top_p", "top_k"}``; greedy when None or temperature is 0.
        seed: Seed for sampled generation.
        share_prefix: Run the token prefix common to all rows once and reuse its KV cache (see :func:`prefill_ids`).
        hf_generate: Use ``model.generate`` rather than the shrinking-batch loop.
        prefix_cache: Optional :class:`~lms.prefix_cache.PrefixCache` of earlier batches' prompt prefixes.
        starts: Per row, a :class:`~lms.row_prefill.RowKV` from an earlier result of that row (or None): the row
            computes only the tokens after its common prefix with it.
        keep: Per row, whether its result carries its own KV cache (``kv``: the prompt and the tokens fed) for a
            next segment that extends it.

    Returns:
        One result per row, in order.
    """
    rows = [tokenizer(s.prompt, add_special_tokens=False)["input_ids"] for s in segments]
    prompt_counts = [len(row) for row in rows]
    sampled = bool(sampling) and (sampling.get("temperature") or 0) > 0
    kept: list[Any] = [None] * len(rows)
    if sampled and seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        if hf_generate:
            enc, cache = encode_ids(model, rows, tokenizer.pad_token_id, share_prefix)
            generated = _hf_generate(model, tokenizer, segments, enc, cache, end_ids, sampling if sampled else None)
        else:
            keeping = share_prefix and any(keep or ())
            state = prefill_ids(model, rows, tokenizer.pad_token_id, share_prefix, prefix_cache, starts=starts,
                                keep=keeping)
            generated = _shrinking_generate(model, tokenizer, segments, state, end_ids,
                                            sampling if sampled else None,
                                            (rows, keep, state[1].held, kept) if keeping else None)
    results = []
    end_set = set(end_ids)
    for row, seg in enumerate(segments):
        ids, hit_end = [], False
        for token in generated[row]:
            if token in end_set or token in seg.terminators:
                hit_end = True
                break
            ids.append(token)
            if len(ids) >= seg.max_new_tokens:
                break
        text = _decode(tokenizer, ids, seg)
        cut = _cut(text, seg.stops)
        if seg.stop_repeated_lines and (repeat := repeated_line_cut(text[:cut] + "\n")) is not None:
            cut, hit_end = repeat, True
        truncated = not hit_end and cut == len(text) and len(ids) >= seg.max_new_tokens
        results.append(SegmentResult(text=text[:cut].strip(), prompt_tokens=int(prompt_counts[row]),
                                     output_tokens=len(ids) + int(hit_end), truncated=truncated, token_ids=ids,
                                     kv=kept[row]))
    return results


def _hf_generate(model, tokenizer, segments, enc, cache, end_ids, sampling) -> list[list[int]]:
    prompt_len = enc["input_ids"].shape[1]
    constraints = [s.constraint for s in segments]
    config = GenerationConfig(
        max_new_tokens=max(1, max(s.max_new_tokens for s in segments)), do_sample=sampling is not None,
        temperature=sampling["temperature"] if sampling else None, top_p=sampling.get("top_p") if sampling else None,
        top_k=(sampling.get("top_k") or 0) if sampling else None, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=list(end_ids), use_cache=True)
    processors = LogitsProcessorList([RowConstraintsProcessor(constraints, prompt_len)]) if any(constraints) else None
    stopping = StoppingCriteriaList([RowStoppingCriteria(tokenizer, prompt_len, segments, end_ids)])
    extra = {"cache": cache} if cache is not None else {}
    out = model.generate(**enc, generation_config=config, logits_processor=processors, stopping_criteria=stopping,
                         **extra)
    rows = [out[row, prompt_len:].tolist() for row in range(len(segments))]
    pad = tokenizer.pad_token_id
    if pad is not None and pad not in end_ids:  # finished rows are filled with padding
        rows = [row[: row.index(pad)] if pad in row else row for row in rows]
    return rows


def _banned(segment: Segment, generated: list[int]) -> list[int] | None:
    return banned(generated) or None if (banned := getattr(segment.constraint, "banned_tokens", None)) else None


def _step_allowed(segments: list[Segment], active: list[int], generated: list[list[int]]) -> list[list[int] | None]:
    """Allowed next tokens per active row (None: the full vocabulary, maybe with banned tokens)."""
    out = []
    for row in active:
        constraint = segments[row].constraint
        out.append(constraint.allowed_tokens(generated[row]) or None if constraint is not None else None)
    return out


def prefill(model: Any, enc: dict[str, torch.Tensor], cache: Any = None) -> tuple[torch.Tensor, Any, torch.Tensor,
                                                                                   torch.Tensor]:
    """Run the part of :func:`encode_ids`' rows their cache does not hold yet.

    Returns:
        ``(last hidden state per row, the cache, attention mask, position ids)``.
    """
    from transformers import DynamicCache

    ids, mask = enc["input_ids"], enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    start = 0 if cache is None else cache.get_seq_length()
    cache = DynamicCache(config=model.config) if cache is None else cache
    hidden = model.get_decoder()(input_ids=ids[:, start:], attention_mask=mask, position_ids=positions[:, start:],
                                 cache=cache, use_cache=True).last_hidden_state[:, -1]
    count_tokens(int(mask[:, start:].sum()))
    return hidden, cache, mask, positions


def _shrinking_generate(model, tokenizer, segments, state, end_ids, sampling, keep=None) -> list[list[int]]:
    """Decode step by step from a prefill ``state`` (:func:`prefill_ids`), removing finished rows from the batch and
    the KV cache. With ``keep=(prompt ids, keep flags, sliding-layer tokens held after the prefill, out list)`` a
    finished row flagged to keep leaves its KV cache in the out list (:func:`lms.row_prefill.take_row`) before it
    leaves the batch."""

    hidden, cache, mask, positions = state
    body = model.get_decoder()
    next_pos = positions[:, -1] + 1
    active = list(range(len(segments)))
    generated: list[list[int]] = [[] for _ in segments]
    end_set, tail = set(end_ids), _tail(segments)
    ones = torch.ones((len(segments), 1), dtype=mask.dtype, device=mask.device)
    while True:
        allowed = _step_allowed(segments, active, generated)
        tokens = next_tokens(model, hidden, allowed, [_banned(segments[row], generated[row]) for row in active],
                             sampling)
        count_tokens(len(active))
        going = []
        for i, (row, token) in enumerate(zip(active, tokens.tolist(), strict=True)):
            generated[row].append(token)
            if not row_done(tokenizer, segments[row], generated[row], end_set, tail):
                going.append(i)
        if keep is not None:
            _take_finished(model, cache, active, going, generated, keep)
        if not going:
            return generated
        if len(going) < len(active):
            index = torch.tensor(going, dtype=torch.long, device=mask.device)
            cache.batch_select_indices(index)
            mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
            active = [active[i] for i in going]
        mask = torch.cat([mask, ones[: len(active)]], dim=1)
        hidden = body(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None], cache=cache,
                      use_cache=True).last_hidden_state[:, -1]
        next_pos = next_pos + 1


def _take_finished(model, cache, active, going, generated, keep) -> None:
    """Copy the KV cache of each finished row flagged to keep (the prompt and every generated token but the last,
    which was never fed) out of the batch."""
    if len(going) == len(active):
        return
    prompts, flags, held, out = keep
    still = set(going)
    for i, row in enumerate(active):
        if i not in still and flags[row]:
            fed = generated[row][:-1]  # kept sliding layers record every fed token
            out[row] = take_row(cache, i, prompts[row] + fed, held[row] + len(fed), model.config)


MIN_SHARED_PREFIX = 16


def prefill_ids(model: Any, rows: list[list[int]], pad: int, share_prefix: bool = True, prefix_cache: Any = None,
                starts: list[Any] | None = None, keep: bool = False
                ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """Prefill token-id rows as one batch; returns what :func:`prefill` returns.

    Rows shorter than the model's sliding window go through :func:`encode_ids` (``prefix + padding + suffix``);
    longer ones, whose padding would sit inside a window, are prefilled one by one after their shared prefix
    (:func:`lms.row_prefill.prefill_rows`), and so are rows that continue an earlier cache of theirs (``starts``)
    or whose caches are kept (``keep``). ``share_prefix=False`` is plain left padding.
    """
    window = getattr(model.config, "sliding_window", None)
    by_row = share_prefix and (keep or any(start is not None for start in starts or ()))
    if not (by_row or (share_prefix and window and max(len(r) for r in rows) >= window)):
        enc, cache = encode_ids(model, rows, pad, share_prefix, prefix_cache)
        return prefill(model, enc, cache)
    shared = 0
    if len(rows) > 1:
        shared = _common_prefix(rows)
    elif prefix_cache is not None:  # one row: only a stored prefix is worth splitting off
        shared = min(prefix_cache.longest(rows[0]), len(rows[0]) - 1)
    return prefill_rows(model, rows, shared if shared >= MIN_SHARED_PREFIX else 0, prefix_cache,
                        store=len(rows) > 1, starts=starts, keep=keep)


def _common_prefix(rows: list[list[int]]) -> int:
    """Length of the token prefix all rows share, leaving every row at least one token of its own."""
    shared, shortest = 0, min(len(r) for r in rows)
    while shared < shortest - 1 and all(r[shared] == rows[0][shared] for r in rows):
        shared += 1
    return shared


def encode_ids(model: Any, rows: list[list[int]], pad: int, share_prefix: bool = True, prefix_cache: Any = None):
    """Lay token-id rows out as one batch; with ``share_prefix``, prefill their common token prefix once.

    Rows sharing a prompt prefix (DSPy's system message is the same for every call of a signature) are laid out
    as ``prefix + padding + suffix``: the prefix KV cache is computed once and repeated over the batch, and
    decoding continues it with the padded suffixes. Position ids come from the attention mask's cumulative sum,
    so a middle padding gives every real token the position it has in the unpadded prompt. With a
    :class:`~lms.prefix_cache.PrefixCache`, the longest prefix an earlier batch computed is reused and only the rest
    is prefilled; a single row reuses a stored prefix too. Rows as long as a sliding window, and
    ``share_prefix=False``, get plain left padding. Returns ``(inputs, cache or None)``.
    """
    from transformers import DynamicCache

    device = model.device
    shared = 0
    window = getattr(model.config, "sliding_window", None)
    if window and max(len(r) for r in rows) >= window:
        share_prefix = False  # keep sliding-window caches on the well-trodden left-padding path
    if share_prefix:
        shared = _common_prefix(rows)
    hit, cache = (0, None)
    if share_prefix and prefix_cache is not None and shared >= MIN_SHARED_PREFIX:
        hit, cache = prefix_cache.lookup(rows[0][:shared], MIN_SHARED_PREFIX)
    if len(rows) == 1:
        shared = hit  # one row: only a stored prefix is worth splitting off
    if shared < MIN_SHARED_PREFIX:
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
        return {"input_ids": ids, "attention_mask": mask}, None
    prefix = rows[0][:shared]
    if hit < shared:
        cache = DynamicCache(config=model.config) if cache is None else cache
        rest = torch.tensor([prefix[hit:]], device=device)
        positions = torch.arange(hit, shared, device=device)[None]
        with torch.inference_mode():
            model(input_ids=rest, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
        if prefix_cache is not None:
            prefix_cache.store(prefix, cache)
    if len(rows) > 1:
        cache.batch_repeat_interleave(len(rows))
    width = max(len(r) for r in rows) - shared
    ids = torch.tensor([prefix + [pad] * (width - len(r) + shared) + r[shared:] for r in rows], dtype=torch.long,
                       device=device)
    mask = torch.tensor([[1] * shared + [0] * (width - len(r) + shared) + [1] * (len(r) - shared) for r in rows],
                        dtype=torch.long, device=device)
    return {"input_ids": ids, "attention_mask": mask}, cache


def _decode(tokenizer: Any, ids: list[int], seg: Segment) -> str:
    if isinstance(seg.constraint, TrieConstraint):
        node = seg.constraint.trie.walk(ids)
        if node is not None and node.option is not None:
            return node.option
        logger.warning("A constrained value ran out of tokens before completing an option")
    return tokenizer.decode(ids, skip_special_tokens=True)


def _cut(text: str, stops: tuple[str, ...]) -> int:
    cut = len(text)
    for stop in stops:
        if stop and (index := text.find(stop)) >= 0:
            cut = min(cut, index)
    return cut
