"""``LocalEngine``: an in-process transformers engine for ``dspy.LM`` (DSPy 3.4 engine contract).

Usage::

    lm = dspy.LM("local/gemma-3-270m@<fingerprint>", engine=LocalEngine("local:gemma-3-270m"))

(``lms.load`` builds exactly this.) The engine implements ``complete(Request) -> Response``, ``stream`` and
``close``, plus ``dump_state``/``load_state`` so a program saved with this LM stores the engine's class path and
settings (model spec, constrained fields) as JSON -- never weights, never pickle. Load with
``allow_unsafe_lm_state=True`` as DSPy requires for custom engine classes.

Routing: the engine serves ``request.model`` (``local/<spec>[@<fingerprint>]``) from a small process-wide registry
of loaded models, so ``lm.copy(model="local//other/folder")`` runs other weights.

Batching: ``complete`` puts the request on a queue; one worker thread collects requests for ``batch_window_ms``
(or until ``max_batch_size``) and runs each group sharing a model and sampling settings as one batched
decoding pass per field (``lms.generation``: shared-prefix KV reuse, an LRU of recent prompt prefixes, finished rows
leave the batch). Greedy batched output equals one-by-one output in float32 (tested); in bfloat16 (chosen only where
the hardware computes it natively, see :mod:`lms.hardware`) batching changes the floating-point order of operations
and can flip near-ties, so a few greedy outputs may differ.

Structured output: a request formatted by DSPy's ChatAdapter is generated field by field (``lms.structured``): the
engine writes each ``[[ ## field ## ]]`` header, the model writes the value (stopping at a blank line, the next
header, a stop string, a repeated line or the token budget; it may not start with a ``{placeholder}`` or header
copied from the format description), and ``[[ ## completed ## ]]`` is appended, so the ChatAdapter always parses.
int/float fields are constrained to numbers (an int whose description states a range such as "from 1 to 5" to that
range); Literal/bool/enum fields and ``constrained_fields`` to their options (``lms.constrained``). A greedy
closed-option field answers the top option of the engine's ranking (``choice_decoding='ranked'``, a beam over the
option trie batched over the batch's prompts; the ranking is kept, so :func:`lms.rank_options` on the same prompt is
free) or is decoded token by token (``'greedy'``).

Caching: DSPy's own response cache wraps custom engines too. Its key holds ``lm.model`` (which ``lms.load`` sets to
``local/<spec>@<fingerprint>``, the fingerprint hashing config, weight files and adapter), the messages and the
LM kwargs (temperature, max_tokens, rollout_id, ...). Pass ``cache=False`` to ``dspy.LM``/``lms.load`` to disable
it. The engine itself caches nothing but tries.

Sampling: with temperature > 0 each batch is seeded from ``seed`` plus a counter (or ``Config.seed``). DSPy does not
pass ``rollout_id`` to engines, but a distinct rollout_id misses DSPy's cache, so the engine samples again with a
new seed: distinct rollout ids give distinct candidates; the same rollout id hits the cache.
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from dspy.lm15 import Message, Request, Response, TextPart, Usage, response_to_events

from lms import structured
from lms.chat_template import end_of_turn_ids, render_prompt, request_messages
from lms.constrained import NonEmptyText, NumberConstraint, OptionTrie, TrieConstraint, number_vocab
from lms.generation import Segment, generate_segments
from lms.model_store import LOCAL_PREFIX, LoadedModel, load_local_model, parse_local_spec
from lms.option_ranking import OptionRanking, _terminators
from lms.prefix_cache import PrefixCache
from lms.quant_head import resolve_head

logger = logging.getLogger(__name__)

_FINGERPRINT_RE = re.compile(r"^(.*)@([0-9a-f]{12})(?:\.[0-9a-f]{8})?$")

# Bump when a change to decoding (stops, caps, constraints) changes what the engine returns for the same request:
# it is part of the model name, hence of DSPy's cache key, so cached answers of an older engine are not reused.
ENGINE_REVISION = 3


def model_name_for(spec: str, fingerprint: str | None = None, revision: str | None = None) -> str:
    """DSPy model name for a local spec: ``local/<spec body>[@<fingerprint>[.<engine revision>]]``."""
    body = parse_local_spec(spec).spec[len(LOCAL_PREFIX):]
    name = f"local/{body}" + (f"@{fingerprint}" if fingerprint else "")
    return name + (f".{revision}" if fingerprint and revision else "")


def spec_for(model_name: str) -> tuple[str, str | None]:
    """Inverse of :func:`model_name_for`: ``(local spec, fingerprint or None)``."""
    if model_name.startswith("local/"):
        body = model_name[len("local/"):]
    elif model_name.startswith(LOCAL_PREFIX):
        body = model_name[len(LOCAL_PREFIX):]
    else:
        raise ValueError(f"LocalEngine serves 'local/<model>' names, got {model_name!r}")
    match = _FINGERPRINT_RE.match(body)
    return (LOCAL_PREFIX + (match.group(1) if match else body)), (match.group(2) if match else None)


@dataclass
class _Job:
    model: str
    messages: list[dict[str, str]]
    fields: list[structured.FieldSpec] | None
    max_tokens: int
    stops: tuple[str, ...]
    sampling: tuple
    seed: int | None = None
    values: list = field(default_factory=list)
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    """A function the batching worker runs by itself (option ranking), so every large tensor allocation happens on
    one thread: glibc gives each allocating thread its own malloc arena, and ranking from 16 DSPy threads grew the
    process to >20 GB of fragmented arenas."""

    fn: Any
    future: Future = field(default_factory=Future)


class LocalEngine(OptionRanking):
    """In-process engine for ``dspy.LM`` running transformers models, with batching and structured output.

    Args:
        model: Default local spec (``local:gemma-3-270m``, ``local:/path``, ``local:/base+/adapter``); recorded in
            the saved state. Requests are routed on ``request.model``.
        constrained_fields: Field name -> allowed strings; ChatAdapter fields of that name decode to one option.
        dtype: ``'auto'``/None (default: bf16 where the hardware computes it natively and faster, else fp32; see
            :func:`lms.hardware.resolve_dtype`), ``'bfloat16'``, ``'float32'`` or ``'float16'``.
        batch_window_ms: How long the worker collects concurrent requests into one batch.
        max_batch_size: Most requests per batch.
        max_field_tokens: Token cap per free-text field (and per plain completion); a reason is a few sentences.
        default_max_tokens: Budget when the request sets no ``max_tokens``.
        seed: Base seed of sampled generation.
        structured_output: Generate ChatAdapter requests field by field (recommended for small models).
        share_prefix: Prefill the token prefix shared by a batch's prompts once (DSPy's system message), keep
            recent prefixes for later batches, and continue a structured reply's next field from its row's own KV
            cache (only the field's header and new tokens are computed).
        device: ``'auto'``/None (default: a GPU when torch sees one), ``'cpu'`` or ``'cuda'``.
        choice_decoding: ``'ranked'`` (default): a greedy closed-option field (the occupation) answers the top
            option of the ranking, which is kept so :meth:`rank` on the same prompt costs nothing; ``'greedy'``:
            token-by-token constrained greedy decoding.
        ranking: ``'beam'`` (default, fast) or ``'exact'`` option ranking (best-first search over the trie with tree
            attention, :func:`lms.ranking.rank_tree`; exact, several times slower than the beam).
        rank_width: Beams per prompt in beam ranking (raised to the ranking's depth when smaller).
        rank_first_width: Beams per prompt after the first token (a wider first step; 0: ``rank_width``).
        rank_k: Options ranked per prompt when the engine answers a closed-option field; a later :meth:`rank` for
            more ranks again, so set it to the program's ``k``. At a fixed width the beam's top options do not
            depend on it (a deeper ranking only adds options after them), its cost does.
        prefix_cache_tokens: Prompt-prefix tokens kept across batches (0 disables the prefix LRU).
        head: Greedy decoding's LM head: ``'auto'``/None (an int8 copy proposes each step's candidates where a probe
            measures it faster, see :mod:`lms.quant_head`), ``'int8'`` or ``'exact'``; ``$NEXTOCC_HEAD``.
    """

    def __init__(self, model: str = "local:gemma-3-270m", *, constrained_fields: dict[str, list[str]] | None = None,
                 dtype: str | None = None, batch_window_ms: float = 30.0, max_batch_size: int = 16,
                 max_field_tokens: int = 128, default_max_tokens: int = 512, seed: int = 0,
                 structured_output: bool = True, share_prefix: bool = True, device: str | None = None,
                 choice_decoding: str = "ranked", ranking: str = "beam", rank_width: int = 10, rank_first_width: int = 0,
                 rank_k: int = 5, prefix_cache_tokens: int = 8192, head: str | None = None):
        parse_local_spec(model)
        resolve_head(head)
        if choice_decoding not in ("ranked", "greedy"):
            raise ValueError(f"choice_decoding must be 'ranked' or 'greedy', got {choice_decoding!r}")
        if ranking not in ("beam", "exact"):
            raise ValueError(f"ranking must be 'beam' or 'exact', got {ranking!r}")
        if rank_width < 1 or rank_first_width < 0 or rank_k < 1 or prefix_cache_tokens < 0:
            raise ValueError("rank_width and rank_k must be >= 1, rank_first_width and prefix_cache_tokens >= 0")
        if constrained_fields is not None and not isinstance(constrained_fields, dict):
            raise ValueError("constrained_fields must be a dict of field name -> list of allowed strings")
        for name, options in (constrained_fields or {}).items():
            if not isinstance(options, (list, tuple)) or not options or not all(isinstance(o, str) for o in options):
                raise ValueError(f"constrained_fields[{name!r}] must be a non-empty list of strings")
        if max_batch_size < 1 or batch_window_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_window_ms >= 0")
        self.model = model
        self.constrained_fields = {k: list(v) for k, v in (constrained_fields or {}).items()}
        self.dtype, self.batch_window_ms, self.max_batch_size = dtype, batch_window_ms, max_batch_size
        self.max_field_tokens, self.default_max_tokens, self.seed = max_field_tokens, default_max_tokens, seed
        self.structured_output, self.share_prefix = structured_output, share_prefix
        self.device, self.choice_decoding, self.ranking = device, choice_decoding, ranking
        self.rank_width, self.rank_first_width = rank_width, rank_first_width
        self.rank_k, self.prefix_cache_tokens, self.head = rank_k, prefix_cache_tokens, head
        self._prefix_caches: dict[tuple, PrefixCache] = {}
        self._ranked: OrderedDict[tuple, list[tuple[str, float]]] = OrderedDict()
        self._ranked_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._seeds = itertools.count(seed)
        self._tries: dict[tuple, OptionTrie] = {}
        self.stats = {"batches": 0, "requests": 0, "generate_calls": 0, "rank_calls": 0, "rank_memo_hits": 0}

    # ----- DSPy engine contract -------------------------------------------------------------------------------
    def complete(self, request: Request) -> Response:
        """Generate one response for a canonical DSPy request (batched with concurrent requests)."""
        from dspy.clients.engines.base import validate_request

        validate_request(request)
        messages = request_messages(request)
        job = self._job(request.model, messages, request.config)
        text, usage, finish = self._submit(job)
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(text)]),
                        finish_reason=finish, usage=usage)

    def stream(self, request: Request):
        """Stream events of :meth:`complete` (generated in one piece)."""
        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Stop the batching worker (weights stay in the process-wide registry)."""
        with self._start_lock:
            if self._worker is not None:
                self._queue.put(None)
                self._worker.join(timeout=30)
                self._worker = None

    def revision(self) -> str:
        """8-hex hash of :data:`ENGINE_REVISION` and the settings that change outputs (see :func:`model_name_for`)."""
        import hashlib
        import json

        settings = {k: v for k, v in self.dump_state().items()
                    if k not in ("batch_window_ms", "max_batch_size", "device", "prefix_cache_tokens")}
        settings["dtype"], settings["head"] = self.loaded().dtype, self.loaded().head  # resolved: outputs may differ
        blob = json.dumps([ENGINE_REVISION, settings], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def dump_state(self) -> dict[str, Any]:
        """JSON-serializable settings (no weights, no secrets) for ``program.save``."""
        return {"model": self.model, "constrained_fields": self.constrained_fields, "dtype": self.dtype,
                "batch_window_ms": self.batch_window_ms, "max_batch_size": self.max_batch_size,
                "max_field_tokens": self.max_field_tokens, "default_max_tokens": self.default_max_tokens,
                "seed": self.seed, "structured_output": self.structured_output, "share_prefix": self.share_prefix,
                "device": self.device, "choice_decoding": self.choice_decoding, "ranking": self.ranking,
                "rank_width": self.rank_width, "rank_first_width": self.rank_first_width, "rank_k": self.rank_k,
                "prefix_cache_tokens": self.prefix_cache_tokens, "head": self.head}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LocalEngine:
        """Rebuild an engine from :meth:`dump_state` output; weights load lazily on the first call."""
        return cls(**state)

    # ----- models -----------------------------------------------------------------------------------------------
    def loaded(self, model_name: str | None = None) -> LoadedModel:
        """The loaded model serving ``model_name`` (a DSPy ``local/...`` name or a ``local:`` spec)."""
        spec, fingerprint = spec_for(model_name) if model_name else (self.model, None)
        loaded = load_local_model(spec, dtype=self.dtype, device=self.device, head=self.head)
        if fingerprint and fingerprint != loaded.fingerprint:
            logger.warning("Model %s has fingerprint %s, the LM name says %s: the weights changed since",
                           spec, loaded.fingerprint, fingerprint)
        return loaded

    # ----- jobs and batching --------------------------------------------------------------------------------------
    def _job(self, model: str, messages: list[dict[str, str]], config: Any, fields: Any = None) -> _Job:
        if fields is None and self.structured_output:
            system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
            last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
            fields = structured.detect_output_fields(system, last_user, self.constrained_fields)
        temperature = getattr(config, "temperature", None) or 0.0
        sampling = (temperature, getattr(config, "top_p", None), getattr(config, "top_k", None)) if temperature else ()
        return _Job(model=model, messages=messages, fields=fields,
                    max_tokens=getattr(config, "max_tokens", None) or self.default_max_tokens,
                    stops=tuple(getattr(config, "stop", ()) or ()), sampling=sampling,
                    seed=getattr(config, "seed", None))

    def _submit(self, job: _Job | _Call):
        self._ensure_worker()
        self._queue.put(job)
        return job.future.result()

    def run_on_worker(self, fn: Any) -> Any:
        """Run ``fn()`` on the batching worker thread, between batches, and return its result (or raise its error).
        Called from the worker itself, ``fn`` runs directly (queueing it there would wait forever)."""
        if threading.current_thread() is self._worker:
            return fn()
        return self._submit(_Call(fn))

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="LocalEngine-batcher", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, deadline = [first], time.monotonic() + self.batch_window_ms / 1000
            stop = False
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            groups: dict[tuple, list[_Job]] = {}
            for job in batch:
                if isinstance(job, _Call):
                    try:
                        job.future.set_result(job.fn())
                    except Exception as exc:  # noqa: BLE001 - handed to the caller
                        job.future.set_exception(exc)
                    continue
                groups.setdefault((job.model, job.sampling, job.seed), []).append(job)
            for jobs in groups.values():
                try:
                    self._run_group(jobs)
                except Exception as exc:  # noqa: BLE001 - handed to the callers
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
            if stop:
                return

    def _run_group(self, jobs: list[_Job]) -> None:
        loaded = self.loaded(jobs[0].model)
        tok, end_ids = loaded.tokenizer, end_of_turn_ids(loaded.tokenizer)
        self.stats["batches"] += 1
        self.stats["requests"] += len(jobs)
        sampling = dict(zip(("temperature", "top_p", "top_k"), jobs[0].sampling, strict=False)) or None
        state = [{"values": [], "used": 0, "prompt_tokens": None, "truncated": False} for _ in jobs]
        step = 0
        while True:
            rows, segments, ranked = [], [], []
            for index, job in enumerate(jobs):
                segment = self._segment(loaded, job, state[index], step, end_ids)
                if segment is None:
                    continue
                if sampling is None and self.choice_decoding == "ranked" and isinstance(segment.constraint,
                                                                                        TrieConstraint):
                    ranked.append((index, segment))
                else:
                    rows.append(index)
                    segments.append(segment)
            if not segments and not ranked:
                break
            results = {}
            if segments:
                seed = jobs[0].seed if jobs[0].seed is not None else next(self._seeds)
                # a field with another after it keeps its rows' KV caches: the next one computes only its header
                keep = [jobs[i].fields is not None and step + 1 < len(jobs[i].fields) for i in rows]
                starts = [state[i].pop("kv", None) for i in rows]
                with loaded.lock:
                    out = generate_segments(loaded.model, tok, segments, end_ids, sampling, seed, self.share_prefix,
                                            prefix_cache=self.prefix_cache(loaded), starts=starts, keep=keep)
                self.stats["generate_calls"] += 1
                results.update(zip(rows, out, strict=True))
            if ranked:
                results.update(self._ranked_results(loaded, ranked, [state[i].pop("kv", None) for i, _ in ranked]))
            for index, result in results.items():
                st, job = state[index], jobs[index]
                if result.kv is not None:
                    st["kv"], result.kv = result.kv, None
                st["used"] += result.output_tokens
                # "length" only when the request's own max_tokens ran out (not the per-field cap).
                st["truncated"] |= result.truncated and st["used"] >= job.max_tokens
                if st["prompt_tokens"] is None:
                    st["prompt_tokens"] = result.prompt_tokens
                if job.fields is None:
                    st["text"] = result.text
                else:
                    st["values"].append((job.fields[step].name, result.text))
            step += 1
        for job, st in zip(jobs, state, strict=True):
            text = st["text"] if job.fields is None else structured.format_fields(st["values"])
            usage = Usage(input_tokens=st["prompt_tokens"] or 0, output_tokens=st["used"])
            job.values = st["values"]
            job.future.set_result((text, usage, "length" if st["truncated"] else "stop"))

    def prefix_cache(self, loaded: LoadedModel) -> PrefixCache | None:
        """The prompt-prefix LRU of one loaded model (None when disabled)."""
        if not self.share_prefix or not self.prefix_cache_tokens:
            return None
        key = (loaded.spec.spec, loaded.fingerprint, loaded.dtype, loaded.device)
        if key not in self._prefix_caches:
            self._prefix_caches[key] = PrefixCache(max_tokens=self.prefix_cache_tokens)
        return self._prefix_caches[key]

    def _segment(self, loaded: LoadedModel, job: _Job, st: dict, step: int, end_ids: list[int]) -> Segment | None:
        tok = loaded.tokenizer
        remaining = job.max_tokens - st["used"]
        if job.fields is None:
            if step > 0:
                return None
            stops = job.stops
            return Segment(prompt=render_prompt(tok, job.messages), stops=stops,
                           max_new_tokens=max(1, min(self.max_field_tokens, remaining)))
        if step >= len(job.fields):
            return None
        spec = job.fields[step]
        prompt = render_prompt(tok, job.messages, structured.prefix_before(st["values"], spec))
        terminators = tuple(_terminators(tok))
        if spec.kind == "choice":
            trie = self.trie(loaded, spec.options)
            depth = max(len(ids) for ids in trie.token_ids.values()) + 1
            return Segment(prompt=prompt, max_new_tokens=depth, constraint=TrieConstraint(trie),
                           terminators=tuple(trie.terminator_ids))
        if spec.kind in ("int", "float"):
            constraint = NumberConstraint(number_vocab(tok), list(terminators), is_float=spec.kind == "float")
            return Segment(prompt=prompt, max_new_tokens=constraint.max_tokens + 1, constraint=constraint,
                           terminators=terminators)
        budget = max(1, min(self.max_field_tokens, remaining))
        return Segment(prompt=prompt, max_new_tokens=budget, stops=structured.FIELD_STOPS + job.stops,
                       stop_repeated_lines=True, constraint=NonEmptyText(sorted(set(end_ids) | set(terminators) | _placeholder_starts(tok))))

    # ----- ranking ------------------------------------------------------------------------------------------------
_PLACEHOLDER_CACHE: dict[int, set[int]] = {}


def _placeholder_starts(tokenizer: Any) -> set[int]:
    """Tokens starting with ``{``, ``[`` or ``#``: small models copy the ``{field}`` placeholders and ``[[ ## f ## ]]``
    headers of DSPy's format description (or misspelt ``[ ## f ## ]]`` copies) into values, so a free-text value may
    not start with them."""
    key = id(tokenizer)
    if key not in _PLACEHOLDER_CACHE:
        _PLACEHOLDER_CACHE[key] = {index for token, index in tokenizer.get_vocab().items()
                                   if token.lstrip("\u2581\u0120").startswith(("{", "[", "#"))}
    return _PLACEHOLDER_CACHE[key]


class AsyncLocalEngine:
    """Async counterpart for ``dspy.LM(..., async_engine=...)`` (``acall``/``aforward``): runs the sync engine's
    ``complete`` in a thread, so async callers share its batching."""

    def __init__(self, sync: LocalEngine):
        self.sync = sync

    async def complete(self, request: Request) -> Response:
        import asyncio

        return await asyncio.to_thread(self.sync.complete, request)

    async def stream(self, request: Request):
        for event in response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        return None

    def revision(self) -> str:
        return self.sync.revision()

    def dump_state(self) -> dict[str, Any]:
        return self.sync.dump_state()

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> AsyncLocalEngine:
        return cls(LocalEngine.load_state(state))
