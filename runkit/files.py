"""Run files: atomic JSON/YAML writes, crash-safe JSONL record streams and secret redaction.

Results are written atomically (:func:`write_json`, temporary file + ``os.replace``), the resolved configuration with
secrets redacted (:func:`write_config`, :func:`redact`), and record streams survive a crash (:class:`JsonlWriter` /
:func:`read_jsonl`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

SECRET_MARKERS = ("key", "keys", "token", "secret", "secrets", "password", "passwd")
_SECRET_WORDS = {"auth", "authorization", "bearer", "credential", "credentials", "cookie", "pwd"}
REDACTED = "***"


def _plain(obj: Any) -> Any:
    """YAML/JSON-safe copy: dataclasses and mappings to dicts, tuples to lists, paths to strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def is_secret_key(key: str) -> bool:
    """True for keys that name a secret: a word of the key (``api_key``, ``hfToken``, ``X-Auth-Token``) ends with
    key, token, secret or password (or is auth/credential...). Counts such as ``max_tokens`` are not secrets.
    """
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(key)).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", text) if w]
    return any(w in _SECRET_WORDS or w.endswith(SECRET_MARKERS) for w in words)


def redact(obj: Any) -> Any:
    """A copy of a config with the values of secret-named keys replaced by ``'***'`` (recursively)."""
    obj = _plain(obj)
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_key(k) and v is not None else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique sibling created with open(..., "x"): the usual umask-based permissions (mkstemp would give 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(run_dir: str | os.PathLike, config: Any, filename: str = "config.yaml") -> Path:
    """Writes the resolved configuration (dataclass or mapping) as YAML, with secrets redacted.

    Returns:
        The path of the written file.
    """
    path = Path(run_dir) / filename
    _atomic_write_text(path, yaml.safe_dump(redact(config), sort_keys=False, allow_unicode=True))
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Writes JSON atomically (temporary file in the same folder, fsync, ``os.replace``).

    Returns:
        The path written.
    """
    path = Path(path)
    _atomic_write_text(path, json.dumps(_plain(obj), indent=indent, ensure_ascii=False) + "\n")
    return path


def _drop_partial_line(path: Path) -> None:
    """Truncates an unterminated last line (a write killed midway) so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        data = fh.seek(0) or fh.read()
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping an interrupted last line (%d bytes)", path, len(data) - keep)
        fh.truncate(keep)


class JsonlWriter:
    """Appends JSON records one per line; each record is flushed and fsynced before ``write`` returns.

    Use as a context manager: ``with JsonlWriter(run_dir / "predictions.jsonl") as out: out.write(rec)``.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "a"):
        if mode not in ("a", "w"):
            raise ValueError(f"JsonlWriter mode must be 'a' (append, resume) or 'w' (overwrite), got {mode!r}.")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "a":
            _drop_partial_line(self.path)
        self._fh = open(self.path, mode, encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self.count = 0

    def write(self, record: Any) -> None:
        """Appends one record (thread-safe)."""
        line = json.dumps(_plain(record), ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.count += 1

    def close(self) -> None:
        """Closes the file."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Reads a JSONL file; a truncated last line (an interrupted write) is skipped with a warning.

    Raises:
        ValueError: For an unreadable line other than the last, naming the file and line number.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines):
                logger.warning("%s: skipping truncated last line %d", path, i)
                break
            raise ValueError(f"{path}, line {i}: not valid JSON ({exc.msg}).") from None
    return records


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a JSON (``.json``) or YAML file another run wrote; ``{}`` with a warning when the file cannot
    be read or holds no mapping (a reader of someone else's run never fails on it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        logger.warning("could not read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def read_records(path: str | os.PathLike) -> list[dict]:
    """The dict records of a JSONL file another run wrote; ``[]`` with a warning when it cannot be read."""
    try:
        return [r for r in read_jsonl(path) if isinstance(r, dict)]
    except (OSError, ValueError) as exc:
        logger.warning("could not read %s: %s", path, exc)
        return []
