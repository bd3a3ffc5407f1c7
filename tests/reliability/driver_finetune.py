"""Driver of the distill/study SIGKILL-resume tests (tiny model from ``tests/finetune/ft_helpers.py``).

Usage::

    python tests/reliability/driver_finetune.py distill COMPILE_RUN MODEL_DIR OUTPUT_DIR RUN_NAME
    python tests/reliability/driver_finetune.py study DISTILL_YAML STUDY_DIR N_TRIALS

Every training step sleeps ``$NEXTOCC_DRIVER_SLEEP`` seconds (default 0.3) so a test can kill the process after a
checkpoint (distill) or a finished trial (study); distill always runs with ``--resume true`` so the same command
starts and continues the run. On success the results dict is printed as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TARGETS = ["q_proj", "v_proj"]


def _slow_callbacks():
    from transformers import TrainerCallback

    sleep = float(os.environ.get("NEXTOCC_DRIVER_SLEEP", "0.3"))

    class Slow(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            time.sleep(sleep)

    return [Slow()]


def _patch_run_distill():
    import finetune.distill as distill

    inner = distill.run_distill

    def slow_run_distill(config, callbacks=None):
        return inner(config, callbacks=list(callbacks or []) + _slow_callbacks())

    distill.run_distill = slow_run_distill


def main(argv: list[str]) -> int:
    kind = argv[0]
    _patch_run_distill()
    if kind == "distill":
        from finetune.config import DistillConfig
        from finetune.distill import run_distill

        compile_run, model_dir, output_dir, run_name = argv[1:5]
        config = DistillConfig(from_run=compile_run, base=model_dir, output_dir=output_dir, run_name=run_name,
                               resume=True, max_steps=6, save_steps=1, per_device_train_batch_size=2, lora_r=4,
                               lora_alpha=8, lora_target_modules=TARGETS, learning_rate=5e-3, evaluate=False,
                               eval_fraction=0.0)
        res = run_distill(config)
        print(json.dumps({"stages": res["stages"], "students": res["students"]}, default=str))
        return 0
    if kind == "study":
        from finetune.study import StudyConfig, run_study

        distill_yaml, study_dir, n_trials = argv[1:4]
        res = run_study(StudyConfig(distill_config=distill_yaml, study_dir=study_dir, n_trials=int(n_trials),
                                    n_startup_trials=1, seed=3))
        print(json.dumps({"trials": res["trials"], "n_complete": res["n_complete"]}, default=str))
        return 0
    raise SystemExit(f"unknown driver kind {kind!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
