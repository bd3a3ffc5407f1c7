"""Faults: ``kill -9`` of a distill run (mid-stage) and of an Optuna study (mid-trial), then the same
command again, resumes: distill continues from the latest checkpoint, the study keeps its finished trials (SQLite,
``load_if_exists``) and only runs the missing ones. Tiny random model (``tests/finetune/ft_helpers.py``).
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rel_helpers import driver_env, record_figures, run_until_killed

pytest.importorskip("trl")
pytest.importorskip("peft")
# ~20-30 s each on two shared cores (four fresh Python processes importing transformers/TRL); still in the default
# suite, deselect with -m "not slow" for a quick run
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver_finetune.py")
HELPERS = ROOT / "tests" / "finetune" / "ft_helpers.py"
if not (ROOT / "finetune" / "distill.py").is_file() or not HELPERS.is_file():
    pytest.skip("finetune/distill.py or tests/finetune/ft_helpers.py missing", allow_module_level=True)


def _helpers():
    spec = importlib.util.spec_from_file_location("rel_ft_helpers", HELPERS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ft(tmp_path_factory):
    h = _helpers()
    root = tmp_path_factory.mktemp("ft")
    model = h.build_tiny_model(root / "model")
    run = root / "compile_run"
    run.mkdir()
    rows = h.sft_rows(12)
    for name, data in (("sft_reason.jsonl", rows), ("sft_predict.jsonl", rows[:8]), ("sft_joint.jsonl", rows),
                       ("dpo_reason.jsonl", h.dpo_rows(6))):
        h.write_jsonl(run / name, data)
    return {"model": model, "run": run}


def _run_until(cmd, ready, timeout=180, sleep=0.3):
    """Starts ``cmd`` (each training step sleeping ``sleep`` s), waits until ``ready()`` holds, then SIGKILLs it."""
    return run_until_killed(cmd, ready, cwd=ROOT, env=_env(sleep), timeout=timeout)


def _env(sleep: float) -> dict:
    return driver_env(sleep, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")


def _complete_checkpoints(stage: Path) -> list[int]:
    return sorted(int(p.name.split("-")[-1]) for p in stage.glob("checkpoint-*") if (p / "trainer_state.json").is_file())


def test_sigkill_mid_distill_then_rerun_resumes_from_the_checkpoint(ft, tmp_path):
    out = tmp_path / "distill"
    cmd = [sys.executable, str(DRIVER), "distill", str(ft["run"]), str(ft["model"]), str(out), "d"]
    stage = out / "d" / "joint"
    _run_until(cmd, lambda: len(_complete_checkpoints(stage)) >= 2)
    at_kill = _complete_checkpoints(stage)
    assert at_kill and max(at_kill) < 6 and not (stage / "adapter").exists()
    done = subprocess.run(cmd, cwd=ROOT, env=_env(0.0), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    joint = res["stages"]["joint"]
    assert joint["global_step"] == 6
    resumed = int(Path(joint["resumed_from"]).name.split("-")[-1])
    assert resumed >= max(at_kill), "the rerun must continue from the latest complete checkpoint"
    assert (stage / "adapter" / "adapter_model.safetensors").is_file()
    for name in ("metrics.json", "report.md", "config.yaml"):
        assert (out / "d" / name).is_file(), name
    record_figures("kill_resume_distill", checkpoints_at_kill=at_kill, resumed_from=resumed, final_step=6)


def _trials(db: Path) -> list[tuple]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT t.number, t.state, v.value, t.datetime_complete FROM trials t "
                               "LEFT JOIN trial_values v ON v.trial_id = t.trial_id ORDER BY t.number").fetchall()
    except sqlite3.Error:
        return []


def test_sigkill_mid_study_then_rerun_keeps_finished_trials(ft, tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"from_run: {ft['run']}\nbase: {ft['model']}\nmax_steps: 2\neval_steps: 1\nsave_steps: 100\n"
                   "lora_target_modules: [q_proj]\nevaluate: false\nper_device_train_batch_size: 4\n")
    study_dir = tmp_path / "study"
    db = study_dir / "study.db"
    cmd = [sys.executable, str(DRIVER), "study", str(cfg), str(study_dir), "2"]

    def mid_trial():  # a finished trial, and the next one running with its run directory made
        trials = _trials(db)
        return any(t[1] == "COMPLETE" for t in trials) and any(
            t[1] == "RUNNING" and (study_dir / "trials" / f"trial-{t[0]}").is_dir() for t in trials)

    _run_until(cmd, mid_trial, timeout=240, sleep=0.1)
    before = [t for t in _trials(db) if t[1] in ("COMPLETE", "PRUNED")]
    assert len(before) == 1
    done = subprocess.run(cmd, cwd=ROOT, env=_env(0.0), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _trials(db)
    finished = [t for t in after if t[1] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2
    assert all(t in after for t in before), "a finished trial was lost or re-run"
    stale = [t for t in after if t[1] == "FAIL"]
    # the trial killed mid-way (its worker is dead) is failed when the study resumes, its directory is marked, and
    # it does not count as finished, so the rerun ran one new trial instead
    assert len(stale) == 1 and len(after) == 3 and not any(t[1] == "RUNNING" for t in after)
    assert (study_dir / "trials" / f"trial-{stale[0][0]}" / "TRIAL_FAILED").is_file()
    assert (study_dir / "study.json").is_file() and (study_dir / "best_config.yaml").is_file()
    record_figures("kill_resume_study", finished_before=len(before), finished_after=len(finished),
                   stale_running=len(stale))
