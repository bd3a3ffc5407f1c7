"""The hybrid student: distill --mode hybrid on a compile run's candidate-aware traces (tiny model)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from dspy.utils.dummies import DummyLM

from compile.config import OptimizeConfig
from compile.optimize import compile_data, run_optimize
from finetune.config import DistillConfig
from finetune.distill import run_distill
from finetune.run_reader import read_distill_run

DATA = os.environ.get("NEXTOCC_DATA_DIR", "/work/shared/data")
pytestmark = pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")
TARGETS = ["q_proj", "v_proj"]


def _compile(tmp_path, **kw) -> tuple[OptimizeConfig, str]:
    kw = {"hybrid_baseline": "return_markov", **kw}
    cfg = OptimizeConfig(dataset="synthetic", data_dir=DATA, synthetic_persons=120, motives=True, n_train=10, n_dev=0,
                         n_test=0, candidates_per_person=2, optimizer="none", threads=1,
                         output_dir=str(tmp_path / "compile"), run_name="c", teacher_lm="evidence",
                         judge_lm="heuristic", predict_candidates=False, rationalize=True, eval_judge=False,
                         mode="joint", hybrid_k_candidates=3, **kw)
    run_optimize(cfg, teacher_lm=DummyLM([{"occupation": "Cashiers"}]))
    return cfg, str(tmp_path / "compile" / "c")


def _distill(run, model, out, **kw) -> DistillConfig:
    values = dict(from_run=run, base=str(model), output_dir=str(out), max_steps=1, per_device_train_batch_size=2,
                  lora_r=4, lora_alpha=8, lora_target_modules=TARGETS, save_steps=1, evaluate=False, mode="hybrid",
                  max_length=4096, eval_fraction=0.0)
    values.update(kw)
    return DistillConfig(**values)


def test_hybrid_student_trains_and_loads_as_the_hybrid_program(tmp_path, tiny_model_dir, taxonomy):
    from programs.hybrid import HybridNextOccupation

    cfg, run = _compile(tmp_path)
    res = run_distill(_distill(run, tiny_model_dir, tmp_path / "distill", run_name="h"))
    out = tmp_path / "distill" / "h"
    assert set(res["stages"]) == {"hybrid"} and res["program_mode"] == "joint"
    assert res["students"]["reasoner"] == res["students"]["predictor"]
    assert res["students"]["predictor"].endswith("hybrid/adapter")
    assert res["hybrid"] == {"baseline": "baseline.json", "k_candidates": 3}
    assert (out / "baseline.json").read_text() == (tmp_path / "compile" / "c" / "baseline.json").read_text()
    manifest = json.loads((out / "nextocc.json").read_text())
    assert manifest["class"] == "HybridNextOccupation" and manifest["baseline"] == "baseline.json"
    # the report's serving command runs the saved hybrid program, not a plain joint one
    assert f"python -m programs.predict --program {out} --lm '{{model: hosted_vllm/hybrid," in (out / "report.md").read_text()
    info = read_distill_run(out)
    assert info["available"] and info["mode"] == "hybrid" and info["k_candidates"] == 3
    assert info["baseline"] == str(out / "baseline.json")
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)  # the run folder is self-contained
    program = HybridNextOccupation.load(moved, taxonomy=taxonomy)
    assert program.mode == "joint" and program.k_candidates == 3 and program.baseline is not None
    ex = compile_data(cfg)[0].test[0]
    pred = program(history=ex.history, states=ex.states, career=ex.career)
    assert pred.ranked
    assert "candidates" in program.predictor.signature.input_fields


def test_hybrid_student_of_gru_candidates_keeps_the_gru_weights(tmp_path, tiny_model_dir, taxonomy):
    from programs.hybrid import HybridNextOccupation

    cfg, run = _compile(tmp_path, hybrid_baseline="sequence")
    assert (tmp_path / "compile" / "c" / "baseline.safetensors").is_file()
    res = run_distill(_distill(run, tiny_model_dir, tmp_path / "distill", run_name="g"))
    out = tmp_path / "distill" / "g"
    for name in ("baseline.json", "baseline.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "compile" / "c" / name).read_bytes(), name
    assert res["hybrid"]["baseline"] == "baseline.json"
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)  # the GRU's weights moved with the run
    program = HybridNextOccupation.load(moved, taxonomy=taxonomy)
    assert type(program.baseline).__name__ == "SequenceBaseline"
    ex = compile_data(cfg)[0].test[0]
    assert program.baseline_candidates(None, str(ex.history), ex.states, ex.career)


def test_hybrid_mode_needs_the_baseline_file(tmp_path, tiny_model_dir):
    _, run = _compile(tmp_path)
    os.remove(os.path.join(run, "baseline.json"))
    with pytest.raises(FileNotFoundError, match="hybrid_baseline return_markov"):
        run_distill(_distill(run, tiny_model_dir, tmp_path / "distill"))


def test_hybrid_mode_without_hybrid_traces_names_the_compile_flag(tmp_path, tiny_model_dir):
    _, run = _compile(tmp_path)
    os.remove(os.path.join(run, "sft_hybrid_joint.jsonl"))
    with pytest.raises(FileNotFoundError, match="--hybrid_baseline"):
        run_distill(_distill(run, tiny_model_dir, tmp_path / "distill"))


def test_hybrid_mode_rejects_dpo(tmp_path):
    with pytest.raises(ValueError, match="mode hybrid has none"):
        DistillConfig(from_run=str(tmp_path), mode="hybrid", dpo=True)
