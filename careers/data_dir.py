"""Resolution of the data directory that holds the O*NET, SOC, ESCO and NLSY79 files.

The project never vendors these files. A loader reads them from a data directory chosen, in order of
precedence, by an explicit argument, the ``NEXTOCC_DATA_DIR`` environment variable, or a user cache
directory (``~/.cache/nextocc/data`` unless ``NEXTOCC_CACHE_DIR`` says otherwise). The expected
layout mirrors the public releases::

    <data_dir>/onet/Occupation Data.txt            (O*NET 29.3 text release)
    <data_dir>/soc/SOC_Structure.csv               (O*NET Resource Center SOC structure)
    <data_dir>/esco/esco111_to_onetsoc2019_via_nesta.csv
    <data_dir>/nlsy79/nlsy79_person_year_occ1980.csv.gz
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "NEXTOCC_DATA_DIR"
CACHE_DIR_ENV = "NEXTOCC_CACHE_DIR"

#: What each sub-folder holds and where a user gets it; used in error messages.
SOURCES = {
    "onet": "the O*NET 29.3 database text release (https://www.onetcenter.org/database.html#individual-files)",
    "soc": "the O*NET-SOC 2019 / SOC 2018 structure files from the O*NET Resource Center",
    "esco": "the ESCO v1.1.1 -> O*NET-SOC 2019 crosswalk (see the data README)",
    "nlsy79": "the NLSY79 person-year occupation panel (see the data README)",
}


def cache_dir() -> Path:
    """Returns the user cache directory of nextocc (models, downloaded data)."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nextocc"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolves the data directory: explicit argument > ``NEXTOCC_DATA_DIR`` > user cache dir.

    Args:
        data_dir: An explicit directory, or None to fall back to the environment and the cache.

    Returns:
        The resolved directory (not checked for content; see :func:`data_file`).

    Raises:
        FileNotFoundError: If an explicitly given or environment-provided directory does not exist.
    """
    if data_dir is not None and str(data_dir) != "":
        path = Path(data_dir).expanduser()
        origin = "data_dir argument"
    elif os.environ.get(DATA_DIR_ENV):
        path = Path(os.environ[DATA_DIR_ENV]).expanduser()
        origin = f"${DATA_DIR_ENV}"
    else:
        path = cache_dir() / "data"
        origin = "default cache location"
    if not path.is_dir():
        raise FileNotFoundError(
            f"Data directory {path} (from the {origin}) does not exist. Point --data-dir or ${DATA_DIR_ENV} "
            "at a folder holding onet/, soc/, esco/ and nlsy79/ (for example ../shared/data)."
        )
    return path


def data_file(data_dir: str | os.PathLike | None, relative: str) -> Path:
    """Returns the path of one data file, with a clear error when it is missing.

    Args:
        data_dir: The data directory (resolved with :func:`resolve_data_dir`).
        relative: The file's path inside the data directory, e.g. ``"onet/Occupation Data.txt"``.

    Raises:
        FileNotFoundError: Naming the missing path and what to put there.
    """
    root = resolve_data_dir(data_dir)
    path = root / relative
    if not path.is_file():
        folder = relative.split("/", 1)[0]
        what = SOURCES.get(folder, "the dataset file")
        raise FileNotFoundError(f"Missing data file {path}: put {what} there (file {relative!r}).")
    return path
