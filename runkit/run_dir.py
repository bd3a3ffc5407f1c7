"""Run directories: one folder per invocation of a command-line tool.

:func:`make_run_dir` creates it and writes ``provenance.json`` (git commit, package versions, CPU/GPU, dtype; see
:mod:`runkit.provenance`); the tools then write the resolved configuration and results into it with
:mod:`runkit.files`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

from runkit.provenance import write_provenance

logger = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """A run produced nothing usable (every prediction, candidate or judge call failed); CLIs exit non-zero."""


# ---------------------------------------------------------------------- run directories
def make_run_dir(output_dir: str | os.PathLike, name: str | None = None, prefix: str = "run",
                 resume: bool = False) -> Path:
    """Creates the directory of one invocation.

    Args:
        output_dir: Parent folder of all runs (created when missing).
        name: The run's folder name; None gives ``<prefix>-YYYYmmdd-HHMMSS`` (a ``-2``, ``-3`` ... suffix
            keeps concurrent invocations apart).
        prefix: Prefix of generated names, e.g. the program name.
        resume: Return an existing, non-empty named directory instead of refusing it (resumable runs).

    Returns:
        The new, empty run directory.

    Raises:
        FileExistsError: When an explicitly named run directory already exists and is not empty.
        ValueError: When ``name`` is not a plain folder name (a path, ``..``, absolute, empty).
    """
    parent = Path(output_dir)
    if name is not None and (not isinstance(name, str) or name.strip() in ("", ".", "..") or "\x00" in name
                             or any(sep in name for sep in ("/", "\\"))):
        raise ValueError(f"Run name {name!r} must be a plain folder name inside {parent} (no '/', '\\' or '..').")
    parent.mkdir(parents=True, exist_ok=True)
    if name is not None:
        path = parent / name
        if path.exists() and any(path.iterdir()) and not resume:
            raise FileExistsError(f"Run directory {path} already exists and is not empty; choose another name.")
        path.mkdir(parents=True, exist_ok=True)
        _provenance(path)
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{prefix}-{stamp}"
    for i in range(1, 10_000):
        path = parent / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        logger.info("Run directory: %s", path)
        _provenance(path)
        return path
    raise FileExistsError(f"Could not create a fresh run directory under {parent}.")


def _provenance(path: Path) -> None:
    """Writes ``provenance.json`` into a new run directory (never fails the run)."""
    try:
        write_provenance(path)
    except Exception as exc:  # noqa: BLE001 - provenance is a record, not a precondition
        logger.warning("Could not write %s/provenance.json: %s", path, exc)
