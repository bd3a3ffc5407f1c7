"""``kill -9`` of a compile study inside a trial, then the same command again: the killed trial is failed and its
directory marked, the resumed sampler repeats no configuration, and the summary counts each trial once (SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rel_helpers import HAVE_DATA, driver_env, record_figures, run_until_killed

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver_study.py")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DATA, reason="data mirror not available")
def test_sigkill_in_trial_two_resumes_without_repeating(tmp_path):
    study = tmp_path / "study"
    cmd = [sys.executable, str(DRIVER), str(study), "4"]
    killed_dir = study / "trials" / "trial-2"
    run_until_killed(cmd, lambda: (killed_dir / "candidates.jsonl").exists(), cwd=ROOT, env=driver_env(0.05),
                     timeout=240)

    done = subprocess.run(cmd, cwd=ROOT, env=driver_env(0.0), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    trials = summary["trials"]
    assert [t["number"] for t in trials] == list(range(len(trials))), "each trial once, in order"
    killed = trials[2]
    assert killed["state"] == "FAIL" and "died" in killed["stale"]
    assert (killed_dir / "TRIAL_FAILED").is_file()
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert len(complete) == 4 and summary["n_complete"] == 4 and summary["n_failed"] == 1
    assert summary["n_running"] == 0 and summary["stale_failed"] == [2]
    configs = [json.dumps(t["params"], sort_keys=True) for t in complete]
    assert len(set(configs)) == len(configs) == summary["distinct_complete_configs"], "a configuration was repeated"
    record_figures("kill_resume_study", trials=len(trials), complete=len(complete), distinct=len(set(configs)))
