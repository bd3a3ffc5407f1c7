"""configs/claims_laptop.yaml and its prerequisites (scripts/claims_laptop.sh, make claims-laptop): every config loads
through its CLI's own loader at the sizes the laptop run promises, and the script's skip/resume/selection logic."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from careers.datasets import load_splits
from compile.config import OptimizeConfig
from experiments.paper_claims import ALL_ROWS, ClaimsConfig
from finetune.config import DistillConfig, parse_config
from runkit.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
COMPILE = {"nlsy79": "compile_laptop.yaml", "synthetic": "compile_laptop_synthetic.yaml"}


def _compile(ds: str) -> OptimizeConfig:
    return load_config(OptimizeConfig, ["--config", str(CONFIGS / COMPILE[ds])])


def _claims() -> ClaimsConfig:
    return load_config(ClaimsConfig, ["--config", str(CONFIGS / "claims_laptop.yaml")])


@pytest.mark.parametrize("ds", sorted(COMPILE))
def test_compile_configs_are_the_evidence_setup_at_claims_scale(ds):
    cfg = _compile(ds)
    assert cfg.dataset == ds and cfg.evidence_teacher and cfg.judge_lm == "heuristic"
    assert cfg.n_train >= 2000 and cfg.mode == "joint" and cfg.seed == _claims().seed
    assert cfg.hybrid_baseline == "sequence"  # the hybrid student's traces, baseline.json and the GRU's weights
    # the claims config finds this run under its '{dataset}' template
    assert f"{cfg.output_dir}/{cfg.run_name}" == _claims().compile_run.replace("{dataset}", ds)


def test_distill_config_trains_one_epoch_over_1000_examples_per_student():
    for mode in ("joint", "two_model", "direct", "hybrid"):
        cfg = parse_config(DistillConfig, ["--config", str(CONFIGS / "distill_laptop.yaml"), "--mode", mode])
        assert cfg.max_steps == -1 and cfg.num_train_epochs >= 1
        assert cfg.max_train_rows * (1 - cfg.eval_fraction) >= 1000  # rows per program step after the eval split
        assert cfg.output_dir == "runs/distill" and not cfg.evaluate
    # the script trains the joint and hybrid students on their programs' single-call rows
    assert 'steps_flag="--train_steps reason+occupation"' in (ROOT / "scripts" / "claims_laptop.sh").read_text()


def test_claims_config_sizes_and_rows():
    cfg = _claims()
    assert set(cfg.datasets) == {"synthetic", "nlsy79"} and cfg.n_test >= 300
    # every row but the base-model hybrid, which no claim reads (it would cost the overnight budget ~0.6 h)
    assert [r for r in ALL_ROWS if r not in cfg.rows] == ["hybrid"] and "sequence" in cfg.rows
    assert "bayes_optimal" in cfg.rows and all(f"distilled_{m}" in cfg.rows for m in ("joint", "two_model", "direct", "hybrid"))
    syn = _compile("synthetic")
    assert (cfg.synthetic_persons, cfg.motives) == (syn.synthetic_persons, syn.motives) and syn.motives
    for mode in ("joint", "two_model", "direct", "hybrid"):
        assert getattr(cfg, f"distill_{mode}_run") == f"runs/distill/laptop-{{dataset}}-{mode}"


def test_synthetic_world_has_300_test_persons(taxonomy):
    cfg = _claims()
    splits = load_splits("synthetic", None, cfg.seed, synthetic_persons=cfg.synthetic_persons, motives=True,
                         taxonomy=taxonomy)
    assert len({ex.person_id for ex in splits.test}) >= cfg.n_test
    assert len({ex.person_id for ex in splits.train}) >= _compile("synthetic").n_train


FAKE_PY = r'''
import os, pathlib, subprocess, sys
args = sys.argv[1:]
if args[0] == "-c":  # the script's own YAML lookups
    sys.exit(subprocess.call([REAL, *args]))
with open("calls.log", "a") as log:
    log.write(" ".join(args) + "\n")
module = args[1]
opts = dict(zip(args[2::2], args[3::2]))
if os.environ.get("FAIL_ON") and os.environ["FAIL_ON"] in " ".join(args):
    sys.exit(3)
if module == "compile.optimize":
    out = pathlib.Path("runs/compile") / opts["--run_name"] / "metrics.json"
elif module == "finetune.distill":
    out = pathlib.Path("runs/distill") / opts["--run_name"] / "metrics.json"
else:
    out = pathlib.Path("runs/claims/laptop/claims.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("{}")
'''


@pytest.fixture
def laptop(tmp_path):
    """A copy of the script and configs with a fake interpreter that records each step and writes its output."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "claims_laptop.sh", tmp_path / "scripts")
    shutil.copytree(CONFIGS, tmp_path / "configs")
    fake = tmp_path / "fake_py"
    fake.write_text(f"#!{sys.executable}\nREAL = {sys.executable!r}\n{FAKE_PY}")
    fake.chmod(0o755)

    def run(**env):
        proc = subprocess.run(["bash", str(tmp_path / "scripts" / "claims_laptop.sh")], capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin", "PY": str(fake), **env}, timeout=60)
        log = tmp_path / "calls.log"
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return proc, calls

    return run


def test_script_runs_each_step_once_and_skips_finished_ones(laptop):
    proc, calls = laptop(DATASETS="nlsy79", STUDENTS="joint,direct")
    assert proc.returncode == 0, proc.stderr
    assert [c.split()[1] for c in calls] == ["compile.optimize", "finetune.distill", "finetune.distill",
                                             "experiments.paper_claims"]
    assert "--config configs/compile_laptop.yaml --run_name laptop-nlsy79" in calls[0]
    assert "--mode joint" in calls[1] and "--max_train_rows 1053" in calls[1] and "--resume true" in calls[1]
    assert "--train_steps reason+occupation" in calls[1]
    assert "--mode direct" in calls[2] and "--max_train_rows 1053" in calls[2] and "--train_steps" not in calls[2]
    assert "--datasets nlsy79" in calls[3]
    assert "student nlsy79 joint: training wall time" in proc.stdout
    assert "done: total wall time" in proc.stdout.splitlines()[-1]
    # everything done: nothing runs again
    proc, calls = laptop(DATASETS="nlsy79", STUDENTS="joint,direct")
    assert proc.returncode == 0 and calls == [] and "skipped" in proc.stdout
    # a new student trains alone; the compile run is reused and the claims are redone
    proc, calls = laptop(DATASETS="nlsy79", STUDENTS="two_model")
    assert [c.split()[1] for c in calls] == ["finetune.distill", "experiments.paper_claims"]
    assert "--mode two_model" in calls[0] and "--from_run runs/compile/laptop-nlsy79" in calls[0]
    proc, calls = laptop(DATASETS="nlsy79", STUDENTS="hybrid")  # its program's single-call rows, as the joint student
    assert "--mode hybrid" in calls[0] and "--max_train_rows 1053 --train_steps reason+occupation" in calls[0]


def test_script_stops_at_a_failed_step_and_rejects_unknown_names(laptop):
    proc, calls = laptop(DATASETS="synthetic", STUDENTS="joint", FAIL_ON="--mode joint")
    assert proc.returncode != 0 and [c.split()[1] for c in calls] == ["compile.optimize", "finetune.distill"]
    assert "compile_laptop_synthetic.yaml" in calls[0] and "training wall time" not in proc.stdout
    proc, calls = laptop(DATASETS="synthetic", STUDENTS="joint")  # the failed student is retried, compile is not
    assert proc.returncode == 0 and [c.split()[1] for c in calls] == ["finetune.distill", "experiments.paper_claims"]
    proc, calls = laptop(DATASETS="synthetic", STUDENTS="oracle")
    assert proc.returncode == 2 and "unknown student 'oracle'" in proc.stderr and calls == []
    proc, calls = laptop(DATASETS="nlsy79 esco")
    assert proc.returncode == 2 and "unknown dataset 'esco'" in proc.stderr and calls == []  # checked before any step


def _build_tiny_model(folder: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_ft_helpers", ROOT / "tests" / "finetune" / "ft_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers.build_tiny_model(folder)


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    """The real steps through the script on a tiny scale: offline compile on 16 synthetic persons, a 2-step joint
    student of a random 2-layer model, claims on 6 test persons (LM rows off); a re-run skips every step."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "claims_laptop.sh", tmp_path / "scripts")
    shutil.copytree(CONFIGS, tmp_path / "configs")
    tiny = _build_tiny_model(tmp_path / "tiny")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PY": sys.executable, "HOME": os.environ.get("HOME", str(tmp_path)),
           "NEXTOCC_DATA_DIR": str(Path(__file__).resolve().parents[3] / "shared" / "data"),
           "DATASETS": "synthetic", "STUDENTS": "joint hybrid",
           "COMPILE_ARGS": "--synthetic_persons 120 --n_train 16 --student_tokenizer null",
           # the tiny tokenizer needs more tokens than Gemma's for the same prompt
           "DISTILL_ARGS": f"--base {tiny} --max_train_rows 12 --max_steps 2 --save_steps 100 --eval_fraction 0 "
                           "--max_length 2048",
           "CLAIMS_ARGS": '--synthetic_persons 120 --n_test 6 --lm null --n_boot 100 '
                          '--baseline_options {"sequence":{"epochs":1,"hidden_size":8}}'}
    if os.environ.get("NEXTOCC_DATA_DIR"):
        env["NEXTOCC_DATA_DIR"] = str(Path(os.environ["NEXTOCC_DATA_DIR"]).resolve())  # the script runs elsewhere
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "claims_laptop.sh")], capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "student synthetic joint: training wall time" in proc.stdout
    compile_metrics = json.loads((tmp_path / "runs/compile/laptop-synthetic/metrics.json").read_text())
    assert compile_metrics["oracles"] >= 12 and compile_metrics["exports"]["sft_joint.jsonl"] > 0
    distill = json.loads((tmp_path / "runs/distill/laptop-synthetic-joint/metrics.json").read_text())
    assert distill["mode"] == "joint"
    hybrid = json.loads((tmp_path / "runs/distill/laptop-synthetic-hybrid/metrics.json").read_text())
    assert hybrid["mode"] == "hybrid" and hybrid["hybrid"]["k_candidates"] == 5
    ranked = compile_metrics["hybrid_export"]  # the laptop configs' ranked reasons: in-candidate golds only
    assert ranked["reasons"] == "ranked" and 0 < ranked["examples"] == ranked["gold_in_candidates"] <= compile_metrics["oracles"]
    assert compile_metrics["exports"]["sft_hybrid_joint.jsonl"] == 3 * ranked["examples"]
    claims = json.loads((tmp_path / "runs/claims/laptop/claims.json").read_text())
    rows = claims["datasets"]["synthetic"]["rows"]
    assert {n for n, r in rows.items() if r["status"] == "ok"} == {
        "frequency", "markov", "return_markov", "sequence", "distilled_joint", "distilled_hybrid", "bayes_optimal"}
    labels = {r["name"]: r["label"] for r in claims["datasets"]["synthetic"]["table"]}
    assert labels["distilled_hybrid"] == "Distilled hybrid (GRU + student)"  # the config's hybrid_baseline
    claim_ids = {c["id"]: c for c in claims["datasets"]["synthetic"]["claims"]}
    assert claim_ids["h2"]["status"] == "ok" and claim_ids["s"]["status"] == "ok" and "c2" in claim_ids
    assert rows["distilled_two_model"]["status"] == "not run" and "--mode two_model" in rows["distilled_two_model"][
        "command"]
    again = subprocess.run(["bash", str(tmp_path / "scripts" / "claims_laptop.sh")], capture_output=True, text=True,
                           env=env, timeout=120)
    assert again.returncode == 0 and again.stdout.count("skipped") == 4, again.stdout
