"""Fixtures of the dataset-loader tests: tiny format fixtures and the (optional) data mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from careers.esco import EscoCrosswalk

FIXTURES = Path(__file__).parent / "fixtures"


def data_dir() -> Path:
    """``$NEXTOCC_DATA_DIR``, else the shared read-only mirror (as in tests/conftest.py)."""
    return Path(os.environ.get("NEXTOCC_DATA_DIR") or "/work/shared/data")


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """The folder of tiny dataset fixtures."""
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_crosswalk() -> EscoCrosswalk:
    """A six-occupation ESCO -> O*NET crosswalk in the mirror's format (fabricated URIs)."""
    return EscoCrosswalk.from_csv(FIXTURES / "esco_crosswalk_tiny.csv")


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The data mirror; skips when its NLSY79 files are absent."""
    path = data_dir()
    if not (path / "nlsy79" / "nlsy79_person_year_occ1980.csv.gz").is_file():
        pytest.skip(f"NLSY79 files not found under {path}; set NEXTOCC_DATA_DIR to the data mirror.")
    return path
