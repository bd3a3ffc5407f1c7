"""Run-directory manifests of saved programs: file names, safe paths, and manifests of older compile/distill runs.

:meth:`programs.next_occupation.NextOccupation.save` writes ``nextocc.json`` (format :data:`MANIFEST_FORMAT`) next to
``program.json``; every path a manifest names is resolved inside the run directory (:func:`safe_child`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml

from lms.model_store import is_local_spec

PROGRAM_FILE = "program.json"
MANIFEST_FILE = "nextocc.json"
MANIFEST_FORMAT = "nextocc-program/1"


def safe_child(root: Path, relative: Any) -> Path:
    """Resolves a manifest path inside ``root``, rejecting absolute paths and traversal (``..``).

    Raises:
        ValueError: If the path is not a plain relative path that stays inside ``root``.
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise ValueError(f"Manifest path must be a non-empty string, got {relative!r}")
    rel = Path(relative)
    if rel.is_absolute() or relative.startswith(("/", "\\")) or ".." in rel.parts or ".." in relative.split("\\"):
        raise ValueError(f"Manifest path {relative!r} must be relative to the run directory without '..'")
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"Manifest path {relative!r} escapes the run directory {root}")
    return path


def adapter_specs(root: Path, manifest: dict) -> dict[str, str]:
    """Student specs ``local:<base>+<run>/<stage>/adapter`` from a distill manifest's relative adapter folders."""
    adapters, base = manifest.get("adapters"), manifest.get("base")
    if not adapters:
        return {}
    if not isinstance(adapters, dict) or not is_local_spec(base):
        raise ValueError(f"{root / MANIFEST_FILE}: 'adapters' needs a local 'base' spec and step: folder entries.")
    out = {}
    for step, rel in adapters.items():
        folder = safe_child(root, rel)
        if not folder.is_dir():
            raise FileNotFoundError(f"{root / MANIFEST_FILE}: adapter folder {folder} of step {step!r} is missing.")
        out[str(step)] = f"{base}+{folder}"
    return out


def run_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a compile or distill run directory written before runs saved ``nextocc.json``.

    A compile run (``program.json`` + ``config.yaml``) gives the optimized program on the teacher's spec (a
    remote teacher's ``api_base`` is not taken from the file: pass ``lm=``); a distill run (``metrics.json`` with
    ``students``) gives the zero-shot program on the student adapters.

    Raises:
        FileNotFoundError: When ``root`` is neither.
    """
    config = root / "config.yaml"
    cfg = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    base = {"format": MANIFEST_FORMAT, "class": "NextOccupation", "k": 5, "top1": "answer", "data_dir": None}
    teacher = cfg.get("teacher_lm")
    teacher = teacher if isinstance(teacher, str) else (teacher or {}).get("model") if isinstance(teacher, dict) \
        else None
    if (root / PROGRAM_FILE).is_file() and "teacher_lm" in cfg:
        return {**base, "mode": cfg.get("mode", "two_step"), "lms": {"reasoner": teacher, "predictor": teacher},
                "program": PROGRAM_FILE, "data_dir": cfg.get("data_dir")}
    metrics = root / "metrics.json"
    if metrics.is_file() and "students" in (results := json.loads(metrics.read_text(encoding="utf-8"))):
        students = results["students"] if isinstance(results["students"], dict) else {}
        adapters = {role: f"{Path(str(spec).partition('+')[2]).parent.name}/adapter"
                    for role, spec in students.items() if "+" in str(spec)}
        return {**base, "mode": results.get("program_mode") or "two_step", "lms": {}, "program": None,
                "base": results.get("base"), "adapters": adapters}
    raise FileNotFoundError(f"{root / MANIFEST_FILE} not found: {root} is neither a directory saved by save() nor a "
                            "compile run (program.json + config.yaml) nor a distill run (metrics.json with students).")


class ClassOrInstanceMethod:
    """Descriptor: ``Cls.load(run_dir)`` builds a program; ``instance.load(path.json)`` is DSPy's state load."""

    def __init__(self, class_func, instance_func):
        self.class_func, self.instance_func = class_func, instance_func

    def __get__(self, obj, objtype=None):
        if obj is None:
            return functools.partial(self.class_func, objtype)
        return functools.partial(self.instance_func, obj)
