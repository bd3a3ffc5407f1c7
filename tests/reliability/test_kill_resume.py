"""Faults: ``kill -9`` of a compile run mid-way, then the same command again, resumes.

Finished candidates are reused (not regenerated: ``skipped`` in metrics.json and the teacher's call count), no line of
``candidates.jsonl`` is lost or duplicated, and every final artifact is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rel_helpers import HAVE_DATA, driver_env, record_figures, run_until_killed

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver_compile.py")
TOTAL = 12  # n_train 4 x candidates_per_person 3


def _complete_lines(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


@pytest.mark.skipif(not HAVE_DATA, reason="data mirror not available")
def test_sigkill_mid_compile_then_rerun_resumes(tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    cmd = [sys.executable, str(DRIVER), str(out), "killed"]
    cands = out / "killed" / "candidates.jsonl"
    proc = run_until_killed(cmd, lambda: len(_complete_lines(cands)) >= 3, cwd=ROOT, env=driver_env(0.1),
                            timeout=120)
    before = _complete_lines(cands)
    assert 3 <= len(before) < TOTAL, "the kill must land mid-run"
    assert not (out / "killed" / "metrics.json").exists()
    if cands.read_bytes().endswith(b"\n"):  # also cover a kill in the middle of a write: a torn last line
        with open(cands, "ab") as fh:
            fh.write(b'{"example_id": "torn", "candidate": 0, "reas')

    # the same command again (fast LMs so the test stays short)
    done = subprocess.run(cmd, cwd=ROOT, env=driver_env(0.0), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    after = _complete_lines(cands)
    assert cands.read_bytes().endswith(b"\n")
    assert after[: len(before)] == before, "a line written before the kill was lost or changed"
    keys = [(json.loads(x)["example_id"], json.loads(x)["candidate"]) for x in after]
    assert len(keys) == TOTAL and len(set(keys)) == TOTAL, "lines lost or duplicated"
    assert res["candidates"]["skipped"] == len(before)
    assert res["candidates"]["generated"] == TOTAL - len(before)
    metrics = json.loads((out / "killed" / "metrics.json").read_text())
    assert metrics["candidates"]["skipped"] == len(before)
    # phase 1 of the rerun asked the teacher only for the missing candidates (reason + predictor call each)
    rerun_calls = next(p for p in out.glob("calls-*.txt") if p.name != f"calls-{proc.pid}.txt")
    log = rerun_calls.read_text().splitlines()
    phase1 = log[: log.index("--candidates-done--")]
    assert phase1.count("teacher") == 2 * (TOTAL - len(before))
    assert phase1.count("judge") == 3 * (TOTAL - len(before))
    for name in ("program.json", "metrics.json", "report.md", "sft_reason.jsonl", "sft_predict.jsonl",
                 "dpo_reason.jsonl", "data_card.md", "config.yaml", "log.txt"):
        assert (out / "killed" / name).is_file(), name
    record_figures("kill_resume_compile", lines_at_kill=len(before), total=TOTAL,
                   skipped=res["candidates"]["skipped"], regenerated=res["candidates"]["generated"])
