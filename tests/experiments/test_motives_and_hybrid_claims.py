"""Claims (h) hybrid vs its parents, (s) the Bayes-ceiling share, (c2) the true-motive breakdown, the heuristic judge."""

from __future__ import annotations

import dspy
import numpy as np
import pytest

from careers.motives import MOTIVES, motives_named
from experiments.claims import ceiling_claim
from experiments.motives import diff_of_groups_ci, motive_breakdown, motive_claim
from experiments.paper_claims import ClaimsConfig, run_claims
from experiments.tables import RowScores, claim_sentence

N_TEST = 40
CUE = {"stay": "Staying as a cook is the steady next step.", "climb": "A climb to job zone 4 would continue upward.",
       "pivot": "A pivot to a different field is next.", "return": "A return to Cooks is a plausible next step.",
       "educate": "Work as a teacher, where most have a degree, would use it."}


def test_motive_cues_name_each_motive_once():
    for motive, text in CUE.items():
        assert motives_named(text) == {motive}, motive
    assert set(CUE) == set(MOTIVES)
    assert motives_named("Worked as a cashier for four years.") == set() and motives_named(None) == set()


def test_group_difference_ci():
    named = [True] * 20 + [False] * 20
    groups = [f"p{i}" for i in range(40)]
    iv = diff_of_groups_ci(named, [1.0] * 20 + [0.0] * 20, groups, n_boot=300)
    assert iv.mean == 1.0 and iv.low == 1.0 and iv.high == 1.0
    rng = np.random.default_rng(0)
    noise = diff_of_groups_ci(named, rng.integers(0, 2, 40).astype(float), groups, n_boot=300)
    assert noise.low < 0 < noise.high
    assert diff_of_groups_ci([True] * 3, [1.0] * 3, ["a", "b", "c"]).mean != diff_of_groups_ci(
        [True] * 3, [1.0] * 3, ["a", "b", "c"]).mean  # NaN: one bucket is empty


@pytest.fixture(scope="module")
def motive_splits(taxonomy):
    from careers.synthetic_dataset import load_synthetic

    return load_synthetic(taxonomy=taxonomy, n_persons=300, seed=0, motives=True)


class MotiveOracle:
    """Right (the gold) exactly when it names the true motive; wrong and naming another motive otherwise."""

    def __init__(self, examples, taxonomy):
        self.by_history = {ex.history: ex for ex in examples}
        self.taxonomy = taxonomy

    def __call__(self, history, **_):
        ex = self.by_history[history]
        right = int(ex.person_id.split("-")[-1] if "-" in str(ex.person_id) else hash(ex.person_id)) % 2 == 0
        code = ex.onet_code if right else "41-2011.00"
        motive = ex.motive if right else next(m for m in MOTIVES if m != ex.motive)
        title = self.taxonomy.occupations[code].title
        return dspy.Prediction(occupation=title, onet_code=code, matched=True, ranked=[(title, 1.0)],
                               reason=CUE[motive])


def test_motive_breakdown_and_claim(motive_splits, taxonomy):
    from careers.splits import sample_per_person

    test = sample_per_person(list(motive_splits.test), N_TEST, 0)
    prog = MotiveOracle(test, taxonomy)
    records = [{"reason": prog(ex.history).reason} for ex in test]
    correct = [1.0 if prog(ex.history).onet_code == ex.onet_code else 0.0 for ex in test]
    groups = [str(ex.person_id) for ex in test]
    b = motive_breakdown(test, records, correct, groups, "Oracle", n_boot=300)
    assert b["named"]["accuracy"].mean == 1.0 and b["not_named"]["accuracy"].mean == 0.0
    assert b["named"]["n"] + b["not_named"]["n"] == len(test) == sum(p["n"] for p in b["by_motive"].values())
    claim = motive_claim([b])
    assert claim["id"] == "c2" and claim["verdict"] == "supported" and claim["n_a"] == b["named"]["n"]
    assert "person-level 95% bootstrap CI" in claim_sentence(claim)
    b90 = motive_breakdown(test, records, correct, groups, "Oracle", n_boot=300, alpha=0.1)
    assert "person-level 90% bootstrap CI" in claim_sentence(motive_claim([b90]))
    # examples without motives (NLSY79, the plain synthetic world) and rows without reasons give no breakdown
    assert motive_breakdown([dict(ex, motive=None) for ex in test], records, correct, groups, "x") is None
    assert motive_breakdown(test, [{"reason": None}] * len(test), correct, groups, "x") is None
    assert motive_claim([])["verdict"] == "not run"


def _row(name, hits, groups):
    return RowScores(name=name, label=name, group="g", keys=[str(i) for i in range(len(hits))], groups=groups,
                     scores={"AccEM": list(hits)})


def test_ceiling_claim_compares_with_a_share_of_the_ceiling():
    groups = [f"p{i}" for i in range(100)]
    ceiling = _row("bayes_optimal", [1.0] * 50 + [0.0] * 50, groups)
    boot = {"n_boot": 300, "alpha": 0.05, "seed": 0}
    strong = ceiling_claim(_row("distilled_joint", [1.0] * 50 + [0.0] * 50, groups), ceiling, "AccEM", boot)
    assert strong["verdict"] == "supported" and abs(strong["diff"].mean - 0.1) < 1e-9  # 0.5 - 0.8 * 0.5
    weak = ceiling_claim(_row("distilled_joint", [1.0] * 10 + [0.0] * 90, groups), ceiling, "AccEM", boot)
    assert weak["verdict"] == "contradicted"
    assert ceiling_claim(None, ceiling, "AccEM", boot)["verdict"] == "not run"


def test_run_claims_states_hybrid_ceiling_and_motive_claims(tmp_path, motive_splits, taxonomy):
    from careers.splits import sample_per_person

    test = sample_per_person(list(motive_splits.test), N_TEST, 0)
    cfg = ClaimsConfig(datasets=["synthetic"], synthetic_persons=300, motives=True, n_test=N_TEST, lm=None,
                       judge_lm="heuristic", compile_run=None, distill_joint_run=None, distill_two_model_run=None,
                       rows=["return_markov", "distilled_joint", "distilled_hybrid", "bayes_optimal"],
                       output_dir=str(tmp_path), run_name="m", n_boot=200)
    res = run_claims(cfg, splits=motive_splits, taxonomy=taxonomy,
                     programs={"distilled_joint": MotiveOracle(test, taxonomy),
                               "distilled_hybrid": MotiveOracle(test, taxonomy)})
    part = res["datasets"]["synthetic"]
    assert part["rows"]["distilled_hybrid"]["status"] == "ok"
    claims = {c["id"]: c for c in part["claims"]}
    assert claims["h1"]["a"] == "distilled_hybrid" and claims["h1"]["b"] == "return_markov"
    assert claims["h2"]["b"] == "distilled_joint" and claims["h2"]["verdict"] == "inconclusive"  # identical rows
    assert claims["s"]["status"] == "ok" and claims["s"]["b"] == "bayes_optimal"
    assert claims["c2"]["verdict"] == "supported" and "Distilled joint" in claims["c2"]["statement"]
    # the heuristic judge scored the rows' reasons: claim (c) has judged predictions to work from
    assert any("predictions" in q["source"] for q in part["quality"])
    md = (tmp_path / "m" / "claims.md").read_text()
    assert "Claim (c2)" in md and "reason names the true motive" in md and "(h1)" in md and "(s)" in md


def test_candidates_without_predictor_calls_are_no_quality_source():
    from experiments.quality import quality_from_candidates

    cands = [{"person_id": f"p{i}", "factuality": 4, "coherence": 4, "utility": 3, "oracle_score": 0.7,
              "predicted_correct": None} for i in range(10)]  # compile's predict_candidates: false
    assert quality_from_candidates(cands).n == 0
    cands[0]["predicted_correct"] = True
    assert quality_from_candidates(cands).n == 1
