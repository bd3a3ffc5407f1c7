"""Shared fixtures: DSPy settings reset after each test, and the O*NET taxonomy from the data mirror."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

# make the repository importable when the package is not installed (plain ``pytest`` from the root)
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import dspy  # noqa: E402
import pytest  # noqa: E402

from careers.onet import OnetTaxonomy  # noqa: E402

DEFAULT_DATA_DIR = Path("/work/shared/data")


def data_dir() -> Path:
    """The data directory for tests: ``$NEXTOCC_DATA_DIR``, else the shared read-only mirror."""
    return Path(os.environ.get("NEXTOCC_DATA_DIR") or DEFAULT_DATA_DIR)


@pytest.fixture(autouse=True)
def _reset_dspy_settings():
    """Restores DSPy's global settings after each test: no LM, adapter or callback leaks into the next."""
    try:
        from dspy.dsp.utils.settings import main_thread_config
    except ImportError:  # a DSPy without this private dict: fall back to the public API
        main_thread_config = None
    # copy mutable values too: DSPy appends to settings.trace (a list) in place
    snapshot = None
    if main_thread_config is not None:
        snapshot = {k: copy.copy(v) if isinstance(v, (list, dict)) else v for k, v in main_thread_config.items()}
    yield
    if main_thread_config is not None:
        main_thread_config.clear()
        main_thread_config.update(snapshot)
    dspy.configure(lm=None, adapter=None, trace=[])


@pytest.fixture(scope="session")
def taxonomy_data_dir() -> Path:
    """The data directory; skips the test when the O*NET files are not there."""
    path = data_dir()
    if not (path / "onet" / "Occupation Data.txt").is_file():
        pytest.skip(f"O*NET data not found under {path}; set NEXTOCC_DATA_DIR.")
    return path


@pytest.fixture(scope="session")
def taxonomy(taxonomy_data_dir) -> OnetTaxonomy:
    """The O*NET-SOC 2019 taxonomy, loaded once per session."""
    return OnetTaxonomy.load(taxonomy_data_dir)


@pytest.fixture
def tiny_splits():
    """Four O*NET titles, five training careers and two dev careers (dev transitions A->B, B->C, D->A, A->C)."""
    from careers.history import CareerHistory
    from careers.splits import DatasetSplits

    a, b, c, d = "15-1252.00", "15-1253.00", "11-3021.00", "29-1141.00"
    titles = {a: "Software Developers", b: "Software Quality Assurance Analysts and Testers",
              c: "Computer and Information Systems Managers", d: "Registered Nurses"}

    def examples(paths, prefix):
        out = []
        for i, path in enumerate(paths):
            jobs = [{"title": titles[k], "onet_code": k, "start_year": 2000 + 2 * j} for j, k in enumerate(path)]
            h = CareerHistory.from_dict({"person_id": f"{prefix}{i}", "jobs": jobs})
            out.extend(h.prefix(n).to_example(h.jobs[n], occupation=titles[h.jobs[n].onet_code])
                       for n in range(1, len(path)))
        return out

    train = examples([[a, b, c]] * 3 + [[d, a, b], [b, c, a]], "t")
    return DatasetSplits(train=train, dev=examples([[a, b, c], [d, a, c]], "d"), test=[], name="tiny")
