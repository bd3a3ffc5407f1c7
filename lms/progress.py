"""Progress a person can trust: a phase bar that moves with every LM call and every decoded token.

A long phase (candidates, optimization, evaluation) finishes items slowly -- a batch of 16 predictions can take a
minute on a laptop CPU -- so a bar over items alone looks stuck. :class:`LiveProgress` is a tqdm bar over the phase's
items (rate and ETA as tqdm computes them) whose postfix shows the LM calls finished and the tokens the local engine
has processed so far, refreshed every ``interval`` seconds from a monitor thread while the phase runs. Where the
output is not a terminal (a log file, ``| tee``) tqdm draws nothing, so the same counts are logged as one line every
``log_interval`` seconds instead.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

_TOKENS = [0]
_TOKENS_LOCK = threading.Lock()


def count_tokens(n: int) -> None:
    """Add ``n`` tokens (prefilled or generated) to the process-wide counter (called by the local engine)."""
    with _TOKENS_LOCK:
        _TOKENS[0] += n


def tokens_processed() -> int:
    """Tokens the local engine has processed in this process so far."""
    return _TOKENS[0]


class _CallCounter:
    """A DSPy callback counting finished LM calls (local and remote) and failed ones."""

    def __init__(self):
        self.calls = self.errors = 0
        self._lock = threading.Lock()

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        with self._lock:
            self.calls += 1
            self.errors += exception is not None

    def __getattr__(self, name: str):  # the other BaseCallback hooks: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


class LiveProgress:
    """A tqdm bar over a phase's items with live LM-call and token counts (use as a context manager).

    Args:
        total: Items in the phase (None: unknown, the bar counts without an ETA).
        desc: Phase name shown before the bar.
        interval: Seconds between refreshes of the live counts.
        disable: ``True``: show nothing (the counts are still kept); ``None``: a bar on a terminal, log lines
            elsewhere; ``False``: always a bar.
        log_interval: Seconds between log lines where no bar is drawn (``disable=None`` off a terminal).
    """

    def __init__(self, total: int | None, desc: str, interval: float = 10.0, disable: bool | None = False,
                 log_interval: float = 30.0):
        self.bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, disable=disable, leave=True)
        self.desc, self.interval, self.counter = desc, interval, _CallCounter()
        self.total, self.n = total, 0
        self.log_lines = disable is not True and bool(self.bar.disable)
        self.log_interval = log_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_tokens, self._start_time = tokens_processed(), time.monotonic()

    def update(self, n: int = 1) -> None:
        """Count ``n`` finished items."""
        self.n += n
        self.bar.update(n)

    def status(self) -> str:
        """One line: items done (of total), rate and ETA, and the live counts."""
        elapsed = max(time.monotonic() - self._start_time, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", ETA {(self.total - self.n) / rate / 60:.1f} min"
        counts = ", ".join(f"{k} {v}" for k, v in self.postfix().items())
        return f"{self.desc}: {done} items in {elapsed / 60:.1f} min ({rate:.3f}/s{eta}); {counts}"

    def postfix(self) -> dict[str, Any]:
        """The live counts: LM calls, failed calls, local tokens and tokens/s since the phase began."""
        tokens = tokens_processed() - self._start_tokens
        elapsed = max(time.monotonic() - self._start_time, 1e-9)
        out = {"lm_calls": self.counter.calls, "tok": tokens, "tok/s": round(tokens / elapsed, 1)}
        if self.counter.errors:
            out["lm_errors"] = self.counter.errors
        return out

    def _watch(self) -> None:
        while not self._stop.wait(self.log_interval if self.log_lines else self.interval):
            if self.log_lines:
                logger.info("%s", self.status())
            else:
                self.bar.set_postfix(self.postfix(), refresh=True)

    def __enter__(self) -> LiveProgress:
        import dspy

        dspy.settings.callbacks.append(self.counter)
        self._thread = threading.Thread(target=self._watch, name=f"progress-{self.desc}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import dspy

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
        if self.counter in dspy.settings.callbacks:
            dspy.settings.callbacks.remove(self.counter)
        self.bar.set_postfix(self.postfix(), refresh=False)
        self.bar.close()
        if self.log_lines:
            logger.info("%s (done)", self.status())
