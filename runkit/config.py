"""Config loading for the command-line tools (TRL-style): ``--config file.yaml`` plus ``--field value`` flags.

:func:`load_config` builds a dataclass config; each dataclass field must carry ``metadata={"help": ...}``; precedence
is defaults < YAML < flags. Unknown YAML keys and values of the wrong type are rejected with messages that name the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runkit.files import redact

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or flag is invalid; the message names the key."""


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



def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _shown(value: Any) -> str:
    """The value for an error message: secret-named keys of nested mappings redacted, cut to 200 characters."""
    text = repr(redact(value)) if isinstance(value, (Mapping, list, tuple)) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def coerce_value(value: Any, tp: Any, key: str, *, from_text: bool) -> Any:
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
                return coerce_value(value, arg, key, from_text=from_text)
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
        out = [coerce_value(v, item_tp, f"{key}[{i}]", from_text=from_text) for i, v in enumerate(items)]
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
            values[name] = coerce_value(value, hints[name], f"{config_path}: {key}", from_text=False)
    for name, text in args.items():
        values[name] = coerce_value(text, hints[name], f"--{name}", from_text=True)
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"Missing required config value(s): {', '.join('--' + m for m in missing)}.")
    return instantiate(dataclass_type, values)


def instantiate(dataclass_type: type[T], values: dict[str, Any]) -> T:
    """``dataclass_type(**values)``, its validation errors (``TypeError``/``ValueError``) raised as :class:`ConfigError`."""
    try:
        return dataclass_type(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None
