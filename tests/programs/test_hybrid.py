"""HybridNextOccupation (baseline candidates as an input) and the program factory, with DummyLM."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from careers.history import CareerHistory, coerce_history
from programs.factory import PROGRAM_NAMES, build_program
from programs.hybrid import HybridNextOccupation
from programs.next_occupation import NextOccupation

PERSON = {
    "person_id": "p1",
    "jobs": [
        {"title": "Cashier", "start_year": 2008, "end_year": 2011, "onet_code": "41-2011.00"},
        {"title": "Nursing Assistant", "start_year": 2011, "end_year": 2016, "onet_code": "31-1131.00"},
    ],
}
REASON = "Moved from retail into patient care and stayed five years."


class FakeBaseline(dspy.Module):
    """A fitted-baseline stand-in recording what it was called with."""

    def __init__(self, ranked=None):
        super().__init__()
        self.ranked = ranked or [("Registered Nurses", 0.5), ("Licensed Practical and Licensed Vocational Nurses", 0.3),
                                 ("Home Health Aides", 0.1)]
        self.calls = []

    def forward(self, history=None, states=None, career=None, **kwargs):
        self.calls.append({"history": history, "states": states, "career": career})
        return dspy.Prediction(occupation=self.ranked[0][0], ranked=self.ranked)


def test_two_step_hybrid_sees_candidates_in_both_steps(taxonomy):
    baseline = FakeBaseline()
    lm = DummyLM([{"reason": REASON}, {"occupation": "Registered Nurses"}])
    prog = HybridNextOccupation(baseline, lm=lm, taxonomy=taxonomy, k_candidates=2)
    pred = prog(PERSON)
    assert pred.occupation == "Registered Nurses" and pred.reason == REASON
    assert pred.candidates == (
        "1. Registered Nurses (p=0.50)\n2. Licensed Practical and Licensed Vocational Nurses (p=0.30)"
    )
    for entry in lm.history:
        assert "[[ ## candidates ## ]]\n1. Registered Nurses (p=0.50)" in entry["messages"][-1]["content"]
    assert "Home Health Aides" not in lm.history[0]["messages"][-1]["content"]
    # the baseline got the structured career (states are derived from it), not text to parse
    assert baseline.calls[0]["career"]["jobs"][1]["title"] == "Nursing Assistant"


@pytest.mark.parametrize("mode", ["joint", "direct"])
def test_hybrid_other_modes(taxonomy, mode):
    answer = {"occupation": "Home Health Aides"} | ({"reason": REASON} if mode == "joint" else {})
    lm = DummyLM([answer])
    pred = HybridNextOccupation(FakeBaseline(), mode=mode, lm=lm, taxonomy=taxonomy)(PERSON)
    assert len(lm.history) == 1
    assert pred.occupation == "Home Health Aides"  # outside the top choice: the LM may pick any title
    assert (pred.reason == REASON) if mode == "joint" else pred.reason is None


def test_hybrid_states_from_evaluate_style_kwargs(taxonomy):
    baseline = FakeBaseline()
    lm = DummyLM([{"reason": REASON}, {"occupation": "Registered Nurses"}])
    prog = HybridNextOccupation(baseline, lm=lm, taxonomy=taxonomy)
    text = CareerHistory.from_dict(PERSON).to_prompt_text()
    prog(history=text, states=["41-2011.00", "31-1131.00"])
    assert baseline.calls[0]["states"] == ["41-2011.00", "31-1131.00"]
    assert baseline.calls[0]["history"] == text


def test_explicit_candidates_bypass_baseline(taxonomy):
    baseline = FakeBaseline()
    lm = DummyLM([{"occupation": "Cashiers"}])
    pred = HybridNextOccupation(baseline, mode="direct", lm=lm, taxonomy=taxonomy)(
        "Jobs: 1. Cashier", candidates=[("Cashiers", 0.9)])
    assert baseline.calls == []
    assert pred.candidates == "1. Cashiers (p=0.90)"


def test_hybrid_needs_states_or_baseline(taxonomy):
    with pytest.raises(ValueError, match="states"):
        HybridNextOccupation(FakeBaseline(), lm=DummyLM([]), taxonomy=taxonomy)("Jobs: 1. Cashier")
    with pytest.raises(ValueError, match="baseline"):
        HybridNextOccupation(None, lm=DummyLM([]), taxonomy=taxonomy)(PERSON)
    with pytest.raises(ValueError):
        HybridNextOccupation(FakeBaseline(), k_candidates=0)


def test_hybrid_save_load(taxonomy, tmp_path):
    prog = HybridNextOccupation(FakeBaseline(), mode="joint", taxonomy=taxonomy, k_candidates=3)
    assert [n for n, _ in prog.named_predictors()] == ["predictor"]
    prog.save(tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "nextocc.json").read_text())
    assert manifest["class"] == "HybridNextOccupation" and manifest["k_candidates"] == 3
    assert manifest["baseline"] is None  # the fake baseline cannot save itself
    with pytest.raises(ValueError):
        NextOccupation.load(tmp_path / "run", taxonomy=taxonomy)  # wrong class
    lm = DummyLM([{"reason": REASON, "occupation": "Registered Nurses"}])
    loaded = HybridNextOccupation.load(tmp_path / "run", baseline=FakeBaseline(), lm=lm, taxonomy=taxonomy)
    assert loaded.mode == "joint" and loaded.k_candidates == 3
    assert loaded(PERSON).occupation == "Registered Nurses"


@pytest.mark.parametrize("answer,expected", [("Home Health Aides", "Home Health Aides"),
                                             ("Cashiers", "Registered Nurses")])
def test_answer_set_candidates_restricts_a_text_answer(taxonomy, answer, expected):
    # not a local LM: an answer naming a candidate stays, any other answer becomes the baseline's first candidate
    lm = DummyLM([{"reason": REASON, "occupation": answer}])
    prog = HybridNextOccupation(FakeBaseline(), mode="joint", lm=lm, taxonomy=taxonomy, answer_set="candidates")
    pred = prog(PERSON)
    assert pred.occupation == expected and pred.onet_code == taxonomy.code_for_title(expected) and pred.matched
    assert [t for t, _ in pred.ranked][0] == expected and pred.ranking == "candidates"
    assert sorted(t for t, _ in pred.ranked) == sorted(t for t, _ in FakeBaseline().ranked)
    free = HybridNextOccupation(FakeBaseline(), mode="joint", lm=DummyLM([{"reason": REASON, "occupation": answer}]),
                                taxonomy=taxonomy)(PERSON)
    assert free.occupation == answer  # the default answer set: any official title
    short = HybridNextOccupation(FakeBaseline(), mode="joint", lm=DummyLM([{"reason": REASON, "occupation": answer}]),
                                 taxonomy=taxonomy, answer_set="candidates", k=2)(PERSON)
    assert len(short.ranked) == 2  # ranked keeps the program's k
    with pytest.raises(ValueError, match="answer_set"):
        HybridNextOccupation(FakeBaseline(), answer_set="top")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["joint", "two_step"])
def test_answer_set_candidates_ranks_candidates_by_local_lm(taxonomy, tiny_local_lm, mode):
    import lms

    lm, _ = tiny_local_lm
    candidates = [("Cashiers", 0.5), ("Registered Nurses", 0.3), ("Software Developers", 0.2)]
    prog = HybridNextOccupation(FakeBaseline(candidates), mode=mode, lm=lm, taxonomy=taxonomy, k=3,
                                answer_set="candidates")
    pred = prog(PERSON)
    assert sorted(t for t, _ in pred.ranked) == sorted(t for t, _ in candidates)
    assert pred.occupation == pred.ranked[0][0] and pred.ranking == "candidates"
    scores = [s for _, s in pred.ranked]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
    # each score is the option's log-probability after the same prompt (and, in joint mode, the same reason)
    inputs = {"history": coerce_history(PERSON)[0], "candidates": pred.candidates}
    if mode == "two_step":
        inputs["reason"] = pred.reason
    messages = dspy.ChatAdapter().format(prog.predictor.signature, [], inputs)
    prefix = {"reason": pred.reason} if mode == "joint" else None
    for title, score in pred.ranked:
        assert lms.option_logprob(lm, messages, "occupation", title, prefix_fields=prefix) == pytest.approx(score,
                                                                                                            abs=1e-4)


def test_answer_set_is_saved(taxonomy, tmp_path):
    HybridNextOccupation(FakeBaseline(), mode="joint", taxonomy=taxonomy, answer_set="candidates").save(tmp_path / "r")
    assert json.loads((tmp_path / "r" / "nextocc.json").read_text())["answer_set"] == "candidates"
    loaded = HybridNextOccupation.load(tmp_path / "r", baseline=FakeBaseline(), taxonomy=taxonomy)
    assert loaded.answer_set == "candidates"


def _trainset():
    people = [
        {"person_id": str(i), "jobs": [{"title": "Cashier", "onet_code": "41-2011.00", "start_year": 2000},
                                       {"title": "Nursing Assistant", "onet_code": "31-1131.00", "start_year": 2004}]}
        for i in range(4)
    ]
    out = []
    for p in people:
        career = CareerHistory.from_dict(p)
        out.append(career.prefix(1).to_example(career.jobs[1], occupation="Nursing Assistants"))
    return out


@pytest.mark.parametrize("name", ["frequency", "markov", "return_markov"])
def test_factory_builds_baselines(taxonomy, name):
    pytest.importorskip("programs.baselines")
    prog = build_program(name, taxonomy=taxonomy, trainset=_trainset())
    pred = prog(history="x", states=["41-2011.00"])
    assert pred.onet_code == "31-1131.00"
    with pytest.raises(ValueError, match="trainset"):
        build_program(name, taxonomy=taxonomy)


@pytest.mark.parametrize("name", ["two_step", "joint", "direct"])
def test_factory_builds_lm_programs(taxonomy, name):
    lm = DummyLM([])
    prog = build_program(name, lm=lm, judge_lm=DummyLM([]), taxonomy=taxonomy, k=7)
    assert isinstance(prog, NextOccupation) and prog.mode == name and prog.k == 7
    assert prog.predictor_lm is lm


def test_factory_builds_hybrid(taxonomy):
    baseline = FakeBaseline()
    prog = build_program("hybrid", baseline=baseline, taxonomy=taxonomy, mode="direct", k_candidates=2)
    assert isinstance(prog, HybridNextOccupation) and prog.baseline is baseline and prog.mode == "direct"
    pytest.importorskip("programs.baselines")
    fitted = build_program("hybrid", baseline="markov", trainset=_trainset(), taxonomy=taxonomy)
    assert fitted.baseline.fitted
    lm = DummyLM([{"reason": REASON}, {"occupation": "Nursing Assistants"}])
    with dspy.context(lm=lm):
        pred = fitted({"person_id": "9", "jobs": [{"title": "Cashier", "onet_code": "41-2011.00"}]})
    assert "Nursing Assistants (p=" in pred.candidates
    with pytest.raises(ValueError, match="trainset"):
        build_program("hybrid", taxonomy=taxonomy)


def test_factory_unknown_name():
    assert set(PROGRAM_NAMES) == {"frequency", "markov", "return_markov", "sequence", "two_step", "joint", "direct", "hybrid"}
    with pytest.raises(ValueError, match="Unknown program"):
        build_program("nope")


def test_hybrid_save_load_with_real_baseline(taxonomy, tmp_path):
    pytest.importorskip("programs.baselines")
    prog = build_program("hybrid", baseline="return_markov", trainset=_trainset(), taxonomy=taxonomy, mode="direct")
    prog.save(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "nextocc.json").read_text())["baseline"] == "baseline.json"
    loaded = HybridNextOccupation.load(tmp_path / "run", lm=DummyLM([{"occupation": "Nursing Assistants"}]),
                                       taxonomy=taxonomy)
    assert type(loaded.baseline).__name__ == "ReturnAwareMarkov"
    pred = loaded({"person_id": "9", "jobs": [{"title": "Cashier", "onet_code": "41-2011.00"}]})
    assert pred.onet_code == "31-1131.00" and "Nursing Assistants" in pred.candidates
