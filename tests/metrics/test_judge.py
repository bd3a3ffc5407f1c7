"""ReasonJudge with DummyLM: validation, retry, failure recording; oracle_score and passes."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from metrics.judge import DEFAULT_THRESHOLDS, ReasonJudge, oracle_score, passes, validate_score

HISTORY = "Jobs (oldest first):\n1. 2008-2011: Cashier at Acme\n2. 2011-2016: Nursing Assistant at Mercy Hospital"
REASON = "Moved from retail into patient care in 2011."
FACT = {"errors": "none", "factuality": 5}
COH = {"justification": "Clear order.", "coherence": 4}
UTIL = {"justification": "Points to nursing.", "utility": 3}


def judge_call(lm, **kwargs):
    return ReasonJudge(lm, **kwargs)(history=HISTORY, reason=REASON, occupation="Registered Nurses")


def test_valid_scores_and_own_lm():
    lm = DummyLM([FACT, COH, UTIL])
    configured = DummyLM([])
    dspy.configure(lm=configured)
    out = judge_call(lm)
    assert (out.factuality, out.coherence, out.utility) == (5, 4, 3)
    assert out.failures == []
    assert out.justifications == {"factuality": "none", "coherence": "Clear order.", "utility": "Points to nursing."}
    assert out.oracle_score == pytest.approx((1.0 + 0.75 + 0.5) / 3)
    assert out.passed is False  # utility 3 < 4
    assert len(lm.history) == 3 and configured.history == []
    assert "Registered Nurses" in lm.history[2]["messages"][-1]["content"]  # only the utility judge sees the gold
    assert "Registered Nurses" not in lm.history[0]["messages"][-1]["content"]


def test_out_of_range_score_is_retried_with_new_rollout():
    lm = DummyLM([{"errors": "none", "factuality": 7}, FACT, COH, UTIL])
    out = judge_call(lm)
    assert out.factuality == 5 and out.failures == []
    assert len(lm.history) == 4
    assert lm.history[0]["kwargs"] == {}
    retry = lm.history[1]["kwargs"]
    assert retry["rollout_id"] >= 1 and retry["temperature"] > 0


def test_non_integer_twice_is_a_recorded_failure():
    lm = DummyLM([{"errors": "none", "factuality": "four"}, {"errors": "none", "factuality": "high"}, COH, UTIL])
    out = judge_call(lm)
    assert out.factuality is None
    assert len(out.failures) == 1 and out.failures[0].startswith("factuality")
    assert (out.coherence, out.utility) == (4, 3)
    assert len(lm.history) == 4  # one call per attempt: no silent JSON-adapter fallback call
    assert out.oracle_score == pytest.approx((0 + 0.75 + 0.5) / 3)  # a failure counts as 0
    assert out.passed is False


def test_out_of_range_twice_and_missing_fields_never_crash():
    lm = DummyLM([{"errors": "x", "factuality": 0}, {"errors": "x", "factuality": 9},
                  {"wrong": "field"}, {"wrong": "field"}, UTIL])
    out = judge_call(lm)
    assert out.factuality is None and out.coherence is None and out.utility == 3
    assert [f.split(":")[0] for f in out.failures] == ["factuality", "coherence"]
    assert "not an integer from 1 to 5" in out.failures[0]
    assert "unparseable" in out.failures[1]


def test_no_retries_option():
    lm = DummyLM([{"errors": "x", "factuality": 6}, COH, UTIL])
    out = judge_call(lm, retries=0)
    assert out.factuality is None and len(lm.history) == 3


def test_weights_and_thresholds_configurable():
    lm = DummyLM([FACT, COH, UTIL])
    out = judge_call(lm, weights={"factuality": 2, "utility": 1}, thresholds={"factuality": 5, "coherence": 4})
    assert out.oracle_score == pytest.approx((2 * 1.0 + 1 * 0.5) / 3)
    assert out.passed is True


def test_validate_score():
    assert [validate_score(v) for v in (1, 5, "3", " 4 ", 2.0)] == [1, 5, 3, 4, 2]
    assert [validate_score(v) for v in (0, 6, "four", 3.5, None, True, "", [3])] == [None] * 8


def test_oracle_score_and_passes():
    full = {"factuality": 5, "coherence": 5, "utility": 5}
    assert oracle_score(full) == 1.0
    assert oracle_score({"factuality": 1, "coherence": 1, "utility": 1}) == 0.0
    assert oracle_score({"factuality": 5}) == pytest.approx(1 / 3)
    assert oracle_score(full | {"utility": 1}, weights={"factuality": 1, "coherence": 1, "utility": 2}) == 0.5
    assert oracle_score(dspy.Prediction(**full)) == 1.0
    assert passes(full) and DEFAULT_THRESHOLDS == {"factuality": 4, "coherence": 4, "utility": 4}
    assert not passes(full | {"coherence": 3})
    assert passes(full | {"coherence": 3}, thresholds={"factuality": 4})
    assert not passes(full | {"factuality": None})
    with pytest.raises(ValueError):
        oracle_score(full, weights={"style": 1})
    with pytest.raises(ValueError):
        oracle_score(full, weights={"factuality": 0, "coherence": 0, "utility": 0})
    with pytest.raises(ValueError):
        passes(full, thresholds={"style": 3})
    with pytest.raises(ValueError):
        ReasonJudge(thresholds={"style": 3})


def test_judge_lm_from_spec_dict():
    pytest.importorskip("lms")
    judge = ReasonJudge({"model": "openai/gpt-4.1-mini", "max_tokens": 300})
    assert isinstance(judge.lm, dspy.BaseLM) and judge.lm.model == "openai/gpt-4.1-mini"
    assert ReasonJudge("openai/gpt-4.1-mini").lm.model == "openai/gpt-4.1-mini"
