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
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from finetune.config import DistillConfig, parse_config

logger = logging.getLogger(__name__)


@dataclass
class StudyConfig:
    """Optuna study over distill runs (search space, sampler, pruner, storage)."""

    distill_config: str | None = field(default=None, metadata={"help": "YAML of DistillConfig fields every trial starts from."})
    from_run: str | None = field(default=None, metadata={"help": "Compile run (overrides the distill config's from_run)."})
    base: str | None = field(default=None, metadata={"help": "Base model spec (overrides the distill config)."})
    max_steps: int | None = field(default=None, metadata={"help": "Steps per trial stage (overrides the distill config)."})
    study_name: str = field(default="distill", metadata={"help": "Optuna study name (shared by all workers)."})
    study_dir: str = field(default="runs/study", metadata={"help": "Folder of the study's trial runs, plots and best config."})
    storage: str | None = field(default=None, metadata={"help": "SQLAlchemy URL, or journal:PATH / PATH.log for an Optuna journal file (default: sqlite:///<study_dir>/study.db)."})
    n_trials: int = field(default=10, metadata={"help": "Finished (complete or pruned) trials the study should reach."})
    timeout: float | None = field(default=None, metadata={"help": "Stop starting trials after this many seconds."})
    metric: str = field(default="eval_loss", metadata={"help": "Objective: eval_loss (minimize) or a program metric like AccRM (maximize)."})
    seed: int = field(default=0, metadata={"help": "Seed of the TPE sampler (a resumed or added worker derives its own from it and the stored trials)."})
    n_startup_trials: int = field(default=3, metadata={"help": "Random trials before TPE (and before pruning starts)."})
    lr_min: float = field(default=1e-5, metadata={"help": "Lowest learning rate (log scale)."})
    lr_max: float = field(default=1e-3, metadata={"help": "Highest learning rate (log scale)."})
    lora_r_choices: list[int] = field(default_factory=lambda: [4, 8, 16, 32], metadata={"help": "LoRA ranks to try."})
    alpha_multipliers: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "lora_alpha = r * one of these."})
    dropout_max: float = field(default=0.1, metadata={"help": "Highest LoRA dropout (uniform from 0)."})
    epoch_choices: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0], metadata={"help": "num_train_epochs to try (used when max_steps is -1)."})

    def __post_init__(self):
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {self.n_trials}.")
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
    from finetune.distill import run_distill

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


JOURNAL_PREFIX = "journal:"


def _is_journal(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX) or ("://" not in url and url.endswith((".log", ".journal")))


def make_storage(url: str | None, study_dir: str | Path) -> Any:
    """The study's storage: an SQLAlchemy URL (``RDBStorage`` with heartbeats; default
    ``sqlite:///<study_dir>/study.db``), or an Optuna journal file -- ``journal:PATH`` or a path ending in ``.log``
    -- through ``JournalStorage(JournalFileBackend(PATH))`` (no database; many processes on one file system)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    url = url or f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if _is_journal(url):
            path = Path(url[len(JOURNAL_PREFIX):] if url.startswith(JOURNAL_PREFIX) else url).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        # a trial of a dead worker on another machine is failed after the grace period (not retried: the sampler
        # proposes a new configuration instead of repeating one)
        return RDBStorage(url, heartbeat_interval=60, grace_period=180)


def worker_id() -> str:
    """``host:pid`` of this process (stored on each trial, to find the trials of dead workers)."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study: Any) -> list[int]:
    """Fails the RUNNING trials whose worker on this host is dead (e.g. SIGKILLed) and marks their run directories.

    Each such trial gets the user attribute ``stale`` and state FAIL; its ``run_dir`` (when it exists) gets a
    ``TRIAL_FAILED`` file saying why. Trials of live workers and of other hosts are left alone (other hosts: the
    RDB heartbeat fails them after its grace period).

    Returns:
        The numbers of the trials failed.
    """
    import socket

    import optuna

    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(t.user_attrs.get("worker") or "")
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        reason = f"worker {worker} died while the trial was RUNNING; failed when the study resumed"
        storage = study._storage
        storage.set_trial_user_attr(t._trial_id, "stale", reason)
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        run_dir = t.user_attrs.get("run_dir")
        if run_dir and Path(run_dir).is_dir():
            (Path(run_dir) / "TRIAL_FAILED").write_text(f"trial {t.number}: {reason}\n", encoding="utf-8")
        logger.warning("Trial %d: %s", t.number, reason)
        failed.append(t.number)
    return failed


def worker_seed(seed: int, n_stored: int) -> int:
    """The sampler seed of a worker: ``seed`` for a new study; derived from ``seed``, the number of stored trials
    and this process otherwise, so a resumed (or an added) worker does not replay the configurations already tried."""
    import hashlib

    if n_stored == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{n_stored}/{worker_id()}".encode()).hexdigest()
    return int(digest[:8], 16)


def _tagging_sampler(**kwargs: Any) -> Any:
    """A ``TPESampler`` that records this worker on each trial as soon as it is created (``before_trial``), so a
    worker killed even before its objective starts is recognised on resume."""
    import optuna

    class TaggingTPESampler(optuna.samplers.TPESampler):
        def before_trial(self, study, trial):
            study._storage.set_trial_user_attr(trial._trial_id, "worker", worker_id())
            super().before_trial(study, trial)

    return TaggingTPESampler(**kwargs)


def open_study(config: Any):
    """Create or load the study (shared by ``finetune.study`` and ``compile.study``).

    Storage from :func:`make_storage`; stale RUNNING trials of dead local workers are failed first
    (:func:`fail_stale_trials`); then a ``TPESampler`` with ``constant_liar=True`` (parallel workers) seeded by
    :func:`worker_seed`, and a ``MedianPruner``.
    """
    import optuna

    Path(config.study_dir).mkdir(parents=True, exist_ok=True)
    storage = make_storage(config.storage, config.study_dir)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials, n_warmup_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=config.study_name, storage=storage, pruner=pruner,
                                    sampler=optuna.samplers.RandomSampler(seed=config.seed),
                                    direction=config.direction, load_if_exists=True)
        stale = fail_stale_trials(study)
        n_stored = len(study.get_trials(deepcopy=False))
        seed = worker_seed(config.seed, n_stored)
        study.sampler = _tagging_sampler(seed=seed, n_startup_trials=config.n_startup_trials, constant_liar=True)
    study.set_user_attr("last_resume", {"stored_trials": n_stored, "stale_failed": stale, "sampler_seed": seed})
    if n_stored:
        logger.info("Study %s: %d stored trials (%d stale failed); sampler seed %d", config.study_name, n_stored,
                    len(stale), seed)
    return study


def save_outputs(study: Any, config: StudyConfig, base: dict[str, Any]) -> dict[str, Any]:
    """Plots (PNG), ``best_config.yaml`` and ``study.json`` in the study directory."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as ovm

    out = Path(config.study_dir)
    files: dict[str, Any] = {}
    for name, plot in (("optimization_history", ovm.plot_optimization_history),
                       ("param_importances", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study)
            ax = ax[0] if hasattr(ax, "__len__") else ax
            ax.figure.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
            matplotlib.pyplot.close(ax.figure)
            files[name] = str(out / f"{name}.png")
        except Exception as exc:  # noqa: BLE001 - e.g. too few finished trials for importances
            logger.warning("Plot %s skipped: %s", name, exc)
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    states = {state.name: sum(1 for t in trials if t.state == state) for state in optuna.trial.TrialState}
    configs = {json.dumps(t.params, sort_keys=True, default=str) for t in done}
    summary: dict[str, Any] = {"study_name": study.study_name, "direction": config.direction, "metric": config.metric,
                               "n_trials": len(trials), "n_complete": len(done), "n_pruned": states["PRUNED"],
                               "n_failed": states["FAIL"], "n_running": states["RUNNING"],
                               "distinct_complete_configs": len(configs),
                               "stale_failed": sorted(t.number for t in trials if t.user_attrs.get("stale")),
                               "plots": files}
    if done:
        best = study.best_trial
        best_cfg = {**base, **(best.user_attrs.get("config_params") or best.user_attrs.get("distill_params", {})),
                    "run_name": None}
        if "resume" in base:
            best_cfg["resume"] = False
        (out / "best_config.yaml").write_text(yaml.safe_dump(best_cfg, sort_keys=False), encoding="utf-8")
        summary.update(best_value=best.value, best_params=best.params, best_trial=best.number,
                       best_run_dir=best.user_attrs.get("run_dir"), best_config=str(out / "best_config.yaml"))
    summary["trials"] = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                          "run_dir": t.user_attrs.get("run_dir"), "objective": t.user_attrs.get("objective"),
                          **({"stale": t.user_attrs["stale"]} if t.user_attrs.get("stale") else {})}
                         for t in trials]
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary


def run_study(config: StudyConfig) -> dict[str, Any]:
    """Run (or continue) the study until it has ``n_trials`` finished trials or ``timeout`` passes."""

    base = base_distill_config(config)
    study = open_study(config)
    optimize_until(study, make_objective(config, base), config.n_trials, config.timeout)
    return save_outputs(study, config, base)


def optimize_until(study: Any, objective: Any, n_trials: int, timeout: float | None) -> None:
    """Runs trials until the study holds ``n_trials`` finished (complete or pruned) trials, or ``timeout`` passes."""
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=finished))
    me = worker_id()

    def tagged(trial):  # the worker is recorded first, so a resume can tell a dead worker's trial
        trial.set_user_attr("worker", me)
        return objective(trial)

    if remaining > 0:
        logger.info("Study %s: running %d more trial(s)", study.study_name, remaining)
        study.optimize(tagged, n_trials=remaining, timeout=timeout, catch=(RuntimeError,), gc_after_trial=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run_study(parse_config(StudyConfig, argv))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=2, default=str))
    if not summary["n_complete"]:
        sys.stdout.flush()
        print(f"error: no trial of study {summary['study_name']!r} completed ({summary['n_failed']} failed, "
              f"{summary['n_pruned']} pruned); see the trials' log.txt and metrics.json.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
