"""End-to-end distill runs (resume, DPO, merge, report), the DSPy provider and an Optuna study (tiny model)."""

from __future__ import annotations

import json
import shutil

import dspy
import pytest
from ft_helpers import sft_rows

from finetune.config import DistillConfig
from finetune.distill import run_distill

TARGETS = ["q_proj", "v_proj"]


def _distill(compile_run, tiny_model_dir, out, **kw) -> DistillConfig:
    values = dict(from_run=str(compile_run), base=str(tiny_model_dir), output_dir=str(out), max_steps=2,
                  per_device_train_batch_size=4, lora_r=4, lora_alpha=8, lora_target_modules=TARGETS,
                  save_steps=1, learning_rate=5e-3, evaluate=False)
    values.update(kw)
    return DistillConfig(**values)


def test_two_model_with_dpo_and_merge(compile_run, tiny_model_dir, tmp_path):
    res = run_distill(_distill(compile_run, tiny_model_dir, tmp_path, mode="two_model", dpo=True, dpo_max_steps=1,
                               merge=True, run_name="r", evaluate=True))
    run = tmp_path / "r"
    assert set(res["stages"]) == {"reason", "predict", "reason_dpo"}
    assert res["students"]["reasoner"].endswith("reason_dpo/adapter")
    assert res["students"]["predictor"].endswith("predict/adapter")
    assert (run / "config.yaml").exists() and (run / "metrics.json").exists()
    report = (run / "report.md").read_text()
    assert "Not evaluated" in report and "config.yaml" in report  # no compile config.yaml: the note says why
    assert "peak RSS MB" in report and res["stages"]["reason"]["throughput"]["peak_rss_mb"] > 0
    for key in res["merged"]:
        assert (run / "merged" / key / "model.safetensors").exists()
    assert json.loads((run / "metrics.json").read_text())["mode"] == "two_model"
    # the serving recipe: one vLLM server, one LoRA module per step, then hosted_vllm/<module> in the program
    assert f"--lora-modules reason_dpo={run.resolve()}/reason_dpo/adapter predict={run.resolve()}/predict/adapter" \
        in report and "--max-lora-rank 8" in report
    assert "--lm '{model: hosted_vllm/reason_dpo" in report and "--predictor_lm '{model: hosted_vllm/predict" in report


def test_resume_reuses_latest_checkpoint(compile_run, tiny_model_dir, tmp_path):
    run_distill(_distill(compile_run, tiny_model_dir, tmp_path, run_name="r", max_steps=2))
    stage = tmp_path / "r" / "joint"
    shutil.rmtree(stage / "adapter")  # simulate a run killed after its last checkpoint
    (stage / "metrics.json").unlink()
    with pytest.raises(FileExistsError):
        run_distill(_distill(compile_run, tiny_model_dir, tmp_path, run_name="r", max_steps=3))
    res = run_distill(_distill(compile_run, tiny_model_dir, tmp_path, run_name="r", max_steps=3, resume=True))
    joint = res["stages"]["joint"]
    assert joint["resumed_from"].endswith("checkpoint-2") and joint["global_step"] == 3


def test_provider_finetune_returns_a_working_lm(tiny_model_dir, tmp_path):
    import lms
    from finetune.provider import TrlProvider
    from signatures import GenerateReason

    provider = TrlProvider(output_dir=tmp_path, train_kwargs={"lora_target_modules": TARGETS, "lora_r": 4})
    lm = lms.load(f"local:{tiny_model_dir}", provider=provider, max_tokens=16)
    data = [{"messages": r["prompt"] + r["completion"]} for r in sft_rows(8)]
    job = lm.finetune(train_data=data, train_data_format="chat", train_kwargs={"max_steps": 2})
    student = job.result()
    assert isinstance(student, dspy.LM), student
    assert job.status() == "succeeded"
    assert "+" in student.model and student.model.endswith("joint/adapter")
    with dspy.context(lm=student):
        out = dspy.Predict(GenerateReason)(history="cashier then nurse")
    assert isinstance(out.reason, str)
    bad = lm.finetune(train_data=data, train_data_format="chat", train_kwargs={"lora_rank": 4})
    assert isinstance(bad.result(), ValueError)


def test_student_runs_in_the_program(compile_run, tiny_model_dir, tmp_path, taxonomy):
    pytest.importorskip("programs.next_occupation")
    from finetune.evaluate_student import evaluate_student

    res = run_distill(_distill(compile_run, tiny_model_dir, tmp_path, mode="two_model", max_steps=1))
    ex = dspy.Example(history="Jobs:\n- Cashiers (2010-2012)", occupation="Retail Salespersons").with_inputs("history")
    out = evaluate_student(compile_run, res["students"]["reasoner"], res["students"]["predictor"],
                           examples=[ex], taxonomy=taxonomy, program_mode="two_step")
    assert out["available"], out
    assert out["metrics"]["n"] == 1
    # the distill run directory loads as the program on its student adapters (paths relative to the run)
    from programs.next_occupation import NextOccupation

    moved = tmp_path / "moved"
    shutil.move(res["run_dir"], moved)
    program = NextOccupation.load(moved, taxonomy=taxonomy)
    assert program.mode == "two_step" and program.lm_specs["predictor"].endswith(f"{moved}/predict/adapter")
    assert program.lm_specs["reasoner"].endswith(f"{moved}/reason/adapter")
    assert program(ex.history).ranked  # runs (exact local ranking of the titles)
    (moved / "nextocc.json").unlink()  # runs written before the manifest: found from metrics.json
    older = NextOccupation.load(moved, taxonomy=taxonomy)
    assert older.lm_specs == program.lm_specs
    assert json.loads((moved / "provenance.json").read_text())["git"]["commit"]


def test_study_resumes_after_interruption(compile_run, tiny_model_dir, tmp_path):
    from finetune.study import StudyConfig, run_study

    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"from_run: {compile_run}\nbase: {tiny_model_dir}\nmax_steps: 2\neval_steps: 1\nsave_steps: 100\n"
                   f"lora_target_modules: [q_proj]\nevaluate: false\n")
    study = dict(distill_config=str(cfg), study_dir=str(tmp_path / "s"), n_startup_trials=1, seed=3)
    first = run_study(StudyConfig(**study, n_trials=2))
    assert first["n_trials"] == 2
    second = run_study(StudyConfig(**study, n_trials=3))
    assert second["n_trials"] == 3 and (tmp_path / "s" / "study.db").exists()
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in second["trials"])
    assert all(t["run_dir"].endswith(f"trial-{t['number']}") for t in second["trials"])
    assert (tmp_path / "s" / "best_config.yaml").exists()
    assert (tmp_path / "s" / "optimization_history.png").exists()
    from finetune.config import parse_config

    best = parse_config(DistillConfig, ["--config", str(tmp_path / "s" / "best_config.yaml")])
    assert best.lora_r == second["best_params"]["lora_r"]


def test_direct_mode_trains_the_no_reason_ablation(compile_run, tiny_model_dir, tmp_path):
    from ft_helpers import write_jsonl

    write_jsonl(compile_run / "sft_direct.jsonl", sft_rows(8))
    res = run_distill(_distill(compile_run, tiny_model_dir, tmp_path, mode="direct", run_name="d"))
    assert set(res["stages"]) == {"direct"} and res["students"]["predictor"].endswith("direct/adapter")
    with pytest.raises(ValueError, match="mode direct has none"):
        _distill(compile_run, tiny_model_dir, tmp_path, mode="direct", dpo=True)


def test_half_written_checkpoint_is_skipped(tmp_path):
    from finetune.model_loading import latest_checkpoint

    for step, complete in ((2, True), (4, True), (6, False)):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path).endswith("checkpoint-4")


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", ".."])
def test_run_name_cannot_escape_the_output_dir(compile_run, tiny_model_dir, tmp_path, name):
    with pytest.raises(ValueError, match="run_name"):
        run_distill(_distill(compile_run, tiny_model_dir, tmp_path, run_name=name))
