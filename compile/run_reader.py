"""Reads a compile run directory for its consumers (the paper claims, the student evaluation, distillation).

A compile run (:mod:`compile.optimize`) holds ``config.yaml`` (the resolved :class:`~compile.config.OptimizeConfig`),
``program.json`` (the optimized program), ``predictions_<program>_<split>.jsonl`` and ``candidates.jsonl`` (the
judged candidate reasons). Readers of a run made elsewhere never fail on a missing or unreadable file: the run is
reported unavailable with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compile.config import OptimizeConfig
from programs.manifest import PROGRAM_FILE
from runkit.config import load_config
from runkit.files import read_mapping, read_records

CONFIG_FILE = "config.yaml"
CANDIDATES_FILE = "candidates.jsonl"
PREDICTION_SPLITS = ("test", "dev")


def predictions_file(name: str, split: str) -> str:
    """The file name of a program's scored predictions on a split (``predictions_<name>_<split>.jsonl``)."""
    return f"predictions_{name}_{split}.jsonl"


@dataclass
class CompileRun:
    """What a compile run directory offers: its config, optimized program, predictions and judged candidates."""

    path: Path | None
    config: dict[str, Any] = field(default_factory=dict)
    available: bool = False
    reason: str = ""

    @property
    def mode(self) -> str:
        """The program mode the run compiled (``two_step`` when unknown)."""
        return str(self.config.get("mode") or "two_step")

    @property
    def teacher_lm(self) -> str | None:
        """The teacher LM spec of the run."""
        return self.config.get("teacher_lm")

    @property
    def program_path(self) -> Path | None:
        """``program.json`` when the optimize phase finished, else None."""
        p = self.path / PROGRAM_FILE if self.path else None
        return p if p is not None and p.is_file() else None

    def predictions(self, name: str) -> list[dict]:
        """Records of ``predictions_<name>_<split>.jsonl`` over every split on disk."""
        out: list[dict] = []
        if self.path is None:
            return out
        for split in PREDICTION_SPLITS:
            p = self.path / predictions_file(name, split)
            if p.is_file():
                out.extend(read_records(p))
        return out

    def candidates(self) -> list[dict]:
        """The judged candidate reasons (``candidates.jsonl``)."""
        p = self.path / CANDIDATES_FILE if self.path else None
        return read_records(p) if p is not None and p.is_file() else []


def read_compile_run(path: Path | None, dataset: str | None = None) -> CompileRun:
    """Reads a compile run directory; ``available`` is False (with a reason) when it is absent or, with ``dataset``,
    was made on another dataset."""
    if path is None:
        return CompileRun(None, reason="no compile_run configured")
    if not path.is_dir():
        return CompileRun(path, reason=f"{path} does not exist")
    cfg = read_mapping(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else {}
    if dataset is not None and cfg.get("dataset") and str(cfg["dataset"]) != dataset:
        return CompileRun(path, cfg, reason=f"{path} was compiled on dataset {cfg['dataset']!r}, not {dataset!r}")
    return CompileRun(path, cfg, available=True)


def compile_config(path: str | Path) -> OptimizeConfig:
    """The run's :class:`~compile.config.OptimizeConfig`, validated as ``compile.optimize`` read it.

    Raises:
        FileNotFoundError: When the run has no ``config.yaml``.
    """
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: {path} is not a compile run directory")
    return load_config(OptimizeConfig, ["--config", str(file)])


def compile_mode(path: str | Path | None) -> str:
    """The program mode of a compile run (``two_step`` or ``joint``), ``two_step`` when unknown."""
    mode = read_compile_run(Path(path)).config.get("mode") if path else None
    return mode if mode in ("two_step", "joint") else "two_step"
