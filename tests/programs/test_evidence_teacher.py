"""EvidenceTeacher: grounded by construction (property test), distinct patterns, rationalization, rewrite mode."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils.dummies import DummyLM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careers.history import CareerHistory
from careers.synthetic import SyntheticCareerGenerator
from careers.synthetic_dataset import load_synthetic
from careers.transitions import TransitionStats
from metrics.grounding import grounding_check
from metrics.heuristic_judge import TitleIndex, implied_occupations
from programs.evidence_teacher import PATTERNS, EvidenceTeacher

SETTINGS = dict(deadline=None, database=None, derandomize=True, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TITLES = ["Cashier", "Stock Clerk", "Registered Nurse", "Software Developer", "Cook", "Truck Driver",
          "Bookkeepers and accounting and auditing clerks", "Sales Associate", "Administrative support jobs, n.e.c.",
          "Retail Salespersons", "Nursing Assistants", "Electricians", "Line cook", "Janitor", "Accountants and auditors"]
CODES = [None, "41-2011.00", "43-5081.00", "29-1141.00", "15-1252.00", "35-2014.00", "53-3032.00", "43-3031.00"]
LEVELS = ["High school diploma", "Bachelor's degree", "Some college", "Less than high school", "Master's degree",
          "Associate's degree", "Graduate degree"]


@pytest.fixture(scope="module")
def splits(taxonomy):
    return load_synthetic(n_persons=300, seed=5, taxonomy=taxonomy, motives=True)


@pytest.fixture(scope="module")
def teacher(taxonomy, splits):
    return EvidenceTeacher.fit(splits.train, taxonomy)


@st.composite
def fuzzed_history(draw):
    n = draw(st.integers(1, 6))
    year = draw(st.integers(1960, 1990))
    jobs = []
    for _ in range(n):
        length = draw(st.integers(0, 6))
        job = {"title": draw(st.sampled_from(TITLES)), "start_year": year, "end_year": year + length}
        code = draw(st.sampled_from(CODES))
        if code:
            job["onet_code"] = code
        if draw(st.booleans()):
            job["employer"] = draw(st.sampled_from(["Acme Corp", "Riverside Group", "City of Lakeview", "Walmart"]))
        if draw(st.booleans()):
            job["age"] = draw(st.integers(16, 60))
        jobs.append(job)
        year += length + draw(st.integers(0, 2))
    edu = [{"level": draw(st.sampled_from(LEVELS))}] if draw(st.booleans()) else []
    return CareerHistory.from_dict({"person_id": str(draw(st.integers(0, 10**6))), "jobs": jobs, "education": edu})


@settings(**SETTINGS)
@given(history=fuzzed_history(), candidate=st.integers(0, 6))
def test_every_stated_fact_is_traceable_fuzzed(teacher, history, candidate):
    example = history.prefix(len(history.jobs)).to_example()
    pred = teacher(history=example.history, career=example.career, candidate=candidate, n=7)
    result = grounding_check(pred.reason, example.history)
    assert result.score == 1.0, (result.ungrounded_texts, pred.reason, example.history)
    assert pred.reason.endswith(".") and pred.pattern in PATTERNS


@settings(**SETTINGS)
@given(seed=st.integers(0, 10**6), index=st.integers(0, 10**6))
def test_every_stated_fact_is_traceable_generated(taxonomy, teacher, seed, index):
    gen = SyntheticCareerGenerator(taxonomy, seed=seed)
    for ex in gen.examples(gen.generate_person(index)):
        for pred in teacher.candidates(ex, 4, rationalize=True):
            result = grounding_check(pred.reason, ex.history)
            assert result.score == 1.0, (result.ungrounded_texts, pred.reason, ex.history)


def test_rationalization_implies_the_gold_and_patterns_differ(taxonomy, teacher, splits):
    index = TitleIndex(taxonomy, teacher.stats)
    hits = 0
    examples = splits.train[:120]
    for ex in examples:
        cands = teacher.candidates(ex, 4, rationalize=True)
        assert cands[-1].pattern == "rationalization" and ex.onet_code in cands[-1].implied
        hits += ex.onet_code in implied_occupations(cands[-1].reason, ex.history, index)
        patterns = [c.pattern for c in cands[:-1]]
        assert len(set(patterns)) == len(patterns) or len(teacher.applicable_patterns(ex.career)) < 3
    assert hits == len(examples)


def test_reasons_fit_the_student_token_budget(taxonomy, teacher, splits):
    tokenizers = pytest.importorskip("tokenizers")
    import os

    path = os.path.join(os.environ.get("NEXTOCC_CACHE_DIR", "/root/.cache/nextocc"), "gemma-3-270m-hf",
                        "tokenizer.json")
    if not os.path.isfile(path):
        pytest.skip("Gemma 3 tokenizer not in the model cache")
    tok = tokenizers.Tokenizer.from_file(path)
    strict = EvidenceTeacher(taxonomy, teacher.stats, tokenizer=tok)
    lengths = [len(tok.encode(p.reason).ids) for ex in splits.train[:80] for p in strict.candidates(ex, 4)]
    assert sum(x <= 80 for x in lengths) / len(lengths) >= 0.95
    assert len({p.reason for ex in splits.train[:5] for p in strict.candidates(ex, 4)}) == 20


def test_statistics_come_from_the_given_split_only(taxonomy, splits):
    fitted = TransitionStats.fit(splits.train)
    both = TransitionStats.fit(splits.train + splits.dev + splits.test)
    assert fitted.transitions == len(splits.train) and both.transitions > fitted.transitions
    teacher = EvidenceTeacher.fit(splits.train, taxonomy)
    assert teacher.stats.to_dict() == fitted.to_dict()


def test_rewrite_mode_keeps_grounded_prose_and_rejects_invented_facts(taxonomy, teacher, splits):
    ex = splits.train[0]
    base = teacher(history=ex.history, career=ex.career, candidate=0)
    good = base.reason.replace("The history lists", "Their record lists")
    lm = DummyLM([{"reason": good}, {"reason": "They worked at Goldman Sachs in 1950 and will be an astronaut."}])
    rewriting = EvidenceTeacher(taxonomy, teacher.stats, rewrite_lm=lm)
    first = rewriting(history=ex.history, career=ex.career, candidate=0)
    assert first.rewritten == (first.reason == good) and grounding_check(first.reason, ex.history).score == 1.0
    second = rewriting(history=ex.history, career=ex.career, candidate=1)
    assert not second.rewritten and second.reason == second.evidence
    assert dspy.settings.lm is None


def test_clear_errors(taxonomy, teacher):
    with pytest.raises(ValueError, match="at least one job"):
        teacher(career={"person_id": "x", "jobs": [], "education": [{"level": "High school diploma"}]})
    history = CareerHistory.from_dict({"person_id": "1", "jobs": [{"title": "Cashier", "start_year": 2010}]})
    with pytest.raises(ValueError, match="gold occupation"):
        teacher(career=history, pattern="rationalization")


def test_without_statistics_reasons_cite_only_the_history_and_onet(taxonomy, splits):
    teacher = EvidenceTeacher.fit(splits.train, taxonomy, statistics=False)
    for ex in splits.train[:120]:
        cands = teacher.candidates(ex, 4, rationalize=True)
        assert ex.onet_code in cands[-1].implied
        for pred in cands:
            assert "recorded moves" not in pred.reason and "%" not in pred.reason and pred.pattern != "common"
            assert grounding_check(pred.reason, ex.history).score == 1.0, pred.reason


def test_moves_name_the_last_move_and_the_motive_it_shows(taxonomy, splits):
    """With ``moves``, reasons state the last move's kind, grounded, and name the true motive far more often."""
    from careers.motives import motives_named

    plain, moving = (EvidenceTeacher.fit(splits.train, taxonomy, moves=m, statistics=False) for m in (False, True))
    named = {False: 0, True: 0}
    stated = 0
    examples = splits.train[:200]
    for ex in examples:
        for flag, teacher in ((False, plain), (True, moving)):
            cands = teacher.candidates(ex, 4, rationalize=True)
            named[flag] += ex.motive in motives_named(cands[-1].reason)
            if flag:
                stated += any("Their last move" in c.reason for c in cands)
                for pred in cands:
                    assert grounding_check(pred.reason, ex.history).score == 1.0, pred.reason
    assert named[True] >= 1.5 * named[False], named
    assert stated >= 0.5 * sum(len(ex.career["jobs"]) >= 2 for ex in examples)
    ex = next(e for e in examples if len(e.career["jobs"]) >= 2 and e.career["jobs"][-1].get("onet_code")
              == e.career["jobs"][-2].get("onet_code"))
    assert moving.applicable_patterns(ex.career)[0] == "stay" and plain.applicable_patterns(ex.career)[0] != "stay"
