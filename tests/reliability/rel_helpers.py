"""Shared helpers of the reliability tests: scripted DummyLMs, the data mirror, a counter of fuzz figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dspy.utils.dummies import DummyLM

DATA = Path(os.environ.get("NEXTOCC_DATA_DIR") or "/work/shared/data")
HAVE_DATA = (DATA / "onet" / "Occupation Data.txt").is_file()
REASON = "Moved from stocking shelves to the register and stayed in retail."
FIGURES = Path(os.environ.get("NEXTOCC_RELIABILITY_FIGURES", "/tmp/nextocc_reliability_figures.jsonl"))


def answers(reason: str = REASON) -> dict[str, dict[str, str]]:
    """DummyLM answers for every signature of the pipeline (teacher, predictor, joint, judges)."""
    return {
        "`[[ ## factuality ## ]]`": {"errors": "none", "factuality": "5"},
        "`[[ ## coherence ## ]]`": {"justification": "ordered", "coherence": "4"},
        "`[[ ## utility ## ]]`": {"justification": "supports it", "utility": "4"},
        "starting with the field `[[ ## occupation ## ]]`": {"occupation": "Cashiers"},
        "starting with the field `[[ ## reason ## ]]`": {"reason": reason, "occupation": "Cashiers"},
    }


def scripted_lm(reason: str = REASON) -> DummyLM:
    """A DummyLM that answers every pipeline signature (dict mode: keyed by the output-format instruction)."""
    return DummyLM(answers(reason))


def record_figures(name: str, **figures) -> None:
    """Appends figures (inputs tried, rejections, ...) of one test to a JSONL file for the report."""
    with open(FIGURES, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"test": name, **figures}) + "\n")
    print(f"[reliability] {name}: {figures}")
