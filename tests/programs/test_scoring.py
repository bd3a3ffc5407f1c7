"""predict_batch hands each finished prediction to on_prediction, failures included, in any thread count."""

from __future__ import annotations

import threading

import dspy
import pytest

from programs.scoring import predict_batch, prediction_record


def _program(history):
    if history == "bad":
        raise ValueError("unreadable history")
    return dspy.Prediction(occupation=history.upper(), onet_code=None, ranked=[], reason=f"because {history}")


@pytest.mark.parametrize("threads", [1, 3])
def test_on_prediction_sees_every_prediction_as_it_finishes(threads):
    examples = [dspy.Example(person_id=str(i), history=h).with_inputs("history")
                for i, h in enumerate(["a", "bad", "c", "d", "e"])]
    seen, lock = [], threading.Lock()

    def keep(example, pred):
        with lock:
            seen.append(prediction_record(example, pred))

    preds = predict_batch(_program, examples, threads=threads, progress=False, on_prediction=keep)
    assert [p.get("occupation") for p in preds] == ["A", "", "C", "D", "E"]  # in order, the failure unmatched
    assert sorted(r["person_id"] for r in seen) == ["0", "1", "2", "3", "4"]
    failed = next(r for r in seen if r["person_id"] == "1")
    assert "unreadable history" in failed["error"] and failed["occupation"] == ""
    assert next(r for r in seen if r["person_id"] == "0")["reason"] == "because a"
