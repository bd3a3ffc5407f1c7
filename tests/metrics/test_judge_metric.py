"""JudgeMetric in DSPy's three call forms (Evaluate float, trace bool, GEPA feedback) and inside optimizers."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from careers.history import CareerHistory
from metrics.judge import ReasonJudge
from metrics.judge_metric import JudgeMetric
from programs.next_occupation import NextOccupation

REASON = "Moved from retail into patient care at Mercy Hospital in 2011."
GOOD = [{"errors": "none", "factuality": 5}, {"justification": "Clear.", "coherence": 5},
        {"justification": "Points to nursing.", "utility": 5}]
WEAK = [{"errors": "Invents a 2009 degree", "factuality": 2}, {"justification": "Clear.", "coherence": 5},
        {"justification": "Generic.", "utility": 3}]


def make_example():
    career = CareerHistory.from_dict({
        "person_id": "p1",
        "jobs": [{"title": "Cashier", "start_year": 2008, "end_year": 2011},
                 {"title": "Nursing Assistant", "employer": "Mercy Hospital", "start_year": 2011, "end_year": 2016},
                 {"title": "Registered Nurse", "onet_code": "29-1141.00", "start_year": 2016}],
    })
    return career.prefix(2).to_example(career.jobs[2], occupation="Registered Nurses")


def pred(occupation="Registered Nurses", code="29-1141.00", reason=REASON, matched=True):
    return dspy.Prediction(reason=reason, occupation=occupation, onet_code=code, matched=matched,
                           ranked=[(occupation, 1.0)])


def test_evaluate_form_returns_float(taxonomy):
    judge_lm = DummyLM(list(GOOD))
    metric = JudgeMetric(ReasonJudge(judge_lm), taxonomy)
    score = metric(make_example(), pred())
    assert isinstance(score, float) and score == pytest.approx(1.0)
    weak = JudgeMetric(ReasonJudge(DummyLM(list(WEAK))), taxonomy, accuracy_weight=1, judge_weight=1)
    oracle = (0.25 + 1.0 + 0.5) / 3
    assert weak(make_example(), pred()) == pytest.approx(0.5 * 1.0 + 0.5 * oracle)


def test_trace_form_returns_bool_and_keeps_judge_out_of_trace(taxonomy):
    trace = [("program-step", {}, None)]
    metric = JudgeMetric(ReasonJudge(DummyLM(list(GOOD) + list(WEAK))), taxonomy, threshold=0.9)
    assert metric(make_example(), pred(), trace) is True
    assert trace == [("program-step", {}, None)]
    with dspy.context(trace=trace):
        assert metric(make_example(), pred(reason="Another reason."), trace) is False
        assert dspy.settings.trace == [("program-step", {}, None)]  # the judge's own calls are not traced


def test_gepa_form_returns_prediction_with_feedback(taxonomy):
    judge_lm = DummyLM(list(WEAK))
    metric = JudgeMetric(ReasonJudge(judge_lm), taxonomy)
    wrong = pred(occupation="Cashiers", code="41-2011.00")
    out = metric(make_example(), wrong, None, "reasoner", [])
    assert isinstance(out, dspy.Prediction)
    assert out.score == pytest.approx(metric(make_example(), wrong))
    assert "factuality 2/5 (needs 4) - Invents a 2009 degree" in out.feedback
    assert "utility 3/5 (needs 4) - Generic." in out.feedback
    assert "coherence 5/5" in out.feedback
    assert "Wrong: predicted 'Cashiers'" in out.feedback and "'Registered Nurses'" in out.feedback
    assert "Improve the reason" in out.feedback
    assert len(judge_lm.history) == 3  # the second call reused the cached verdict


def test_unmatched_answer_is_a_miss_with_feedback(taxonomy):
    metric = JudgeMetric(ReasonJudge(DummyLM(list(GOOD))), taxonomy)
    out = metric(make_example(), pred(occupation="Blorf", code=None, matched=False), pred_name="predictor")
    assert out.score == pytest.approx(0.5)  # accuracy 0, oracle 1
    assert "not an official O*NET-SOC 2019 title" in out.feedback


def test_no_reason_scores_accuracy_only(taxonomy):
    judge_lm = DummyLM([])
    metric = JudgeMetric(ReasonJudge(judge_lm), taxonomy)
    assert metric(make_example(), pred(reason=None)) == 1.0
    assert judge_lm.history == []
    assert JudgeMetric(None, taxonomy)(make_example(), pred(occupation="Cashiers", code="41-2011.00")) == 0.0
    assert JudgeMetric(None, taxonomy)(make_example(), None) == 0.0


def test_judge_failure_counts_as_zero_and_is_named(taxonomy):
    bad = [{"errors": "x", "factuality": "n/a"}, {"errors": "x", "factuality": "n/a"}] + GOOD[1:]
    metric = JudgeMetric(ReasonJudge(DummyLM(bad)), taxonomy)
    out = metric(make_example(), pred(), pred_name="predictor")
    assert out.score == pytest.approx(0.5 + 0.5 * (2 / 3))
    assert "factuality: the judge could not score it" in out.feedback


def test_default_accuracy_related_credit(taxonomy):
    gold = make_example()
    related = taxonomy.related("29-1141.00")[0]
    score = JudgeMetric(None, taxonomy).accuracy(gold, pred(occupation=related.title, code=related.code))
    assert score == pytest.approx(1 / (related.index + 1))


def test_with_dspy_evaluate(taxonomy):
    program_lm = DummyLM([{"reason": REASON}, {"occupation": "Registered Nurses"}])
    prog = NextOccupation(lm=program_lm, taxonomy=taxonomy)
    metric = JudgeMetric(ReasonJudge(DummyLM(list(GOOD))), taxonomy)
    result = dspy.Evaluate(devset=[make_example()], metric=metric, num_threads=1, display_progress=False)(prog)
    assert result.score == pytest.approx(100.0)


def test_with_threaded_evaluate_and_two_models(taxonomy):
    reasoner = DummyLM({"field `[[ ## reason ## ]]`": {"reason": REASON}})
    predictor = DummyLM({"field `[[ ## occupation ## ]]`": {"occupation": "Registered Nurses"}})
    judge_lm = DummyLM({"`[[ ## factuality ## ]]`": GOOD[0], "`[[ ## coherence ## ]]`": GOOD[1],
                        "`[[ ## utility ## ]]`": GOOD[2]})
    prog = NextOccupation(reasoner_lm=reasoner, predictor_lm=predictor, taxonomy=taxonomy)
    metric = JudgeMetric(ReasonJudge(judge_lm), taxonomy)
    devset = [make_example() for _ in range(4)]
    result = dspy.Evaluate(devset=devset, metric=metric, num_threads=2, display_progress=False)(prog)
    assert result.score == pytest.approx(100.0)
    assert len(reasoner.history) == 4 and len(predictor.history) == 4
    assert len(judge_lm.history) <= 6  # same (history, reason, gold): verdicts are cached


def test_with_bootstrap_fewshot(taxonomy):
    program_lm = DummyLM([{"reason": REASON}, {"occupation": "Registered Nurses"}])
    prog = NextOccupation(lm=program_lm, taxonomy=taxonomy)
    metric = JudgeMetric(ReasonJudge(DummyLM(list(GOOD))), taxonomy, threshold=0.9)
    optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=1, max_labeled_demos=0, max_rounds=1)
    compiled = optimizer.compile(prog, trainset=[make_example()])
    assert len(compiled.reasoner.demos) == 1 and len(compiled.predictor.demos) == 1
    assert compiled.predictor.demos[0]["occupation"] == "Registered Nurses"
    assert compiled.reasoner_lm is program_lm


def test_with_gepa_feedback_loop(taxonomy):
    pytest.importorskip("gepa")
    prog_lm = DummyLM({"field `[[ ## occupation ## ]]`": {"occupation": "Registered Nurses"},
                       "field `[[ ## reason ## ]]`": {"reason": REASON}})
    judge_lm = DummyLM({"`[[ ## factuality ## ]]`": {"errors": "none", "factuality": 3},
                        "`[[ ## coherence ## ]]`": {"justification": "ok", "coherence": 4},
                        "`[[ ## utility ## ]]`": {"justification": "generic", "utility": 2}})
    base = JudgeMetric(ReasonJudge(judge_lm), taxonomy)
    seen = []

    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        out = base(gold, pred, trace, pred_name, pred_trace)
        seen.append((pred_name, type(out).__name__))
        return out

    prog = NextOccupation(lm=prog_lm, taxonomy=taxonomy)
    examples = [make_example() for _ in range(2)]
    reflection = DummyLM({"": {"new_instruction": "Write a grounded reason."}})
    optimizer = dspy.GEPA(metric=metric, max_metric_calls=8, reflection_lm=reflection, num_threads=1)
    optimizer.compile(prog, trainset=examples, valset=examples)
    assert ("reasoner", "Prediction") in seen and (None, "float") in seen
    feedback = base(make_example(), prog(make_example().history), None, "reasoner", []).feedback
    assert "factuality 3/5 (needs 4)" in feedback and "utility 2/5 (needs 4) - generic" in feedback
