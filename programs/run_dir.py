"""Run-directory utilities shared by the command-line tools (TRL-style).

One directory per invocation (:func:`make_run_dir`, which also writes ``provenance.json``: git commit, package
versions, CPU/GPU, dtype; see :mod:`programs.provenance`) holds the resolved configuration
(:func:`write_config`, secrets redacted), results written atomically (:func:`write_json`) and
record streams that survive a crash (:class:`JsonlWriter` / :func:`read_jsonl`).

:func:`load_config` builds a dataclass config from ``--config file.yaml`` plus ``--field value`` flags.
Each dataclass field must carry ``metadata={"help": ...}``; precedence is defaults < YAML < flags.
Unknown YAML keys and values of the wrong type are rejected with messages that name the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import threading
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

logger = logging.getLogger(__name__)

SECRET_MARKERS = ("key", "keys", "token", "secret", "secrets", "password", "passwd")
_SECRET_WORDS = {"auth", "authorization", "bearer", "credential", "credentials", "cookie", "pwd"}
REDACTED = "***"
T = TypeVar("T")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a ``--config`` YAML file.

    Raises:
        ConfigError: For a missing file, invalid YAML or a top level that is not a mapping.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of field: value.")
    return data


class ConfigError(ValueError):
    """A configuration file or flag is invalid; the message names the key."""


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
        from programs.provenance import write_provenance

        write_provenance(path)
    except Exception as exc:  # noqa: BLE001 - provenance is a record, not a precondition
        logger.warning("Could not write %s/provenance.json: %s", path, exc)


def check_lm_spec(value: Any, role: str) -> Any:
    """A config's per-role LM spec, validated (:func:`lms.resolve.lm_spec`): a plain string is kept as is (and
    ``lms`` is not imported for it); YAML mapping text becomes a mapping.

    Raises:
        ValueError: For an invalid spec, naming the role.
    """
    if value is None or (isinstance(value, str) and not value.strip().startswith("{")):
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"{role}: the LM spec is empty.")
        return value
    from lms.resolve import lm_spec

    return lm_spec(value, role=role)


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


# ---------------------------------------------------------------------- config loading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _shown(value: Any) -> str:
    """The value for an error message: secret-named keys of nested mappings redacted, cut to 200 characters."""
    text = repr(redact(value)) if isinstance(value, (Mapping, list, tuple)) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _coerce(value: Any, tp: Any, key: str, *, from_text: bool) -> Any:
    """Validates (YAML) or parses (command line text) ``value`` as type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (from_text and str(value).lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, from_text=from_text)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_shown(value)}.")
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (from_text and str(value) == str(choice)):
                return choice
        raise ConfigError(f"{key}: expected one of {list(args)}, got {_shown(value)}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        items = value
        if from_text and isinstance(value, str):
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):  # YAML flow list: --datasets "[synthetic, nlsy79]"
                text = text[1:-1]
            items = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {_shown(value)}.")
        item_tp = args[0] if args else Any
        out = [_coerce(v, item_tp, f"{key}[{i}]", from_text=from_text) for i, v in enumerate(items)]
        return tuple(out) if origin is tuple or tp is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if from_text and str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {_shown(value)}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text:
            try:
                return int(str(value))
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {_shown(value)}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text:
            try:
                return float(str(value))
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {_shown(value)}.")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {_shown(value)}.")
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {_shown(value)}.")
    return value


def _help(field: dataclasses.Field, hint: Any) -> str:
    text = field.metadata.get("help")
    if not text:
        raise TypeError(f"Config field {field.name!r} has no metadata={{'help': ...}}; every field needs help text.")
    default = field.default if field.default is not dataclasses.MISSING else None
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = field.default_factory()  # type: ignore[misc]
    return f"{text} (type: {_type_name(hint)}; default: {default!r})"


def build_parser(dataclass_type: type, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with ``--config`` and one ``--field`` flag per dataclass field (defaults suppressed)."""
    hints = typing.get_type_hints(dataclass_type)
    parser = argparse.ArgumentParser(description=description or (dataclass_type.__doc__ or "").strip().split("\n")[0],
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", help="YAML file of field values; flags given on the command line override it.")
    for field in dataclasses.fields(dataclass_type):
        flags = [f"--{field.name}"]
        if "_" in field.name:
            flags.append(f"--{field.name.replace('_', '-')}")
        parser.add_argument(*flags, dest=field.name, metavar=field.name.upper(), help=_help(field, hints[field.name]))
    return parser


def load_config(dataclass_type: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Builds a config dataclass from ``--config file.yaml`` and ``--field value`` overrides.

    Args:
        dataclass_type: A dataclass whose fields each have ``metadata={"help": ...}``.
        argv: Command-line arguments (None reads ``sys.argv[1:]``).
        description: The ``--help`` description (defaults to the dataclass docstring's first line).

    Returns:
        The config instance (its ``__post_init__`` validation runs).

    Raises:
        ConfigError: For unknown YAML keys, wrong types or missing required fields (naming the key).
        SystemExit: For unknown flags or ``--help`` (argparse).
    """
    if not dataclasses.is_dataclass(dataclass_type):
        raise TypeError(f"{dataclass_type!r} is not a dataclass.")
    hints = typing.get_type_hints(dataclass_type)
    fields = {f.name: f for f in dataclasses.fields(dataclass_type)}
    args = vars(build_parser(dataclass_type, description).parse_args(argv))
    values: dict[str, Any] = {}
    config_path = args.pop("config", None)
    if config_path:
        data = read_config_file(config_path)
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in fields:
                raise ConfigError(f"Config file {config_path}: unknown key {key!r}; known keys: {sorted(fields)}.")
            values[name] = _coerce(value, hints[name], f"{config_path}: {key}", from_text=False)
    for name, text in args.items():
        values[name] = _coerce(text, hints[name], f"--{name}", from_text=True)
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"Missing required config value(s): {', '.join('--' + m for m in missing)}.")
    try:
        return dataclass_type(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None
