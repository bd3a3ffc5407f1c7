"""LM usage per role: requests, retries, errors, HTTP status classes, cache hits and tokens.

A run opens one tracker and names the role of each call site::

    from lms import usage

    with usage.tracking() as tracker:
        with usage.role("teacher"):
            program.reasoner(history=...)
        with usage.role("judge"):
            judge(...)
    tracker.as_dict()  # {"teacher": {"requests": 1, "retries": 0, ...}, "judge": {...}}

The counts come from DSPy's own execution path (:mod:`dspy.clients.execution`, wrapped once per process):
every attempt sent to an engine is a *request*, an attempt after a failed one (DSPy's retries with backoff)
is a *retry*, a call answered from DSPy's cache is a *cache hit*, a call that still failed after its
retries is an *error*, classed as ``429``, ``5xx``, ``timeout``, ``connection`` or ``other``. Callers add
their own re-asks with :func:`record_retry` and unusable replies with :func:`record_error`.

An unparseable reply (DSPy's ``AdapterParseError``) is counted under ``parse_errors`` and **removed from
DSPy's cache**, so neither a retry nor a later re-run is handed the same bad reply; a caller that rejects a
parsed reply (an invalid judge score, an empty reason) calls :func:`discard_last_reply` for the same effect.
The tracker and the role live in DSPy's settings, so they follow calls into ``dspy.Parallel`` /
``ParallelExecutor`` worker threads and ``dspy.context`` blocks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

logger = logging.getLogger(__name__)

TRACKER_KEY = "nextocc_usage_tracker"
ROLE_KEY = "nextocc_lm_role"
STATUS_CLASSES = ("429", "5xx", "timeout", "connection", "other")
COUNTERS = ("requests", "retries", "errors", "cache_hits", "parse_errors")

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def status_class(exc: BaseException) -> str:
    """The failure class of an LM exception: ``429``, ``5xx``, ``timeout``, ``connection`` or ``other``.

    Works on DSPy's ``LM*Error`` classes and on the engine's own (lm15 ``RateLimitError``, ``ServerError``,
    ``TransportError``) as raised inside DSPy's retry loop, by HTTP status, class name and message.
    """
    status = getattr(exc, "status", None)
    name = type(exc).__name__
    text = str(exc).lower()
    if status == 429 or "RateLimit" in name:
        return "429"
    if (isinstance(status, int) and status >= 500) or "ServerError" in name:
        return "5xx"
    if isinstance(exc, TimeoutError) or "Timeout" in name or "timed out" in text or "timeout" in text:
        return "timeout"
    if isinstance(exc, ConnectionError) or "Transport" in name or "connect" in text:
        return "connection"
    return "other"


def _empty() -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    out["status"] = dict.fromkeys(STATUS_CLASSES, 0)
    out["input_tokens"] = None
    out["output_tokens"] = None
    out["last_error"] = None
    return out


class UsageTracker:
    """Thread-safe per-role counters (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roles: dict[str, dict[str, Any]] = {}
        self._lm_roles: dict[int, tuple[str, bool]] = {}
        self._keep: list[Any] = []  # registered LMs stay alive, so their ids are not reused

    def register(self, lm: Any, role: str, *, override: bool = False) -> None:
        """Calls of ``lm`` are counted under ``role``: outside any :func:`role` block, or always with ``override``
        (an optimizer's reflection LM called inside the ``optimizer`` block)."""
        if lm is not None:
            with self._lock:
                if override or id(lm) not in self._lm_roles:
                    self._lm_roles[id(lm)] = (role, override)
                    self._keep.append(lm)

    def role_of(self, lm: Any) -> str:
        """The role a call of ``lm`` is counted under (also remembered for this thread's parse callback)."""
        with self._lock:
            registered, override = self._lm_roles.get(id(lm), (None, False))
        name = registered if override else (_setting(ROLE_KEY) or registered or "other")
        _local.last_role = name
        return name

    def _bump(self, role: str, key: str, n: int = 1) -> None:
        with self._lock:
            entry = self._roles.setdefault(role, _empty())
            entry[key] += n

    def request(self, role: str) -> None:
        self._bump(role, "requests")

    def retry(self, role: str) -> None:
        self._bump(role, "retries")

    def cache_hit(self, role: str) -> None:
        self._bump(role, "cache_hits")

    def error(self, role: str, exc: BaseException | str, *, parse: bool = False) -> None:
        with self._lock:
            entry = self._roles.setdefault(role, _empty())
            entry["errors"] += 1
            if parse:
                entry["parse_errors"] += 1
            elif isinstance(exc, BaseException):
                entry["status"][status_class(exc)] += 1
            entry["last_error"] = _one_line(exc)

    def failed_attempt(self, role: str, exc: BaseException) -> None:
        """A failed attempt that DSPy will retry: its HTTP class is counted, not (yet) an error."""
        with self._lock:
            self._roles.setdefault(role, _empty())["status"][status_class(exc)] += 1

    def tokens(self, role: str, usage: dict | None) -> None:
        if not usage:
            return
        with self._lock:
            entry = self._roles.setdefault(role, _empty())
            for key, name in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
                value = usage.get(key)
                if isinstance(value, int):
                    entry[name] = (entry[name] or 0) + value

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """One entry per role: ``requests``, ``retries``, ``errors``, ``cache_hits``, ``parse_errors``,
        ``status`` (429 / 5xx / timeout / connection / other), ``input_tokens``, ``output_tokens``, ``last_error``."""
        with self._lock:
            return {role: {**v, "status": dict(v["status"])} for role, v in sorted(self._roles.items())}

    def totals(self) -> dict[str, int]:
        """The counters summed over roles."""
        roles = self.as_dict().values()
        return {key: sum(r[key] for r in roles) for key in COUNTERS}


def _one_line(exc: BaseException | str, limit: int = 300) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _setting(key: str) -> Any:
    try:
        return dspy.settings.get(key)
    except Exception:  # noqa: BLE001 - an unknown setting reads as absent
        return None


def current() -> UsageTracker | None:
    """The tracker of the enclosing :func:`tracking` block (in this thread or the one that started it)."""
    return _setting(TRACKER_KEY)


def usage_by_role(tracker: UsageTracker | None = None) -> dict[str, dict[str, Any]]:
    """The per-role usage dict of ``tracker`` (default: the current one); ``{}`` outside :func:`tracking`."""
    tracker = tracker or current()
    return tracker.as_dict() if tracker is not None else {}


@contextlib.contextmanager
def role(name: str) -> Iterator[None]:
    """Counts the LM calls made inside the block under ``name``."""
    with dspy.context(**{ROLE_KEY: name}):
        yield


def record_retry(name: str | None = None) -> None:
    """Counts a caller's own re-ask (under ``name`` or the current role)."""
    tracker = current()
    if tracker is not None:
        tracker.retry(name or _setting(ROLE_KEY) or "other")


def record_error(exc: BaseException | str, name: str | None = None, *, parse: bool = False) -> None:
    """Counts an LM reply the caller could not use (under ``name``, else the role of this thread's last LM call)."""
    tracker = current()
    if tracker is not None:
        tracker.error(name or getattr(_local, "last_role", None) or _setting(ROLE_KEY) or "other", exc, parse=parse)


def discard_last_reply() -> bool:
    """Removes the reply of this thread's last cached LM call from DSPy's cache (memory and disk).

    Returns:
        True when an entry was removed.
    """
    key = getattr(_local, "cache_key", None)
    _local.cache_key = None
    if key is None:
        return False
    cache = dspy.cache
    removed = False
    with contextlib.suppress(Exception):
        removed = cache.memory_cache.pop(key, None) is not None
    disk = getattr(cache, "disk_cache", None)
    with contextlib.suppress(Exception):
        if hasattr(disk, "delete"):
            removed = bool(disk.delete(key)) or removed
        elif isinstance(disk, dict):
            removed = disk.pop(key, None) is not None or removed
    if removed:
        logger.debug("discarded a rejected LM reply from the DSPy cache")
    return removed


class _ParseCallback(BaseCallback):
    """Counts adapter parse failures and drops the unparseable reply from the cache."""

    def on_adapter_parse_end(self, call_id, outputs, exception=None):
        if exception is None:
            return
        discard_last_reply()
        record_error(exception, parse=True)


_PARSE_CALLBACK = _ParseCallback()


@contextlib.contextmanager
def tracking(tracker: UsageTracker | None = None) -> Iterator[UsageTracker]:
    """Counts every LM call made inside the block (also in worker threads it starts) into ``tracker``."""
    install()
    tracker = tracker or UsageTracker()
    callbacks = [cb for cb in (_setting("callbacks") or []) if cb is not _PARSE_CALLBACK]
    with dspy.context(**{TRACKER_KEY: tracker, "callbacks": [*callbacks, _PARSE_CALLBACK]}):
        yield tracker


def install() -> None:
    """Wraps DSPy's execution path once per process so tracked calls are counted (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from dspy.clients import execution as ex

        orig_cached, orig_store = ex._cached, ex._store
        orig_attempt, orig_aattempt = ex._attempt, ex._aattempt
        orig_execute, orig_aexecute = ex.execute, ex.aexecute
        ignored = ex.IGNORED_CACHE_KEYS

        def remember_key(lm, call, asynchronous):
            _local.cache_key = None
            if call.cache:
                with contextlib.suppress(Exception):
                    _local.cache_key = dspy.cache.cache_key(call.key(lm, asynchronous), ignored)

        def cached(lm, call, asynchronous):
            result = orig_cached(lm, call, asynchronous)
            tracker = current()
            if tracker is not None:
                remember_key(lm, call, asynchronous)
                if result is not None:
                    tracker.cache_hit(tracker.role_of(lm))
            return result

        def store(lm, call, result, asynchronous):
            orig_store(lm, call, result, asynchronous)
            if current() is not None:
                remember_key(lm, call, asynchronous)

        def before(lm):
            tracker = current()
            if tracker is None:
                return None, None
            name = tracker.role_of(lm)
            _local.attempts = getattr(_local, "attempts", 0) + 1
            tracker.request(name)
            if _local.attempts > 1:
                tracker.retry(name)
            return tracker, name

        def after(tracker, name, results, exc):
            if tracker is None:
                return
            if exc is not None:
                tracker.failed_attempt(name, exc)
            elif results:
                tracker.tokens(name, getattr(results[-1], "usage", None))

        def attempt(lm, call, backend, request, provider, state, results):
            tracker, name = before(lm)
            try:
                out = orig_attempt(lm, call, backend, request, provider, state, results)
            except BaseException as exc:
                after(tracker, name, results, exc)
                raise
            after(tracker, name, results, None)
            return out

        async def aattempt(lm, call, backend, request, provider, state, results):
            tracker, name = before(lm)
            try:
                out = await orig_aattempt(lm, call, backend, request, provider, state, results)
            except BaseException as exc:
                after(tracker, name, results, exc)
                raise
            after(tracker, name, results, None)
            return out

        def failed(lm, exc):
            tracker = current()
            if tracker is not None:
                name = tracker.role_of(lm)
                with tracker._lock:
                    entry = tracker._roles.setdefault(name, _empty())
                    entry["errors"] += 1
                    entry["last_error"] = _one_line(exc)

        def execute(lm, call):
            saved = getattr(_local, "attempts", 0)
            _local.attempts = 0
            try:
                return orig_execute(lm, call)
            except Exception as exc:
                failed(lm, exc)
                raise
            finally:
                _local.attempts = saved

        async def aexecute(lm, call):
            saved = getattr(_local, "attempts", 0)
            _local.attempts = 0
            try:
                return await orig_aexecute(lm, call)
            except Exception as exc:
                failed(lm, exc)
                raise
            finally:
                _local.attempts = saved

        ex._cached, ex._store, ex._attempt, ex._aattempt = cached, store, attempt, aattempt
        ex.execute, ex.aexecute = execute, aexecute
        _installed = True


def format_table(usage: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of :func:`usage_by_role` (empty string when there is no usage)."""
    if not usage:
        return ""
    head = ("| role | requests | retries | errors | parse errors | cache hits | 429 | 5xx | timeout | connection "
            "| other | input tokens | output tokens |")
    rows = [head, "|" + "---|" * 13]
    for name, u in usage.items():
        s = u["status"]
        cells = [u["requests"], u["retries"], u["errors"], u["parse_errors"], u["cache_hits"], s["429"], s["5xx"],
                 s["timeout"], s["connection"], s["other"], u["input_tokens"], u["output_tokens"]]
        rows.append(f"| {name} | " + " | ".join("–" if c is None else str(c) for c in cells) + " |")
    return "\n".join(rows)
