"""Offline compile: teacher_lm: evidence with judge_lm: heuristic, and the new metrics.json fields."""

from __future__ import annotations

import json
import os

import pytest
from dspy.utils.dummies import DummyLM

from careers.splits import DatasetSplits
from careers.transitions import TransitionStats
from compile.config import OptimizeConfig
from compile.optimize import compile_data, run_optimize, training_statistics

DATA = os.environ.get("NEXTOCC_DATA_DIR", "/work/shared/data")
pytestmark = pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")


def config(tmp_path, **kw):
    base = dict(dataset="synthetic", data_dir=DATA, synthetic_persons=120, motives=True, n_train=20, n_dev=0,
                n_test=0, candidates_per_person=4, optimizer="none", threads=1, output_dir=str(tmp_path),
                run_name="ev", teacher_lm="evidence", judge_lm="heuristic", predict_candidates=False,
                rationalize=True, eval_judge=False)
    base.update(kw)
    return OptimizeConfig(**base)


def test_evidence_teacher_and_heuristic_judge_compile_offline(tmp_path):
    cfg = config(tmp_path)
    res = run_optimize(cfg, teacher_lm=DummyLM([{"occupation": "Cashiers"}]))
    run = tmp_path / "ev"
    metrics = json.loads((run / "metrics.json").read_text())
    assert res["candidates"]["generated"] == 80 and res["candidates"]["errors"] == 0
    assert metrics["grounding_pass_rate"] == 1.0
    hist = metrics["judge_histograms"]
    assert set(hist) == {"factuality", "coherence", "utility"}
    assert sum(hist["utility"].values()) == 80 and len([v for v in hist["utility"].values() if v]) >= 2
    assert metrics["oracles"] >= 18 and metrics["oracle_gold_support_rate"] >= 0.9
    cands = [json.loads(x) for x in (run / "candidates.jsonl").read_text().splitlines()]
    assert all(c["prediction"] is None and c["predicted_correct"] is None for c in cands)
    assert all("implied" in c["signals"] for c in cands)
    assert sum(1 for _ in open(run / "sft_reason.jsonl")) == metrics["oracles"]
    assert "motive" not in (run / "sft_reason.jsonl").read_text()


def test_transition_statistics_use_the_training_split_only(tmp_path):
    cfg = config(tmp_path, n_train=5)
    run_optimize(cfg, teacher_lm=DummyLM([{"occupation": "Cashiers"}]))
    saved = TransitionStats.load(tmp_path / "ev" / "transitions.json")
    splits = compile_data(cfg)[0]
    assert saved.to_dict() == TransitionStats.fit(splits.train).to_dict()
    assert saved.transitions == len(splits.train)
    # dev/test persons do not change the statistics: other dev/test persons leave them unchanged
    other = compile_data(config(tmp_path, seed=7))[0]
    swapped = DatasetSplits(train=splits.train, dev=other.dev + other.test, test=other.train[:50], name="x")
    assert training_statistics(swapped).to_dict() == saved.to_dict()
    leaked = DatasetSplits(train=splits.train + splits.dev + splits.test, name="x")
    assert training_statistics(leaked).to_dict() != saved.to_dict()


@pytest.mark.parametrize("field,value,match", [
    ("judge_lm", "evidence", "not a judge"), ("teacher_lm", "heuristic", "not a teacher"),
    ("teacher_lm", "evidence-gpt", "evidence\\+<lm spec>"), ("judge_minority_penalty", 5, "in \\[0, 4\\]")])
def test_config_rejects_misplaced_offline_roles(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **{field: value})


def test_motives_need_the_synthetic_dataset(tmp_path):
    with pytest.raises(ValueError, match="motives: true needs dataset: synthetic"):
        compile_data(config(tmp_path, dataset="nlsy79"))


def test_student_tokenizer_spec(tmp_path):
    from compile.optimize import load_tokenizer

    assert load_tokenizer(None) is None
    with pytest.raises(FileNotFoundError, match="student_tokenizer"):
        load_tokenizer(str(tmp_path))


def test_judge_minority_penalty_reaches_the_judge(tmp_path, taxonomy):
    from compile.optimize import build_judge

    with pytest.raises(ValueError, match="rule of the heuristic judge"):
        config(tmp_path, judge_lm="openai/gpt-4.1-mini", judge_minority_penalty=2)
    assert build_judge(config(tmp_path, judge_minority_penalty=2), taxonomy, None).minority_penalty == 2
    assert build_judge(config(tmp_path), taxonomy, None).minority_penalty == 0
