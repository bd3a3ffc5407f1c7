"""Optuna hyper-parameter studies over distill runs: ``python -m finetune.study``.

Examples::

    python -m finetune.study --distill_config configs/distill_demo.yaml --n_trials 12 --metric eval_loss
    python -m finetune.study --distill_config cfg.yaml --metric AccRM --storage postgresql://user@host/db --n_trials 40

Each trial samples LoRA/SFT parameters (learning rate, rank, alpha multiplier, dropout, epochs), runs
:func:`finetune.distill.run_distill` into ``<study_dir>/trials/trial-<n>`` (recorded as the trial's ``run_dir``
user attribute) and returns the objective. Sampler: seeded ``TPESampler``; pruner: ``MedianPruner`` fed by the eval
loss of every evaluation (per epoch, or every ``eval_steps``) through :class:`OptunaPruningCallback`.

Objective: ``--metric eval_loss`` (minimized; mean over the SFT stages) or a program metric such as ``AccRM``
(maximized; from the before/after evaluation of the student on the compile run's dev split). **Fallback:** when the
DSPy-program evaluation is unavailable, the trial's value is ``-eval_loss`` (so "maximize" still prefers lower loss)
and the trial's ``objective`` user attribute says ``eval_loss (fallback)``.

Storage: any SQLAlchemy URL (default ``sqlite:///<study_dir>/study.db``); a PostgreSQL/MySQL URL lets many machines
share one study; ``journal:PATH`` (or a path ending in ``.log``) is Optuna's ``JournalStorage`` on a file, with no
database. ``load_if_exists=True`` and ``--n_trials`` counting *finished* trials make a re-run continue an
interrupted study: a RUNNING trial of a dead worker on this host (e.g. SIGKILLed) is failed on resume and its run
directory gets a ``TRIAL_FAILED`` file (other hosts: the RDB heartbeat fails it after 180 s); the resumed sampler's
seed is derived from ``--seed`` and the stored trials, so it does not repeat their configurations (TPE with
``constant_liar=True`` for parallel workers). Outputs:
``optimization_history.png``, ``param_importances.png``, ``best_config.yaml`` (ready for ``finetune.distill``) and
``study.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from finetune.config import DistillConfig, parse_config
from runkit.cli import run_cli
from runkit.study import StudyOptions, open_study, optimize_until, report_study, save_outputs

logger = logging.getLogger(__name__)


@dataclass
class StudyConfig(StudyOptions):
    """Optuna study over distill runs (search space, sampler, pruner, storage)."""

    distill_config: str | None = field(default=None, metadata={"help": "YAML of DistillConfig fields every trial starts from."})
    from_run: str | None = field(default=None, metadata={"help": "Compile run (overrides the distill config's from_run)."})
    base: str | None = field(default=None, metadata={"help": "Base model spec (overrides the distill config)."})
    max_steps: int | None = field(default=None, metadata={"help": "Steps per trial stage (overrides the distill config)."})
    study_name: str = field(default="distill", metadata={"help": "Optuna study name (shared by all workers)."})
    metric: str = field(default="eval_loss", metadata={"help": "Objective: eval_loss (minimize) or a program metric like AccRM (maximize)."})
    lr_min: float = field(default=1e-5, metadata={"help": "Lowest learning rate (log scale)."})
    lr_max: float = field(default=1e-3, metadata={"help": "Highest learning rate (log scale)."})
    lora_r_choices: list[int] = field(default_factory=lambda: [4, 8, 16, 32], metadata={"help": "LoRA ranks to try."})
    alpha_multipliers: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "lora_alpha = r * one of these."})
    dropout_max: float = field(default=0.1, metadata={"help": "Highest LoRA dropout (uniform from 0)."})
    epoch_choices: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0], metadata={"help": "num_train_epochs to try (used when max_steps is -1)."})

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.lr_min <= self.lr_max:
            raise ValueError("need 0 < lr_min <= lr_max.")
        if not self.lora_r_choices or not self.alpha_multipliers or not self.epoch_choices:
            raise ValueError("lora_r_choices, alpha_multipliers and epoch_choices must not be empty.")

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "eval_loss" else "maximize"


class OptunaPruningCallback(TrainerCallback):
    """Reports each evaluation's ``eval_loss`` to the trial and stops a trial the pruner rejects.

    ``step_offset`` keeps the reported steps increasing across the stages of a two-model run.
    """

    def __init__(self, trial: Any, step_offset: int = 0):
        self.trial = trial
        self.step_offset = step_offset

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna

        if not metrics or "eval_loss" not in metrics:
            return
        step = self.step_offset + state.global_step
        self.trial.report(float(metrics["eval_loss"]), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (eval_loss {metrics['eval_loss']:.4f})")

    def on_train_end(self, args, state, control, **kwargs):
        self.step_offset += state.global_step


def base_distill_config(config: StudyConfig) -> dict[str, Any]:
    """The distill fields every trial starts from (YAML + study overrides), validated once."""
    values: dict[str, Any] = {}
    if config.distill_config:
        values = dataclasses.asdict(parse_config(DistillConfig, ["--config", config.distill_config]))
    for key in ("from_run", "base", "max_steps"):
        if getattr(config, key) is not None:
            values[key] = getattr(config, key)
    values.update(resume=False, run_name=None)
    DistillConfig(**values)  # validation: fails before any trial runs
    return values


def sample_params(trial: Any, config: StudyConfig, use_epochs: bool) -> dict[str, Any]:
    """The trial's DistillConfig overrides sampled from the search space."""
    r = trial.suggest_categorical("lora_r", config.lora_r_choices)
    params = {
        "learning_rate": trial.suggest_float("learning_rate", config.lr_min, config.lr_max, log=True),
        "lora_r": r,
        "lora_alpha": r * trial.suggest_categorical("alpha_multiplier", config.alpha_multipliers),
        "lora_dropout": trial.suggest_float("lora_dropout", 0.0, config.dropout_max),
    }
    if use_epochs:
        params["num_train_epochs"] = trial.suggest_categorical("num_train_epochs", config.epoch_choices)
    return params


def make_objective(config: StudyConfig, base: dict[str, Any]):
    """The Optuna objective: one distill run per trial."""
    from finetune.distill import run_distill  # deferred: distill brings torch, not needed to parse the config

    def objective(trial):
        params = sample_params(trial, config, use_epochs=base.get("max_steps", -1) == -1)
        run_name = f"trial-{trial.number}"
        values = {**base, **params, "output_dir": str(Path(config.study_dir) / "trials"), "run_name": run_name,
                  "evaluate": config.metric != "eval_loss", "eval_split": "dev"}
        if not values.get("eval_fraction"):
            values["eval_fraction"] = 0.1  # pruning and the loss objective need held-out rows
        trial.set_user_attr("run_dir", str(Path(values["output_dir"]) / run_name))
        trial.set_user_attr("distill_params", params)
        results = run_distill(DistillConfig(**values), callbacks=[OptunaPruningCallback(trial)])
        losses = [s["eval_loss"] for k, s in results["stages"].items() if "eval_loss" in s]
        eval_loss = sum(losses) / len(losses) if losses else float("nan")
        trial.set_user_attr("eval_loss", eval_loss)
        if config.metric == "eval_loss":
            trial.set_user_attr("objective", "eval_loss")
            return eval_loss
        after = results["evaluation"].get("after") or {}
        if after.get("available") and config.metric in after.get("metrics", {}):
            trial.set_user_attr("objective", config.metric)
            return float(after["metrics"][config.metric])
        trial.set_user_attr("objective", "eval_loss (fallback)")
        trial.set_user_attr("fallback_reason", results["evaluation"].get("reason"))
        return -eval_loss

    return objective


def run_study(config: StudyConfig) -> dict[str, Any]:
    """Run (or continue) the study until it has ``n_trials`` finished trials or ``timeout`` passes."""
    base = base_distill_config(config)
    study = open_study(config)
    optimize_until(study, make_objective(config, base), config.n_trials, config.timeout)
    return save_outputs(study, config, base)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    return run_cli(lambda: parse_config(StudyConfig, argv), run_study, report_study, error_code=2)


if __name__ == "__main__":
    sys.exit(main())
