"""Reads a distill run directory for its consumers (the paper claims, notebooks).

A distill run (:mod:`finetune.distill`) holds ``metrics.json`` (``students``: the reasoner/predictor specs
``local:<base>+<run>/<stage>/adapter``, ``mode``, ``evaluation``), ``config.yaml`` and one folder per stage with its
``adapter/``. A run whose ``metrics.json`` is not written yet (an interrupted run) still offers the adapters on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lms.model_store import DEFAULT_SPEC, is_local_spec
from programs.hybrid import BASELINE_FILE
from runkit.files import read_mapping

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
REASONER_STAGES = ("reason_dpo", "joint", "hybrid", "reason")  # the reason step's adapter, best first
PREDICTOR_STAGES = ("joint", "hybrid", "predict")


def read_distill_run(path: Path | None) -> dict[str, Any]:
    """Reads a distill run directory.

    Returns:
        ``{"available": bool, "reason", "mode", "students": {"reasoner", "predictor"}, "evaluation", "path"}`` (a
        hybrid student also ``baseline``, its baseline file, and ``k_candidates``); the students come from
        ``metrics.json`` (``students``), else from the adapters on disk (``<stage>/adapter``) and the base of
        ``config.yaml``.
    """
    out: dict[str, Any] = {"available": False, "path": str(path) if path else None, "students": {}, "mode": None,
                           "evaluation": None, "reason": ""}
    if path is None:
        out["reason"] = "no distill run configured"
        return out
    if not path.is_dir():
        out["reason"] = f"{path} does not exist"
        return out
    metrics = read_mapping(path / METRICS_FILE) if (path / METRICS_FILE).is_file() else {}
    cfg = read_mapping(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else {}
    out["mode"] = metrics.get("mode") or cfg.get("mode")
    out["evaluation"] = metrics.get("evaluation")
    students = metrics.get("students") if isinstance(metrics.get("students"), dict) else {}
    if not students:
        base = metrics.get("base") or cfg.get("base") or DEFAULT_SPEC
        base = base if is_local_spec(str(base)) else f"local:{base}"

        def adapter(*stages: str) -> str | None:
            for s in stages:
                if (path / s / "adapter").is_dir():
                    return f"{base}+{(path / s / 'adapter').resolve()}"
            return None

        reasoner = adapter(*REASONER_STAGES)
        predictor = adapter(*PREDICTOR_STAGES)
        students = {k: v for k, v in (("reasoner", reasoner), ("predictor", predictor)) if v}
    out["students"] = dict(students)
    hybrid = metrics.get("hybrid") if isinstance(metrics.get("hybrid"), dict) else {}
    if out["mode"] == "hybrid":
        out["baseline"] = str(path / hybrid.get("baseline", BASELINE_FILE))
        out["k_candidates"] = int(hybrid.get("k_candidates", 5))
    if not students:
        out["reason"] = f"{path} has no students yet (no metrics.json 'students' and no <stage>/adapter)"
        return out
    gone = [spec.split("+", 1)[1] for spec in students.values()
            if isinstance(spec, str) and "+" in spec and not Path(spec.split("+", 1)[1]).expanduser().is_dir()]
    if gone:
        out["reason"] = f"{path}: adapter folder(s) missing: {', '.join(gone)}"
        return out
    if out["mode"] == "hybrid" and not Path(out["baseline"]).is_file():
        out["reason"] = f"{path} is a hybrid student without its baseline file {out['baseline']}"
        return out
    out["available"] = True
    return out
