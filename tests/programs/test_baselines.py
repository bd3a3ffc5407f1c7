"""Frequency / Markov / return-aware Markov baselines on tiny hand-made example sets."""

from __future__ import annotations

import dspy
import pytest

from careers.history import CareerHistory
from metrics.accuracy import AccEM
from programs.baseline_registry import load_baseline, make_baseline
from programs.baselines import (
    FrequencyBaseline,
    MarkovBaseline,
    ReturnAwareMarkov,
    examples_with_states,
)

A, B, C, D = "15-1252.00", "15-1253.00", "11-3021.00", "29-1141.00"
TITLES = {A: "Software Developers", B: "Software Quality Assurance Analysts and Testers",
          C: "Computer and Information Systems Managers", D: "Registered Nurses"}
# (past job codes, next job code): golds B x2, C x5, A x1; transitions A->{B:2, C:1}, B->{C:3}, D->{A:1, C:1}
TRAIN = [([A], B), ([A], B), ([A], C), ([B], C), ([D], A), ([C, D], C), ([B], C), ([A, B], C)]
ALPHA = 0.1


def make_example(person, past, nxt):
    jobs = [{"title": TITLES[c], "onet_code": c, "start_year": 2000 + i} for i, c in enumerate(past + [nxt])]
    history = CareerHistory.from_dict({"person_id": person, "jobs": jobs})
    return history.prefix(len(past)).to_example(history.jobs[-1], occupation=TITLES[nxt])


@pytest.fixture
def trainset():
    return [make_example(f"p{i}", past, nxt) for i, (past, nxt) in enumerate(TRAIN)]


def freq(state):
    counts = {B: 2, C: 5, A: 1}
    return (counts[state] + ALPHA) / (8 + 3 * ALPHA)


def test_frequency_baseline(trainset):
    model = FrequencyBaseline(k=3, alpha=ALPHA).fit(trainset)
    pred = model(history="...", states=[D])
    assert pred.onet_code == C and pred.occupation == TITLES[C] and pred.matched is True
    assert [t for t, _ in pred.ranked] == [TITLES[C], TITLES[B], TITLES[A]]
    assert pred.ranked[0][1] == pytest.approx(freq(C), abs=1e-6)
    # the current state is excluded (train never repeats a state): after C comes B
    assert model(history="...", states=[C]).onet_code == B


def test_markov_hand_computed(trainset):
    model = MarkovBaseline(k=5, alpha=ALPHA).fit(trainset)
    pred = model(history="...", states=[A])
    prior = ALPHA * 3
    p_b = (2 + prior * freq(B)) / (3 + prior)
    p_c = (1 + prior * freq(C)) / (3 + prior)
    assert pred.onet_code == B
    assert [t for t, _ in pred.ranked] == [TITLES[B], TITLES[C]]  # A itself is excluded
    assert [p for _, p in pred.ranked] == pytest.approx([p_b, p_c], abs=1e-6)
    probs = [p for _, p in pred.ranked]
    assert probs == sorted(probs, reverse=True)
    assert model(history="...", states=[B]).onet_code == C
    # unseen last state and empty history back off to the frequency distribution
    assert model(history="...", states=["43-9061.00"]).onet_code == C
    assert model(history="...", states=[]).onet_code == C


def test_return_aware_markov(trainset):
    model = ReturnAwareMarkov(k=3, alpha=ALPHA).fit(trainset)
    # eligible examples (an earlier distinct state): [C, D] -> C (a return), [A, B] -> C (not): lam = 1/2
    assert model.lam == pytest.approx(0.5)
    markov = MarkovBaseline(k=3, alpha=ALPHA).fit(trainset)
    assert markov(history="", states=[D, A]).onet_code == B
    pred = model(history="", states=[D, A])
    assert pred.onet_code == D  # 0.5 * 1 beats 0.5 * P(B | A) = 0.31
    assert pred.ranked[0][1] == pytest.approx(0.5, abs=1e-6)
    assert ReturnAwareMarkov(k=3, alpha=ALPHA, lam=0.0).fit(trainset)(history="", states=[D, A]).onet_code == B


def test_state_to_representative_set_gold(taxonomy):
    cand_cook = ["35-2014.00", "35-2012.00"]
    cand_chef = ["35-1011.00", "35-1012.00"]

    def ex(person, past, nxt):
        jobs = [{"title": t, "source_code": s, "onet_candidates": c, "start_year": 1990 + i}
                for i, (t, s, c) in enumerate(past + [nxt])]
        h = CareerHistory.from_dict({"person_id": person, "jobs": jobs})
        return h.prefix(len(past)).to_example(h.jobs[-1], occupation=taxonomy.title(nxt[2][0]))

    cook = ("Cook", "occ1980:436", cand_cook)
    chef = ("Chef", "occ1980:433", cand_chef)
    train = [ex("a", [cook], chef), ex("b", [cook], chef), ex("c", [chef], cook)]
    assert train[0].states == ["occ1980:436"] and train[0].gold_state == "occ1980:433"
    model = MarkovBaseline(k=2, taxonomy=taxonomy).fit(train)
    assert model.representative == {"occ1980:433": cand_chef[0], "occ1980:436": cand_cook[0]}
    test = ex("d", [cook], ("Chef", "occ1980:433", list(reversed(cand_chef))))
    pred = model(history=test.history, states=test.states)
    assert pred.state == "occ1980:433" and pred.onet_code == cand_chef[0]
    assert pred.occupation == taxonomy.title(cand_chef[0])
    assert AccEM(taxonomy)(test, pred) == 1.0  # the representative is in the gold candidate set


def test_needs_states_or_career(trainset):
    model = MarkovBaseline().fit(trainset)
    with pytest.raises(ValueError, match="examples_with_states"):
        model(history=trainset[0].history)
    from_career = model(history="", career=trainset[0].career)
    assert from_career.onet_code == model(history="", states=trainset[0].states).onet_code
    with pytest.raises(RuntimeError, match="not fitted"):
        MarkovBaseline()(history="", states=[A])


def test_save_load_round_trip(trainset, tmp_path):
    for name in ("frequency", "markov", "return_markov"):
        model = make_baseline(name, k=3, alpha=ALPHA).fit(trainset)
        path = model.save(tmp_path / f"{name}.json")
        assert path.read_text().lstrip().startswith("{")
        loaded = load_baseline(path)
        assert type(loaded) is type(model)
        for states in ([A], [D, A], [], [B]):
            assert loaded(history="", states=states).toDict() == model(history="", states=states).toDict()
    with pytest.raises(ValueError, match="markov"):
        FrequencyBaseline().load(tmp_path / "markov.json")
    with pytest.raises(ValueError, match="Unknown baseline"):
        make_baseline("lstm")


def test_under_dspy_evaluate(trainset, taxonomy):
    model = MarkovBaseline(k=3, taxonomy=taxonomy).fit(trainset)
    devset = examples_with_states([make_example("q1", [A], B), make_example("q2", [B], A)])
    result = dspy.Evaluate(devset=devset, metric=AccEM(taxonomy), num_threads=1)(model)
    assert result.score == pytest.approx(50.0)


def test_conftest_reset_1_configure_lm():
    dspy.configure(lm=dspy.LM("openai/not-called"), adapter=dspy.JSONAdapter())
    assert dspy.settings.lm is not None


def test_conftest_reset_2_settings_restored():
    assert dspy.settings.lm is None and dspy.settings.adapter is None
