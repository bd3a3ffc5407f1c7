"""The shared ``main()`` of the command-line tools: parse the config, set up logging, run, report.

Every tool's ``main`` is one call of :func:`run_cli`: a config error exits 2, an expected run error (bad data, paths
or settings) prints ``error: ...`` on stderr and exits with the tool's code, and ``report`` prints the results and
returns the exit status.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

C = TypeVar("C")
R = TypeVar("R")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RUN_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError)


def print_error(exc: BaseException | str) -> None:
    """Prints ``error: <message>`` on stderr after flushing stdout (so the error is the last line)."""
    sys.stdout.flush()
    print(f"error: {exc}", file=sys.stderr)


def run_cli(parse: Callable[[], C], run: Callable[[C], R], report: Callable[[R], int], *,
            errors: tuple[type[BaseException], ...] = RUN_ERRORS, error_code: int = 1,
            on_error: Callable[[BaseException], int | None] | None = None) -> int:
    """Runs one command-line invocation.

    Args:
        parse: Builds the config (e.g. ``lambda: load_config(EvalConfig, argv)``); a ``ValueError`` (``ConfigError``)
            exits 2 with its message.
        run: Runs the tool on the config.
        report: Prints the results and returns the exit status.
        errors: Run errors reported as ``error: ...`` instead of a traceback.
        error_code: Exit status of such an error.
        on_error: Called first for a caught run error; a non-None return is the exit status (the tool printed what it
            wanted), None falls back to ``error: ...`` and ``error_code``.

    Returns:
        The exit status.
    """
    try:
        config = parse()
    except ValueError as exc:
        print_error(exc)
        return 2
    level: Any = getattr(config, "log_level", "INFO")
    logging.basicConfig(level=str(level).upper(), format=LOG_FORMAT)
    try:
        results = run(config)
    except errors as exc:
        code = on_error(exc) if on_error is not None else None
        if code is not None:
            return code
        print_error(exc)
        return error_code
    return report(results)
