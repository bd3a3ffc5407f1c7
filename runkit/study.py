"""Optuna plumbing shared by ``compile.study`` and ``finetune.study``: options, storage, resume, outputs.

:class:`StudyOptions` holds the fields every study config has. :func:`open_study` creates or loads a study
(:func:`make_storage`: any SQLAlchemy URL, default ``sqlite:///<study_dir>/study.db``, or ``journal:PATH`` for an Optuna
journal file; ``load_if_exists`` so a re-run continues it; RUNNING trials of a dead local worker are failed first and
their run directories get ``TRIAL_FAILED``); the sampler is a ``TPESampler`` (``constant_liar``) whose seed a resumed
worker derives from ``seed`` and the stored trials (:func:`worker_seed`), the pruner a ``MedianPruner``.
:func:`optimize_until` runs trials until ``n_trials`` finished; :func:`save_outputs` writes
``optimization_history.png``, ``param_importances.png``, ``best_config.yaml`` and ``study.json``.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)


@dataclass
class StudyOptions:
    """The fields of every Optuna study config (search spaces are the subclasses')."""

    study_name: str = field(default="study", metadata={"help": "Optuna study name (shared by all workers)."})
    study_dir: str = field(default="runs/study", metadata={"help": "Folder of the study's trial runs, plots and best config."})
    storage: str | None = field(default=None, metadata={"help": "SQLAlchemy URL, or journal:PATH / PATH.log for an Optuna journal file (default: sqlite:///<study_dir>/study.db)."})
    n_trials: int = field(default=10, metadata={"help": "Finished (complete or pruned) trials the study should reach."})
    timeout: float | None = field(default=None, metadata={"help": "Stop starting trials after this many seconds."})
    metric: str = field(default="AccRM", metadata={"help": "The objective metric."})
    seed: int = field(default=0, metadata={"help": "Seed of the TPE sampler (a resumed or added worker derives its own from it and the stored trials)."})
    n_startup_trials: int = field(default=3, metadata={"help": "Random trials before TPE (and before pruning starts)."})

    def __post_init__(self):
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {self.n_trials}.")

    @property
    def direction(self) -> str:
        return "maximize"


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


def save_outputs(study: Any, config: Any, base: dict[str, Any]) -> dict[str, Any]:
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


def report_study(summary: dict[str, Any]) -> int:
    """Prints a study summary (without the trials); exit status 1 when no trial completed."""
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=2, default=str))
    if not summary["n_complete"]:
        sys.stdout.flush()
        print(f"error: no trial of study {summary['study_name']!r} completed ({summary['n_failed']} failed, "
              f"{summary['n_pruned']} pruned); see the trials' log.txt and metrics.json.", file=sys.stderr)
        return 1
    return 0
