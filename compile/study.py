"""Optuna studies over compile runs: ``python -m compile.study``.

Example::

    python -m compile.study --compile_config configs/demo.yaml --n_trials 8 --metric AccRM
    python -m compile.study --compile_config configs/paper.yaml --storage postgresql://user@host/db --n_trials 40

Each trial samples the compile knobs -- candidates per person, sampling temperature, the per-criterion oracle
thresholds and the optimizer's demo counts -- runs :func:`compile.optimize.run_optimize` into
``<study_dir>/trials/trial-<n>`` (the trial's ``run_dir`` user attribute) and returns the optimized program's dev
score (``--metric``, default AccRM; maximized). The pruner (``MedianPruner``) is fed one intermediate value per
trial, the share of training examples that obtained an oracle reason after the candidates phase, so trials whose
thresholds leave almost no oracle reasons stop before the expensive optimization phase.

Sampler, storage, resume and outputs are those of :mod:`runkit.study` (as in ``finetune.study``): ``TPESampler`` (``constant_liar``; a
resumed worker's seed derived from ``--seed`` and the stored trials, so no configuration is repeated), any
SQLAlchemy URL or ``journal:PATH`` (default ``sqlite:///<study_dir>/study.db``; ``load_if_exists`` so a re-run
continues the study; RUNNING trials of a killed worker are failed and their directories get ``TRIAL_FAILED``),
``optimization_history.png``, ``param_importances.png``, ``best_config.yaml`` (ready for ``compile.optimize
--config``) and ``study.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compile.config import OPTIMIZER_FLAGS, OptimizeConfig
from compile.optimize import run_optimize
from lms.resolve import lm_spec
from runkit.cli import run_cli
from runkit.config import load_config
from runkit.study import StudyOptions, open_study, optimize_until, report_study, save_outputs

logger = logging.getLogger(__name__)


@dataclass
class CompileStudyConfig(StudyOptions):
    """Optuna study over compile runs (search space, sampler, pruner, storage)."""

    compile_config: str | None = field(default=None, metadata={"help": "YAML of OptimizeConfig fields every trial starts from."})
    teacher_lm: str | dict[str, Any] | None = field(default=None, metadata={"help": "Teacher LM of every trial (string or mapping {model, api_base, api_key_env, max_tokens, temperature, num_retries}); overrides compile_config."})
    judge_lm: str | dict[str, Any] | None = field(default=None, metadata={"help": "Judge LM of every trial (string or mapping); overrides compile_config."})
    api_base: str | None = field(default=None, metadata={"help": "Default API base URL of remote string specs of every trial; overrides compile_config."})
    study_name: str = field(default="compile", metadata={"help": "Optuna study name (shared by all workers)."})
    study_dir: str = field(default="runs/compile_study", metadata={"help": "Folder of trial runs, plots and the best config."})
    n_trials: int = field(default=8, metadata={"help": "Finished (complete or pruned) trials the study should reach."})
    metric: str = field(default="AccRM", metadata={"help": "Dev metric of the optimized program to maximize (AccEM, AccRM, MRR, ...)."})
    candidates_choices: list[int] = field(default_factory=lambda: [2, 3, 4, 6], metadata={"help": "Candidates per person to try."})
    temperature_min: float = field(default=0.5, metadata={"help": "Lowest sampling temperature."})
    temperature_max: float = field(default=1.2, metadata={"help": "Highest sampling temperature."})
    threshold_choices: list[int] = field(default_factory=lambda: [2, 3, 4], metadata={"help": "Per-criterion thresholds to try."})
    demo_choices: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Bootstrapped/labeled demo counts to try."})

    def __post_init__(self):
        self.teacher_lm = lm_spec(self.teacher_lm, role="teacher_lm")
        self.judge_lm = lm_spec(self.judge_lm, role="judge_lm")
        super().__post_init__()
        if not 0 <= self.temperature_min <= self.temperature_max <= 2:
            raise ValueError("need 0 <= temperature_min <= temperature_max <= 2.")
        if not self.candidates_choices or not self.threshold_choices or not self.demo_choices:
            raise ValueError("candidates_choices, threshold_choices and demo_choices must not be empty.")


def base_compile_config(config: CompileStudyConfig) -> dict[str, Any]:
    """The compile fields every trial starts from, validated once before any trial runs."""
    values: dict[str, Any] = {}
    if config.compile_config:
        values = dataclasses.asdict(load_config(OptimizeConfig, ["--config", config.compile_config]))
    values["run_name"] = None
    for role in ("teacher_lm", "judge_lm", "api_base"):
        if getattr(config, role) is not None:
            values[role] = getattr(config, role)
    OptimizeConfig(**values)
    return values


def sample_params(trial: Any, config: CompileStudyConfig, optimizer: str = "bootstrap") -> dict[str, Any]:
    """The trial's OptimizeConfig overrides sampled from the search space (demo counts only for optimizers that
    read them)."""
    params = {
        "candidates_per_person": trial.suggest_categorical("candidates_per_person", config.candidates_choices),
        "temperature": trial.suggest_float("temperature", config.temperature_min, config.temperature_max),
    }
    for name in ("max_bootstrapped_demos", "max_labeled_demos"):
        if optimizer in OPTIMIZER_FLAGS[name]:
            params[name] = trial.suggest_categorical(name, config.demo_choices)
    for crit in ("factuality", "coherence", "utility"):
        params[f"threshold_{crit}"] = trial.suggest_categorical(f"threshold_{crit}", config.threshold_choices)
    return params


def make_objective(config: CompileStudyConfig, base: dict[str, Any], **lms: Any):
    """The Optuna objective: one compile run per trial (``lms``: ready teacher_lm/judge_lm for tests)."""
    import optuna

    def objective(trial):
        params = sample_params(trial, config, base.get("optimizer", "bootstrap"))
        run_name = f"trial-{trial.number}"
        values = {**base, **params, "output_dir": str(Path(config.study_dir) / "trials"), "run_name": run_name}
        trial.set_user_attr("run_dir", str(Path(values["output_dir"]) / run_name))
        trial.set_user_attr("config_params", params)

        def on_phase(name: str, partial: dict) -> None:
            share = partial["oracles"] / max(1, partial["train"])
            trial.report(share, step=0)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {name}: oracle share {share:.2f}")

        results = run_optimize(OptimizeConfig(**values), on_phase=on_phase, **lms)
        dev = results["evaluation"].get("optimized/dev") or results["evaluation"].get("optimized/test")
        if not dev or config.metric not in dev:
            raise RuntimeError(f"trial {trial.number}: no optimized dev metric {config.metric!r} (n_dev is 0?).")
        trial.set_user_attr("oracles", results["oracles"])
        return float(dev[config.metric])

    return objective


def run_study(config: CompileStudyConfig, **lms: Any) -> dict[str, Any]:
    """Run (or continue) the study until it has ``n_trials`` finished trials or ``timeout`` passes."""
    base = base_compile_config(config)
    study = open_study(config)
    optimize_until(study, make_objective(config, base, **lms), config.n_trials, config.timeout)
    return save_outputs(study, config, base)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    return run_cli(lambda: load_config(CompileStudyConfig, argv, description=__doc__.split("\n\n")[0]), run_study,
                   report_study, errors=(ValueError, FileNotFoundError), error_code=2)


if __name__ == "__main__":
    sys.exit(main())
