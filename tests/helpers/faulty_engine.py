"""A fault-injecting engine for dspy.LM: fails, times out or returns garbage on a set fraction of calls.

Wraps any DSPy 3.4 engine (``complete(Request) -> Response``), e.g. the DummyLM's engine or the local
engine, so the whole pipeline can be tested against an unreliable LM::

    lm = faulty_lm(DummyLM(answers), fail=0.05, timeout=0.03, garbage=0.02, seed=0)

Faults are drawn from a seeded RNG per call (thread-safe) and counted in ``engine.counts``.
"""

from __future__ import annotations

import random
import threading
import time

import dspy
from dspy.clients.engines.dummy_engine import DummyEngine
from dspy.lm15 import Message, Response, TextPart, Usage


class InjectedFault(ConnectionError):
    """An injected LM failure."""


class FaultInjectingEngine:
    """Wraps an engine; each call independently fails, times out, returns garbage, or passes through."""

    def __init__(self, inner, *, fail: float = 0.0, timeout: float = 0.0, garbage: float = 0.0,
                 seed: int = 0, delay: float = 0.01):
        if any(not 0 <= r <= 1 for r in (fail, timeout, garbage)) or fail + timeout + garbage > 1:
            raise ValueError("fault rates must be in [0, 1] and sum to at most 1")
        self.inner, self.fail, self.timeout, self.garbage, self.delay = inner, fail, timeout, garbage, delay
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts = {"calls": 0, "fail": 0, "timeout": 0, "garbage": 0}

    def _draw(self) -> str:
        with self._lock:
            self.counts["calls"] += 1
            u = self._rng.random()
            kind = ("fail" if u < self.fail else "timeout" if u < self.fail + self.timeout
                    else "garbage" if u < self.fail + self.timeout + self.garbage else "ok")
            if kind != "ok":
                self.counts[kind] += 1
            return kind

    def complete(self, request):
        kind = self._draw()
        if kind == "fail":
            raise InjectedFault("injected LM failure")
        if kind == "timeout":
            time.sleep(self.delay)
            raise TimeoutError("injected LM timeout")
        if kind == "garbage":
            return Response(id=None, model="faulty", message=Message.assistant([TextPart("\x00garbage ]] ## [[")]),
                            finish_reason="stop", usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0))
        return self.inner.complete(request)

    def stream(self, request):
        return self.inner.stream(request)

    def close(self):
        close = getattr(self.inner, "close", None)
        if close:
            close()


def faulty_lm(inner_lm, *, seed: int = 0, **rates) -> dspy.LM:
    """A ``dspy.LM`` whose calls go through a :class:`FaultInjectingEngine` around ``inner_lm``'s engine.

    ``inner_lm`` is a DummyLM or any ``dspy.LM`` built with a custom engine. DSPy's cache is off so
    every call reaches the engine; DSPy's own retries are off so injected faults surface.
    """
    if isinstance(inner_lm, dspy.utils.dummies.DummyLM):
        inner = DummyEngine(inner_lm)
    else:
        inner = getattr(inner_lm, "_engine_spec", None)
        if inner is None or isinstance(inner, str):
            raise ValueError("faulty_lm needs a DummyLM or a dspy.LM with a custom engine object")
    engine = FaultInjectingEngine(inner, seed=seed, **rates)
    return dspy.LM("faulty/" + str(getattr(inner_lm, "model", "lm")), engine=engine, cache=False, num_retries=0)
