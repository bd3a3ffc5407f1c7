"""experiments.paper_claims / tables / plots: table assembly from fixture run dirs, claims, claim (c), plots, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dspy
import numpy as np
import pytest
import yaml

from experiments.bootstrap import Interval
from experiments.paper_claims import ALL_ROWS, ClaimsConfig, main, run_claims
from experiments.plots import plot_accuracy, plot_quality
from experiments.quality import quality_bucket, quality_buckets, quality_from_candidates
from experiments.rows import ROW_SPECS, distilled_hybrid_label
from experiments.tables import (
    RowScores,
    accuracy_table,
    align_records,
    example_key,
    paired_claim,
    scores_from_records,
    verdict,
)
from finetune.run_reader import read_distill_run
from runkit.config import ConfigError, load_config
from runkit.files import read_jsonl

FIXTURES = Path(__file__).parent / "fixtures"
JUDGE_AND_PROGRAM_ANSWERS = {
    "`[[ ## factuality ## ]]`": {"errors": "none", "factuality": "4"},
    "`[[ ## coherence ## ]]`": {"justification": "ok", "coherence": "5"},
    "`[[ ## utility ## ]]`": {"justification": "ok", "utility": "3"},
    "starting with the field `[[ ## occupation ## ]]`": {"occupation": "Cashiers"},
    "starting with the field `[[ ## reason ## ]]`": {"reason": "Stays in retail.", "occupation": "Cashiers"},
}
N_PERSONS = 240
N_TEST = 16


def dummy_lm():
    from dspy.utils.dummies import DummyLM

    return DummyLM(dict(JUDGE_AND_PROGRAM_ANSWERS))


@pytest.fixture(scope="module")
def splits(taxonomy):
    from careers.synthetic_dataset import load_synthetic

    return load_synthetic(taxonomy=taxonomy, n_persons=N_PERSONS, seed=0)


def sample_test(splits):
    from careers.splits import sample_per_person

    return sample_per_person(list(splits.test), N_TEST, 0)


class Oracle:
    """A callable program that answers each example's gold (by history) -- a 'perfect' injected row."""

    def __init__(self, examples, taxonomy, reason="Has worked in this field for years."):
        self.by_history = {ex.history: ex for ex in examples}
        self.taxonomy, self.reason = taxonomy, reason
        self.calls = 0

    def __call__(self, history, **_):
        self.calls += 1
        ex = self.by_history[history]
        code = ex.onet_code
        return dspy.Prediction(occupation=self.taxonomy.occupations[code].title, onet_code=code, matched=True,
                               ranked=[(self.taxonomy.occupations[code].title, 1.0)], reason=self.reason)


def _gold_record(ex, taxonomy, correct=True):
    code = ex.onet_code if correct else "41-2011.00"
    return {"person_id": ex.person_id, "history": ex.history, "gold_codes": list(ex.gold_codes or []),
            "occupation": taxonomy.occupations[code].title, "onet_code": code, "matched": True,
            "ranked": [[taxonomy.occupations[code].title, 1.0]], "reason": "r",
            "judge": {"factuality": 4, "coherence": 4, "utility": 4, "oracle_score": 0.75}}


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_compile_run(root: Path, splits, taxonomy, test, *, lm="dummy") -> Path:
    """A fake compile run: config.yaml, half the test sample's optimized predictions, judged candidates."""
    run = root / "compile" / "synthetic"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"dataset": "synthetic", "mode": "two_step", "teacher_lm": lm,
                                                     "synthetic_persons": N_PERSONS}))
    write_jsonl(run / "predictions_optimized_test.jsonl",
                [_gold_record(ex, taxonomy) for ex in test[: len(test) // 2]])
    rng = np.random.default_rng(0)
    cands = []
    for i, ex in enumerate(list(splits.train)[:60]):
        for c in range(3):
            scores = rng.integers(1, 6, size=3)
            oracle = float(np.mean((scores - 1) / 4))
            cands.append({"example_id": f"{ex.person_id}#{i}", "person_id": str(ex.person_id), "candidate": c,
                          "factuality": int(scores[0]), "coherence": int(scores[1]), "utility": int(scores[2]),
                          "oracle_score": oracle, "predicted_correct": bool(rng.random() < oracle), "error": None})
    cands.append({"example_id": "x", "person_id": "x", "candidate": 0, "error": "boom"})
    write_jsonl(run / "candidates.jsonl", cands)
    return run


def make_distill_run(root: Path, taxonomy, test, name="joint") -> Path:
    """A fake distill run: metrics.json with the students and the distill's own before/after rows, plus per-example
    predictions on the test sample (so no LM is needed)."""
    run = root / "distill" / name
    (run / "joint" / "adapter").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "mode": name, "students": {"reasoner": f"local:gemma-3-270m+{run}/joint/adapter",
                                   "predictor": f"local:gemma-3-270m+{run}/joint/adapter"},
        "evaluation": {"available": True, "before": {"available": True, "metrics": {"AccEM": 1.0}},
                       "after": {"available": True, "metrics": {"AccEM": 9.0}}}}))
    write_jsonl(run / "predictions_test.jsonl", [_gold_record(ex, taxonomy) for ex in test])
    return run


# ---------------------------------------------------------------------- tables
def test_align_records_and_recomputed_scores(splits, taxonomy):
    test = sample_test(splits)
    recs = [_gold_record(ex, taxonomy, correct=i % 2 == 0) for i, ex in enumerate(test)]
    aligned, missing = align_records(test, list(reversed(recs[:-2])) + [{"junk": 1}])
    assert missing == [len(test) - 2, len(test) - 1]
    assert aligned[0]["history"] == test[0].history
    scores = scores_from_records(test, aligned, taxonomy, k=5)
    assert set(scores) == {"AccEM", "AccRM", "Acc@5", "MRR", "soc_major"}
    assert scores["AccEM"][:4] == [1.0, 0.0, 1.0, 0.0] and scores["AccEM"][-1] == 0.0
    # the stored per-record scores are ignored: metrics are recomputed from the prediction fields
    aligned[1] = {**aligned[1], "scores": {"AccEM": 1.0}}
    assert scores_from_records(test, aligned, taxonomy)["AccEM"][1] == 0.0
    # records without a history match by person id and gold codes (programs.evaluate baseline records)
    no_hist = [{k: v for k, v in recs[0].items() if k != "history"}]
    got, miss = align_records(test[:1], no_hist)
    assert got[0] is no_hist[0] and miss == [] and example_key(test[0]).startswith(str(test[0].person_id))


def _row(name, values, keys=None, group="x"):
    keys = keys or [f"p{i}" for i in range(len(values))]
    metrics = ("AccEM", "AccRM", "Acc@5", "MRR", "soc_major")
    return RowScores(name=name, label=name, group=group, keys=keys, groups=list(keys),
                     scores={m: list(map(float, values)) for m in metrics})


def test_paired_claims_supported_contradicted_inconclusive():
    rng = np.random.default_rng(0)
    good = (rng.random(200) < 0.6).astype(float)
    bad = (rng.random(200) < 0.2).astype(float)
    a, b = _row("a", good), _row("b", bad)
    sup = paired_claim(a, b, "AccEM", n_boot=500)
    assert sup["verdict"] == "supported" and sup["diff"].low > 0 and sup["p"] < 0.05
    assert paired_claim(b, a, "AccEM", n_boot=500)["verdict"] == "contradicted"
    same = paired_claim(a, _row("c", np.roll(good, 1)), "AccEM", n_boot=500)
    assert same["verdict"] == "inconclusive" and same["diff"].low < 0 < same["diff"].high
    missing = RowScores(name="d", label="d", group="x", status="not run")
    assert paired_claim(a, missing, "AccEM")["verdict"] == "not run"
    with pytest.raises(ValueError, match="different examples"):
        paired_claim(a, _row("e", bad, keys=[f"q{i}" for i in range(200)]), "AccEM")
    assert verdict(Interval(0.1, 0.02, 0.2, 10)) == "supported"
    assert verdict(Interval(0.1, -0.02, 0.2, 10)) == "inconclusive"
    assert verdict(Interval(-0.1, -0.2, -0.02, 10), direction=-1) == "supported"
    assert verdict(None) == "not run"


def test_accuracy_table_ci_and_not_run_rows():
    rows = [_row("a", [1, 0, 1, 1]), RowScores(name="z", label="z", group="distilled", status="not run",
                                               command="python -m finetune.distill ...")]
    table = accuracy_table(rows, k=5, n_boot=200)
    iv = table[0]["metrics"]["AccEM"]
    assert iv.mean == pytest.approx(0.75) and iv.low <= 0.75 <= iv.high and table[0]["n"] == 4
    assert table[1]["metrics"] == {} and table[1]["status"] == "not run" and table[1]["command"]


def test_quality_buckets_and_correlation():
    assert quality_bucket("oracle_score", 0.49) == "low (<0.5)"
    assert quality_bucket("oracle_score", 0.5) == "mid (0.5-0.75)"
    assert quality_bucket("oracle_score", 0.75) == "high (>=0.75)"
    assert quality_bucket("factuality", 2) == "low (1-2)" and quality_bucket("factuality", 3) == "mid (3)"
    assert quality_bucket("utility", 5) == "high (4-5)" and quality_bucket("utility", None) is None
    rng = np.random.default_rng(1)
    cands = []
    for i in range(300):
        s = int(rng.integers(1, 6))
        cands.append({"person_id": f"p{i // 3}", "factuality": s, "coherence": s, "utility": s,
                      "oracle_score": (s - 1) / 4, "predicted_correct": bool(rng.random() < (s - 1) / 4)})
    cands.append({"person_id": "err", "error": "x", "predicted_correct": True, "factuality": 5})
    cands.append({"person_id": "nojudge", "predicted_correct": True})
    data = quality_from_candidates(cands)
    assert data.n == 300
    q = quality_buckets(data, n_boot=300)
    oracle = q["criteria"]["oracle_score"]
    counts = {b["bucket"]: b["n"] for b in oracle["buckets"]}
    assert sum(counts.values()) == 300
    assert counts["low (<0.5)"] == sum(1 for c in cands[:300] if c["oracle_score"] < 0.5)
    accs = [b["accuracy"].mean for b in oracle["buckets"]]
    assert accs[0] < accs[1] < accs[2]
    assert oracle["spearman"].low > 0 and oracle["pointbiserial"].mean > 0.3
    # no association: the CI covers 0
    flat = [{**c, "predicted_correct": bool(rng.random() < 0.5)} for c in cands[:300]]
    rho = quality_buckets(quality_from_candidates(flat), n_boot=300)["criteria"]["utility"]["spearman"]
    assert rho.low < 0 < rho.high


def test_plots_written(tmp_path):
    table = accuracy_table([_row("a", [1, 0, 1]), RowScores(name="b", label="b", group="distilled",
                                                            status="not run")], n_boot=100)
    p = plot_accuracy(table, tmp_path / "acc.png", "AccEM", title="t")
    cands = [{"person_id": f"p{i}", "factuality": 1 + i % 5, "coherence": 3, "utility": 1 + i % 5,
              "oracle_score": (i % 5) / 4, "predicted_correct": i % 5 > 2} for i in range(40)]
    q = plot_quality([quality_buckets(quality_from_candidates(cands), n_boot=100)], tmp_path / "q.png")
    for path in (p, q):
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- run directories
def test_read_distill_run_is_defensive(tmp_path, taxonomy):
    assert read_distill_run(None)["available"] is False
    assert "does not exist" in read_distill_run(tmp_path / "nope")["reason"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_distill_run(empty)["available"] is False
    # adapters on disk but no metrics.json yet (a run in progress)
    part = tmp_path / "part"
    (part / "reason" / "adapter").mkdir(parents=True)
    (part / "predict" / "adapter").mkdir(parents=True)
    (part / "config.yaml").write_text("mode: two_model\nbase: local:gemma-3-270m\n")
    info = read_distill_run(part)
    assert info["available"] and info["mode"] == "two_model"
    assert info["students"]["reasoner"].endswith("reason/adapter")
    assert info["students"]["predictor"].endswith("predict/adapter")
    (part / "metrics.json").write_text("{not json")
    assert read_distill_run(part)["available"]
    (part / "metrics.json").write_text(json.dumps({"mode": "joint", "students": {
        "reasoner": f"local:gemma-3-270m+{tmp_path}/gone/adapter", "predictor": "openai/gpt-4.1-mini"}}))
    info = read_distill_run(part)
    assert not info["available"] and "adapter folder(s) missing" in info["reason"]


def _config(tmp_path, compile_run, distill_joint, **kw):
    base = dict(datasets=["synthetic"], synthetic_persons=N_PERSONS, n_test=N_TEST, seed=0, lm="dummy",
                judge_lm=None, threads=2, compile_run=str(compile_run),
                distill_joint_run=str(distill_joint), distill_two_model_run=str(tmp_path / "distill" / "absent"),
                output_dir=str(tmp_path / "claims"), run_name="r", n_boot=200,
                baseline_options={"sequence": {"epochs": 2, "hidden_size": 16, "embed_dim": 8}})
    base.update(kw)
    return ClaimsConfig(**base)


def test_run_claims_from_fixture_run_dirs(tmp_path, splits, taxonomy):
    test = sample_test(splits)
    compile_run = make_compile_run(tmp_path, splits, taxonomy, test)
    distill_joint = make_distill_run(tmp_path, taxonomy, test)
    optimized = Oracle(test, taxonomy)
    cfg = _config(tmp_path, compile_run, distill_joint)
    res = run_claims(cfg, splits=splits, taxonomy=taxonomy, lm=dummy_lm(), programs={"optimized": optimized})
    part = res["datasets"]["synthetic"]
    rows = part["rows"]
    assert [r["name"] for r in part["table"]] == list(ALL_ROWS)
    ok = [r for r in part["table"] if r["status"] == "ok"]
    assert all(r["n"] == N_TEST for r in ok)
    assert {r["name"] for r in ok} == set(ALL_ROWS) - {"distilled_two_model", "distilled_direct", "distilled_hybrid"}
    # the optimized row reused the compile run's predictions for half the sample and ran the program on the rest
    assert optimized.calls == N_TEST - N_TEST // 2
    assert "predictions_optimized" in rows["optimized"]["source"] and "run here" in rows["optimized"]["source"]
    # the distilled joint row came from the distill run's predictions; its own before/after rows are kept
    assert "predictions_test.jsonl" in rows["distilled_joint"]["source"]
    assert rows["distilled_joint"]["distill_reported_evaluation"]["after"]["metrics"]["AccEM"] == 9.0
    # a missing distill run is "not run" with the command that produces it
    two = rows["distilled_two_model"]
    assert two["status"] == "not run" and "--mode two_model" in two["command"] and str(compile_run) in two["command"]
    direct = rows["distilled_direct"]
    assert direct["status"] == "not run" and "--mode direct" in (direct["command"] or "")
    # perfect rows and the zero-shot dummy ("Cashiers")
    assert part["test_result"]["distilled_joint"]["AccEM"].mean == 1.0
    zs = part["test_result"]["zero_shot_two_step"]["AccEM"].mean
    assert zs < 0.5
    # Bayes-optimal: argmax predictions and the expected ceiling
    assert 0 < part["bayes_optimal_expected"] <= 1
    claims = {c["id"]: c for c in part["claims"]}
    assert claims["a1"]["verdict"] == "supported" and claims["a1"]["diff"].low > 0
    assert claims["a2"]["b"] in ("frequency", "markov", "return_markov", "sequence")
    assert set(claims["a1"]["by_metric"]) == {"AccEM", "AccRM", "Acc@5", "MRR", "soc_major"}
    assert claims["b"]["verdict"] == "not run"
    assert claims["c"]["kind"] == "correlation" and claims["c"]["verdict"] in ("supported", "inconclusive",
                                                                              "contradicted")
    assert part["quality"][0]["source"].startswith("compile candidates") and part["quality"][0]["n"] == 180
    run_dir = Path(res["run_dir"])
    for name in ("claims.md", "claims.json", "config.yaml", "accuracy_synthetic.png", "quality_synthetic.png"):
        assert (run_dir / name).is_file(), name
    md = (run_dir / "claims.md").read_text()
    assert "Table A" in md and "Distilled joint" in md and "**supported**" in md and "not run" in md
    assert "finetune.distill" in md
    js = json.loads((run_dir / "claims.json").read_text())
    assert js["datasets"]["synthetic"]["test_result"]["markov"]["AccEM"]["n"] == N_TEST
    preds = read_jsonl(run_dir / "predictions_synthetic_optimized.jsonl")
    assert len(preds) == N_TEST and all("key" in p for p in preds)

    # re-run with the same run_name: every row is reused from the run directory, nothing is called again
    def boom(**_):
        raise AssertionError("should have been reused")

    again = run_claims(cfg, splits=splits, taxonomy=taxonomy, lm=dummy_lm(),
                       programs={"optimized": boom, "zero_shot_two_step": boom})
    p2 = again["datasets"]["synthetic"]
    assert p2["rows"]["optimized"]["source"].startswith(str(run_dir))
    assert p2["test_result"]["optimized"]["AccEM"].mean == part["test_result"]["optimized"]["AccEM"].mean


def test_a_retrained_student_is_predicted_again(tmp_path, splits, taxonomy):
    test = sample_test(splits)
    compile_run = make_compile_run(tmp_path, splits, taxonomy, test)
    distill_joint = make_distill_run(tmp_path, taxonomy, test)
    weights = distill_joint / "joint" / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(b"first")
    (distill_joint / "predictions_test.jsonl").unlink()  # the student itself has to answer
    cfg = _config(tmp_path, compile_run, distill_joint, rows=["markov", "distilled_joint"])
    first = Oracle(test, taxonomy)
    run_claims(cfg, splits=splits, taxonomy=taxonomy, lm=dummy_lm(), programs={"distilled_joint": first})
    assert first.calls == N_TEST
    same = Oracle(test, taxonomy)  # same adapter: every prediction is reused
    run_claims(cfg, splits=splits, taxonomy=taxonomy, lm=dummy_lm(), programs={"distilled_joint": same})
    assert same.calls == 0
    weights.write_bytes(b"retrained")  # another size and mtime: the earlier predictions are stale
    retrained = Oracle(test, taxonomy)
    res = run_claims(cfg, splits=splits, taxonomy=taxonomy, lm=dummy_lm(), programs={"distilled_joint": retrained})
    assert retrained.calls == N_TEST
    assert "run here" in res["datasets"]["synthetic"]["rows"]["distilled_joint"]["source"]


def test_hybrid_answer_set_candidates_predicts_the_hybrid_row_again(tmp_path, splits, taxonomy):
    test = sample_test(splits)
    compile_run = make_compile_run(tmp_path, splits, taxonomy, test)
    cfg = _config(tmp_path, compile_run, tmp_path / "absent", rows=["hybrid"])
    free = run_claims(cfg, splits=splits, taxonomy=taxonomy, lm=dummy_lm())
    free_rows = read_jsonl(Path(free["run_dir"]) / "predictions_synthetic_hybrid.jsonl")
    assert len(free_rows) == N_TEST and all(r["occupation"] == "Cashiers" for r in free_rows)
    restricted = run_claims(dataclasses.replace(cfg, hybrid_answer_set="candidates"), splits=splits,
                            taxonomy=taxonomy, lm=dummy_lm())
    assert "run here (16)" in restricted["datasets"]["synthetic"]["rows"]["hybrid"]["source"]
    rows = read_jsonl(Path(restricted["run_dir"]) / "predictions_synthetic_hybrid.jsonl")
    assert len(rows) == N_TEST
    # the dummy LM answers "Cashiers" everywhere (above); restricted, every answer is one of the row's baseline candidates
    assert all(r["occupation"] == r["ranked"][0][0] and len(r["ranked"]) <= 5 for r in rows)
    assert any(r["occupation"] != "Cashiers" for r in rows)
    with pytest.raises(ValueError, match="hybrid_answer_set"):
        dataclasses.replace(cfg, hybrid_answer_set="top")


class Interrupted(Oracle):
    """An oracle that is stopped (Ctrl-C) after ``after`` predictions."""

    def __init__(self, examples, taxonomy, after):
        super().__init__(examples, taxonomy)
        self.after = after

    def __call__(self, history, **kw):
        if self.calls == self.after:
            raise KeyboardInterrupt
        return super().__call__(history, **kw)


def test_an_interrupted_lm_row_keeps_its_finished_predictions(tmp_path, splits, taxonomy):
    test = sample_test(splits)
    compile_run = make_compile_run(tmp_path, splits, taxonomy, test)
    distill_joint = make_distill_run(tmp_path, taxonomy, test)
    (distill_joint / "predictions_test.jsonl").unlink()  # the student itself has to answer
    cfg = _config(tmp_path, compile_run, distill_joint, rows=["markov", "distilled_joint"], threads=1,
                  judge_lm="heuristic")
    with pytest.raises(KeyboardInterrupt):
        run_claims(cfg, splits=splits, taxonomy=taxonomy, lm=dummy_lm(),
                   programs={"distilled_joint": Interrupted(test, taxonomy, after=5)})
    run_dir = tmp_path / "claims" / "r"
    partial = run_dir / "predictions_synthetic_distilled_joint.partial.jsonl"
    kept = read_jsonl(partial)
    assert len(kept) == 5 and all(r["reason"] and r["row_signature"] and r["judge"] is None for r in kept)
    rest = Oracle(test, taxonomy)
    res = run_claims(cfg, splits=splits, taxonomy=taxonomy, lm=dummy_lm(), programs={"distilled_joint": rest})
    assert rest.calls == N_TEST - 5  # only what the interrupted run had not finished
    row = res["datasets"]["synthetic"]["rows"]["distilled_joint"]
    assert row["status"] == "ok" and f"{partial} (5)" in row["source"] and f"run here ({N_TEST - 5})" in row["source"]
    assert not partial.exists()
    final = read_jsonl(run_dir / "predictions_synthetic_distilled_joint.jsonl")
    assert len(final) == N_TEST and all(r["judge"] and "utility" in r["judge"] for r in final)
    assert res["datasets"]["synthetic"]["test_result"]["distilled_joint"]["AccEM"].mean == 1.0


def test_run_claims_without_compile_or_lm(tmp_path, splits, taxonomy):
    cfg = _config(tmp_path, tmp_path / "nope", tmp_path / "nope2", lm=None,
                  rows=["markov", "zero_shot_two_step", "zero_shot_direct", "optimized", "distilled_joint"])

    def broken(**_):
        raise ConnectionError("LM down")

    res = run_claims(cfg, splits=splits, taxonomy=taxonomy, programs={"zero_shot_direct": broken})
    rows = res["datasets"]["synthetic"]["rows"]
    assert rows["zero_shot_direct"]["status"] == "failed" and "LM down" in rows["zero_shot_direct"]["note"]
    assert rows["markov"]["status"] == "ok"
    assert rows["zero_shot_two_step"]["status"] == "not run" and "lm" in rows["zero_shot_two_step"]["note"]
    assert rows["optimized"]["status"] == "not run" and "compile.optimize" in rows["optimized"]["command"]
    assert rows["distilled_joint"]["status"] == "not run"
    claims = {c["id"]: c for c in res["datasets"]["synthetic"]["claims"]}
    assert all(c["verdict"] == "not run" for c in claims.values())
    assert res["datasets"]["synthetic"]["quality"] == []


def test_sequence_row_is_a_supervised_row_of_claim_a(tmp_path, splits, taxonomy):
    test = sample_test(splits)
    distill_joint = make_distill_run(tmp_path, taxonomy, test)
    rows = ["markov", "return_markov", "sequence", "distilled_joint"]
    cfg = _config(tmp_path, tmp_path / "nope", distill_joint, lm=None, rows=rows)
    res = run_claims(cfg, splits=splits, taxonomy=taxonomy)
    part = res["datasets"]["synthetic"]
    assert [r["name"] for r in part["table"]] == rows and part["rows"]["sequence"]["status"] == "ok"
    assert part["rows"]["sequence"]["source"] == f"run here ({N_TEST})"  # the GRU was fitted here, on the train split
    # a perfect sequence row is the best supervised row: claim a2 compares the student with it
    cfg2 = _config(tmp_path, tmp_path / "nope", distill_joint, lm=None, rows=rows, run_name="r2")
    res2 = run_claims(cfg2, splits=splits, taxonomy=taxonomy, programs={"sequence": Oracle(test, taxonomy)})
    claims = {c["id"]: c for c in res2["datasets"]["synthetic"]["claims"]}
    assert claims["a2"]["b"] == "sequence" and "Sequence (GRU)" in claims["a2"]["statement"]
    assert claims["a2"]["verdict"] == "inconclusive"  # both perfect
    # without sequence in rows (configs/claims_small.yaml) no GRU row is built
    cfg3 = _config(tmp_path, tmp_path / "nope", distill_joint, lm=None, rows=["markov", "distilled_joint"],
                   run_name="r3")
    part3 = run_claims(cfg3, splits=splits, taxonomy=taxonomy)["datasets"]["synthetic"]
    assert set(part3["rows"]) == {"markov", "distilled_joint"}
    assert {c["id"]: c for c in part3["claims"]}["a2"]["b"] == "markov"


def test_baseline_options_reach_the_sequence_model(tmp_path):
    from experiments.rows import baseline_kwargs

    cfg = load_config(ClaimsConfig, ["--baseline_options", "{sequence: {epochs: 2}}", "--seed", "3"])
    assert baseline_kwargs(cfg, "sequence") == {"k": 5, "epochs": 2, "seed": 3}
    assert baseline_kwargs(cfg, "markov") == {"k": 5}
    with pytest.raises(ConfigError, match=r"baseline_options names \['nope'\]"):
        load_config(ClaimsConfig, ["--baseline_options", "{nope: {}}"])
    with pytest.raises(ConfigError, match="baseline_options.sequence must be a mapping"):
        load_config(ClaimsConfig, ["--baseline_options", "{sequence: 3}"])


def test_config_validation_and_help_text(tmp_path):
    with pytest.raises(ConfigError, match="unknown rows"):
        load_config(ClaimsConfig, ["--rows", "markov,nope"])
    with pytest.raises(ConfigError, match="primary_metric"):
        load_config(ClaimsConfig, ["--primary_metric", "Acc@3"])
    cfg = load_config(ClaimsConfig, ["--n_test", "7", "--datasets", "synthetic,nlsy79"])
    assert cfg.n_test == 7 and cfg.datasets == ["synthetic", "nlsy79"]
    assert load_config(ClaimsConfig, ["--datasets", "[synthetic, nlsy79]"]).datasets == ["synthetic", "nlsy79"]
    root = Path(__file__).resolve().parents[2]
    for size in ("small", "full", "laptop"):
        load_config(ClaimsConfig, ["--config", str(root / "configs" / f"claims_{size}.yaml")])


def test_cli_tiny_config_with_dummy_lm(tmp_path, splits, taxonomy, capsys):
    from programs.next_occupation import NextOccupation

    test = sample_test(splits)
    distill_joint = make_distill_run(tmp_path, taxonomy, test)
    compile_run = make_compile_run(tmp_path, splits, taxonomy, test)
    NextOccupation(mode="two_step", lm=dummy_lm(), taxonomy=taxonomy).save(str(compile_run / "program.json"))
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "datasets": ["synthetic"], "synthetic_persons": N_PERSONS, "n_test": N_TEST, "lm": "dummy",
        "judge_lm": "dummy", "threads": 2, "compile_run": str(compile_run), "distill_joint_run": str(distill_joint),
        "distill_two_model_run": None, "rows": ["return_markov", "zero_shot_two_step", "optimized", "distilled_joint",
                                                "distilled_two_model", "hybrid"],
        "output_dir": str(tmp_path / "out"), "run_name": "cli", "n_boot": 200}))
    two_model = Oracle(test, taxonomy)
    rc = main(["--config", str(cfg_path), "--n_boot", "150"], lm=dummy_lm(), judge_lm=dummy_lm(),
              splits=splits, taxonomy=taxonomy, programs={"distilled_two_model": two_model})
    out = capsys.readouterr().out
    assert rc == 0 and "Table A" in out and "run directory:" in out
    res = json.loads((tmp_path / "out" / "cli" / "claims.json").read_text())
    part = res["datasets"]["synthetic"]
    assert res["n_boot"] == 150
    assert {k for k, v in part["rows"].items() if v["status"] == "ok"} == {
        "return_markov", "zero_shot_two_step", "optimized", "distilled_joint", "distilled_two_model", "hybrid"}
    # optimized: half reused from the compile run, the rest run by its program.json on the (dummy) LM
    assert "run here (8)" in part["rows"]["optimized"]["source"]
    opt = part["test_result"]["optimized"]["AccEM"]["mean"]
    assert 0.45 <= opt <= 0.55  # the reused half is perfect, the dummy half answers "Cashiers"
    # judged predictions of the LM rows run here feed claim (c)
    sources = [q["source"] for q in part["quality"]]
    assert "Zero-shot two-step predictions" in sources and "Hybrid (return-Markov + LM) predictions" in sources
    # after the compile candidates, the students' reasons come first (claim (c) reads the first source with data)
    assert sources[1:3] == ["Distilled joint predictions", "Distilled two-model predictions"], sources
    claims = {c["id"]: c for c in part["claims"]}
    assert claims["b"]["verdict"] == "inconclusive"  # both students perfect: difference 0
    assert claims["c"]["a"].startswith("compile candidates")
    assert (tmp_path / "out" / "cli" / "quality_synthetic.png").is_file()
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_split_warnings_and_help(capsys):
    from experiments.paper_claims import split_warnings

    cfg = ClaimsConfig(seed=0, synthetic_persons=400)
    assert split_warnings({"seed": 0, "synthetic_persons": 400}, cfg, "synthetic") == []
    warns = split_warnings({"seed": 1, "synthetic_persons": 600}, cfg, "synthetic")
    assert len(warns) == 2 and "training persons" in warns[0]
    assert split_warnings({"synthetic_persons": 600}, cfg, "nlsy79") == []
    assert "motives" in split_warnings({"seed": 0, "motives": True}, cfg, "synthetic")[0]
    assert split_warnings({"seed": 0, "motives": True}, ClaimsConfig(motives=True), "synthetic") == []
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--distill_joint_run" in capsys.readouterr().out


def test_distilled_hybrid_label_names_the_baseline_of_its_candidates():
    assert distilled_hybrid_label("sequence") == "Distilled hybrid (GRU + student)"
    assert distilled_hybrid_label("return_markov") == "Distilled hybrid (return-Markov + student)"
    assert distilled_hybrid_label(None) == ROW_SPECS["distilled_hybrid"][0] == "Distilled hybrid (baseline + student)"
