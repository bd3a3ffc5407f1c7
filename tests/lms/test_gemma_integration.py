"""End-to-end check on the embedded Gemma 3 270M (slow: run with ``pytest -m integration tests/lms``)."""

from __future__ import annotations

import os
from pathlib import Path

import dspy
import pytest

import lms


def _titles() -> list[str]:
    import pandas as pd

    root = Path(os.environ.get("NEXTOCC_DATA_DIR", "/work/shared/data"))
    path = root / "onet" / "Occupation Data.txt"
    if not path.exists():
        pytest.skip(f"O*NET titles not found at {path}")
    return pd.read_csv(path, sep="\t")["Title"].tolist()


class NextReason(dspy.Signature):
    """Given a career history, explain what the person's next occupation is likely to be."""

    history: str = dspy.InputField()
    reason: str = dspy.OutputField()


class NextOccupation(dspy.Signature):
    """Given a career history and a reason, name the next occupation (an O*NET title)."""

    history: str = dspy.InputField()
    reason: str = dspy.InputField()
    occupation: str = dspy.OutputField()


@pytest.mark.integration
def test_gemma_two_step_gives_valid_onet_title():
    titles = _titles()
    lm = lms.load("local:gemma-3-270m", constrained_fields={"occupation": titles}, max_tokens=48, cache=False)
    assert lms.is_local(lm) and "@" in lm.model
    history = "Age 22: Cashiers\nAge 24: Retail Salespersons\nAge 27: First-Line Supervisors of Retail Sales Workers"
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        reason = dspy.Predict(NextReason)(history=history).reason
        occupation = dspy.Predict(NextOccupation)(history=history, reason=reason).occupation
    assert isinstance(reason, str) and reason
    assert occupation in titles
    msgs = dspy.ChatAdapter().format(NextOccupation, demos=[], inputs={"history": history, "reason": reason})
    ranked = lms.rank_options(lm, msgs, "occupation", k=5)
    assert len(ranked) == 5 and all(name in titles for name, _ in ranked)
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    gold = lms.option_logprob(lm, msgs, "occupation", ranked[0][0])
    assert gold == pytest.approx(ranked[0][1], abs=0.25)  # bf16: batch shape changes rounding (exact in fp32)
