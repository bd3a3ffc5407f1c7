"""``accelerate launch --num_processes 2`` of ``finetune.distill`` on CPU (gloo): one shared run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_cpu_processes_share_one_run_dir(compile_run, tiny_model_dir, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("the accelerate CLI is not installed beside this Python")
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "configs/accelerate/cpu_2proc.yaml"),
           "--num_processes", "2", "-m", "finetune.distill", "--from_run", str(compile_run),
           "--base", str(tiny_model_dir), "--max_steps", "2", "--per_device_train_batch_size", "2",
           "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj,v_proj", "--evaluate", "false",
           "--eval_fraction", "0", "--save_steps", "1", "--output_dir", str(out)]  # no --run_name: ranks must agree
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # one run directory for both ranks
    run = runs[0]
    assert {p.name for p in run.iterdir()} == {"config.yaml", "provenance.json", "metrics.json", "nextocc.json",
                                               "report.md", "joint"}
    stage = run / "joint"
    assert sorted(p.name for p in stage.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (stage / "adapter" / "adapter_model.safetensors").is_file()
    assert (stage / "training_curves.png").is_file() and (stage / "metrics.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stages"]["joint"]["global_step"] == 2
    assert json.loads((run / "provenance.json").read_text())["distributed"]["world_size"] == 2
    assert proc.stdout.count("run directory:") == 1  # only the main process reports
