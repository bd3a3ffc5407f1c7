"""Driver of the SIGKILL/resume test: runs ``compile.optimize.run_optimize`` on slow scripted DummyLMs.

Usage: ``python tests/reliability/driver_compile.py OUTPUT_DIR RUN_NAME``. Every LM call sleeps
``$NEXTOCC_DRIVER_SLEEP`` seconds (default 0.2) so a test can kill the process after some candidates were
flushed; each call is appended to ``OUTPUT_DIR/calls-<pid>.txt``
(``teacher`` or ``judge``; ``--candidates-done--`` ends phase 1). On success the results dict is printed as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from rel_helpers import DATA, answers  # noqa: E402


def slow_lm(calls: Path, sleep: float, who: str):
    from dspy.utils.dummies import DummyLM

    class SlowLM(DummyLM):
        def forward(self, *args, **kwargs):
            time.sleep(sleep)
            with open(calls, "a", encoding="utf-8") as fh:
                fh.write(who + "\n")
            return super().forward(*args, **kwargs)

    return SlowLM(answers())


def main(output_dir: str, run_name: str) -> int:
    import compile.optimize as optimize
    from compile.config import OptimizeConfig
    from compile.optimize import run_optimize

    sleep = float(os.environ.get("NEXTOCC_DRIVER_SLEEP", "0.2"))
    calls = Path(output_dir) / f"calls-{os.getpid()}.txt"
    generate = optimize.generate_candidates

    def generate_and_mark(*args, **kwargs):  # marks the end of the candidates phase in the call log
        stats = generate(*args, **kwargs)
        with open(calls, "a", encoding="utf-8") as fh:
            fh.write("--candidates-done--\n")
        return stats

    optimize.generate_candidates = generate_and_mark
    config = OptimizeConfig(dataset="synthetic", data_dir=str(DATA), synthetic_persons=60, n_train=4, n_dev=1,
                            n_test=1, candidates_per_person=3, optimizer="none", threads=1, retries=0,
                            output_dir=output_dir, run_name=run_name, teacher_lm="dummy", judge_lm="dummy")
    res = run_optimize(config, teacher_lm=slow_lm(calls, sleep, "teacher"), judge_lm=slow_lm(calls, sleep, "judge"))
    print(json.dumps({"candidates": res["candidates"], "run_dir": res["run_dir"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
