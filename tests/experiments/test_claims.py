"""Claims (a*_best): the best distilled student against the zero-shot, supervised and optimized rows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from experiments.claims import build_claims, ceiling_claim, quality_claim
from experiments.quality import QualityData, quality_buckets
from experiments.tables import STATUS_NOT_RUN, RowScores, claim_sentence, render_markdown

N = 200


def _row(name, hits):
    return RowScores(name=name, label=name.replace("_", " ").capitalize(), group="g",
                     keys=[str(i) for i in range(N)], groups=[f"p{i}" for i in range(N)],
                     scores={m: [float(h) for h in hits] for m in ("AccEM", "AccRM", "Acc@5", "MRR", "soc_major")})


def _hits(p, seed):
    return (np.random.default_rng(seed).random(N) < p).astype(float)


CONFIG = SimpleNamespace(primary_metric="AccEM", n_boot=1000, alpha=0.05, seed=0, k=5)


def test_best_student_is_picked_by_its_mean_and_gets_bonferroni_cis():
    rows = {r.name: r for r in (
        _row("zero_shot_two_step", _hits(0.05, 1)), _row("return_markov", _hits(0.15, 2)),
        _row("sequence", _hits(0.30, 3)), _row("optimized", _hits(0.05, 4)),
        _row("distilled_joint", _hits(0.10, 5)), _row("distilled_two_model", _hits(0.08, 6)),
        _row("distilled_direct", _hits(0.40, 7)))}
    claims = {c["id"]: c for c in build_claims(rows, CONFIG)}
    for cid in ("a1_best", "a2_best", "a3_best", "a4_best"):
        assert claims[cid]["a"] == "distilled_direct", cid
        assert abs(claims[cid]["ci_level"] - (1 - 0.05 / 3)) < 1e-12  # three students ran
    assert claims["a2_best"]["b"] == "sequence" and claims["a4_best"]["b"] == "return_markov"
    assert claims["a1_best"]["verdict"] == "supported" and claims["a1"]["a"] == "distilled_joint"
    # the pick's CI is wider than the same comparison's plain 95% CI
    plain = build_claims({**rows, "distilled_joint": rows["distilled_direct"]}, CONFIG)[0]["diff"]
    wide = claims["a1_best"]["diff"]
    assert wide.mean == plain.mean and wide.high - wide.low > plain.high - plain.low
    text = claim_sentence(claims["a1_best"])
    assert "98.33% bootstrap CI" in text and "Distilled direct" in text
    assert "95% bootstrap CI" in claim_sentence(claims["a1"])


def test_best_student_claims_need_a_student_and_skip_a_duplicate_markov_claim():
    rows = {r.name: r for r in (_row("return_markov", _hits(0.2, 1)), _row("zero_shot_two_step", _hits(0.1, 2)))}
    assert not any(c["id"].endswith("_best") for c in build_claims(rows, CONFIG))
    rows["distilled_joint"] = _row("distilled_joint", _hits(0.3, 3))
    claims = {c["id"]: c for c in build_claims(rows, CONFIG)}
    assert claims["a2_best"]["b"] == "return_markov" and "a4_best" not in claims  # already the best supervised row
    assert claims["a3_best"]["verdict"] == STATUS_NOT_RUN and claims["a1_best"]["ci_level"] == 0.95
    assert "not run" in claim_sentence(claims["a3_best"])


def test_hybrid_claim_compares_with_the_baseline_its_candidates_came_from():
    rows = {r.name: r for r in (_row("return_markov", _hits(0.15, 1)), _row("sequence", _hits(0.2, 2)),
                                _row("distilled_joint", _hits(0.1, 3)), _row("distilled_hybrid", _hits(0.2, 4)))}
    h1 = {c["id"]: c for c in build_claims(rows, CONFIG)}["h1"]
    assert h1["b"] == "return_markov" and "(Return markov)" in h1["statement"]  # a row without a baseline kind
    rows["distilled_hybrid"].extra["baseline_kind"] = "sequence"
    h1 = {c["id"]: c for c in build_claims(rows, CONFIG)}["h1"]
    assert h1["b"] == "sequence" and "(Sequence)" in h1["statement"]
    del rows["sequence"]
    h1 = {c["id"]: c for c in build_claims(rows, CONFIG)}["h1"]
    assert h1["verdict"] == STATUS_NOT_RUN and h1["reason"] == "the sequence row did not run"


def test_claim_sentences_state_the_configured_ci_level():
    student, ceiling = _row("distilled_joint", _hits(0.3, 1)), _row("bayes_optimal", _hits(0.3, 2))
    claim = ceiling_claim(student, ceiling, "AccEM", {"n_boot": 300, "alpha": 0.1, "seed": 0})
    assert "paired 90% bootstrap CI" in claim_sentence(claim)
    config = SimpleNamespace(**{**vars(CONFIG), "alpha": 0.1})
    rows = {"distilled_joint": student, "zero_shot_two_step": _row("zero_shot_two_step", _hits(0.1, 3))}
    assert "paired 90% bootstrap CI" in claim_sentence({c["id"]: c for c in build_claims(rows, config)}["a1"])
    scores = [float(v) for v in np.random.default_rng(4).integers(1, 6, N)]
    data = QualityData(source="s", quality={c: scores for c in ("factuality", "coherence", "utility")}
                       | {"oracle_score": [(v - 1) / 4 for v in scores]},
                       correct=[float(v >= 4) for v in scores], groups=[f"p{i}" for i in range(N)])
    for alpha, text in ((0.1, "person-level 90% bootstrap CI"), (0.05, "person-level 95% bootstrap CI")):
        assert text in claim_sentence(quality_claim([quality_buckets(data, n_boot=200, alpha=alpha)]))
    assert render_markdown({"alpha": 0.1, "n_boot": 10, "datasets": {}}).splitlines()[2].startswith(
        "90% person-level bootstrap CIs (10 replicates)")
