"""Shared helpers of the reliability tests: scripted DummyLMs, the data mirror, a counter of fuzz figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dspy.utils.dummies import DummyLM

DATA = Path(os.environ.get("NEXTOCC_DATA_DIR") or "/work/shared/data")
HAVE_DATA = (DATA / "onet" / "Occupation Data.txt").is_file()
REASON = "Moved from stocking shelves to the register and stayed in retail."
FIGURES = Path(os.environ.get("NEXTOCC_RELIABILITY_FIGURES", "/tmp/nextocc_reliability_figures.jsonl"))


def answers(reason: str = REASON) -> dict[str, dict[str, str]]:
    """DummyLM answers for every signature of the pipeline (teacher, predictor, joint, judges)."""
    return {
        "`[[ ## factuality ## ]]`": {"errors": "none", "factuality": "5"},
        "`[[ ## coherence ## ]]`": {"justification": "ordered", "coherence": "4"},
        "`[[ ## utility ## ]]`": {"justification": "supports it", "utility": "4"},
        "starting with the field `[[ ## occupation ## ]]`": {"occupation": "Cashiers"},
        "starting with the field `[[ ## reason ## ]]`": {"reason": reason, "occupation": "Cashiers"},
    }


def scripted_lm(reason: str = REASON) -> DummyLM:
    """A DummyLM that answers every pipeline signature (dict mode: keyed by the output-format instruction)."""
    return DummyLM(answers(reason))


def record_figures(name: str, **figures) -> None:
    """Appends figures (inputs tried, rejections, ...) of one test to a JSONL file for the report."""
    with open(FIGURES, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"test": name, **figures}) + "\n")
    print(f"[reliability] {name}: {figures}")


def driver_env(sleep: float, **extra: str) -> dict:
    """The environment of a driver subprocess: offline, unbuffered, each LM call / step sleeping ``sleep`` s."""
    return dict(os.environ, NEXTOCC_DRIVER_SLEEP=str(sleep), HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True",
                PYTHONUNBUFFERED="1", TQDM_DISABLE="1", **extra)


def run_until_killed(cmd, ready, *, cwd, env, timeout: float = 180):
    """Starts ``cmd``, waits until ``ready()`` holds, then SIGKILLs it; fails clearly if it ends or stalls first."""
    import signal
    import subprocess
    import time

    import pytest

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail("driver ended before the kill: " + proc.stderr.read().decode()[-3000:])
            assert time.monotonic() < deadline, "the driver did not reach the kill point in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc
