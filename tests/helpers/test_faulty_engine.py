import dspy
import pytest
from dspy.utils.dummies import DummyLM

from tests.helpers.faulty_engine import faulty_lm


def test_fault_rates_are_respected_and_counted():
    lm = faulty_lm(DummyLM([{"answer": "4"}] * 1000), fail=0.1, timeout=0.05, garbage=0.05, seed=1, delay=0)
    engine = lm._engine_spec
    outcomes = {"ok": 0, "err": 0, "bad": 0}
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm):
        for _ in range(400):
            try:
                out = predict(question="2+2?")
                outcomes["ok" if out.answer == "4" else "bad"] += 1
            except Exception:  # noqa: BLE001 - counted
                outcomes["err"] += 1
    assert engine.counts["calls"] >= 400
    injected = engine.counts["fail"] + engine.counts["timeout"] + engine.counts["garbage"]
    assert 0.12 < injected / engine.counts["calls"] < 0.28
    assert outcomes["err"] >= engine.counts["fail"] + engine.counts["timeout"] - 5
    assert outcomes["ok"] > 250


def test_bad_rates_rejected():
    with pytest.raises(ValueError, match="fault rates"):
        faulty_lm(DummyLM([]), fail=0.8, timeout=0.5)
