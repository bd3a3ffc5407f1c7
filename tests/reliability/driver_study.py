"""Driver of the study SIGKILL/resume test: ``compile.study.run_study`` on slow scripted DummyLMs.

Usage: ``python tests/reliability/driver_study.py STUDY_DIR N_TRIALS``. Every LM call sleeps ``$NEXTOCC_DRIVER_SLEEP``
seconds so the test can kill the process inside a trial; the summary is printed as JSON on success.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from rel_helpers import DATA, answers  # noqa: E402


def slow_lm(sleep: float):
    from dspy.utils.dummies import DummyLM

    class SlowLM(DummyLM):
        def forward(self, *args, **kwargs):
            time.sleep(sleep)
            return super().forward(*args, **kwargs)

    return SlowLM(answers())


def main(study_dir: str, n_trials: str) -> int:
    from compile.study import CompileStudyConfig, run_study

    sleep = float(os.environ.get("NEXTOCC_DRIVER_SLEEP", "0.05"))
    base = Path(study_dir) / "base.yaml"
    base.parent.mkdir(parents=True, exist_ok=True)
    base.write_text(yaml.safe_dump(dict(dataset="synthetic", data_dir=str(DATA), synthetic_persons=60, n_train=2,
                                        n_dev=1, n_test=0, optimizer="none", threads=1, eval_judge=False,
                                        teacher_lm="dummy", judge_lm="dummy")))
    cfg = CompileStudyConfig(compile_config=str(base), study_dir=study_dir, n_trials=int(n_trials), seed=0,
                             n_startup_trials=10, candidates_choices=[1, 2], threshold_choices=[1])
    summary = run_study(cfg, teacher_lm=slow_lm(sleep), judge_lm=slow_lm(sleep))
    print(json.dumps({k: v for k, v in summary.items() if k != "plots"}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
