"""The baselines by name: build an unfitted one, or load any saved one (the class is read from its file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from careers.onet import OnetTaxonomy
from programs.baselines import BASELINES, _StateBaseline

#: Every baseline kind, including the GRU ``sequence`` baseline of :mod:`programs.sequence_model` (loaded lazily).
BASELINE_KINDS: tuple[str, ...] = tuple(sorted(BASELINES)) + ("sequence",)
#: The example fields a baseline (and the hybrid program's baseline) reads: past job states need the structure.
BASELINE_INPUTS: tuple[str, ...] = ("history", "states", "career")


def make_baseline(name: str, **kwargs: Any) -> _StateBaseline:
    """Builds an unfitted baseline by name (``frequency``, ``markov``, ``return_markov`` or ``sequence``).

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if name == "sequence":
        from programs.sequence_model import SequenceBaseline  # torch: loaded only for the neural baseline

        return SequenceBaseline(**kwargs)
    try:
        return BASELINES[name](**kwargs)
    except KeyError:
        raise ValueError(f"Unknown baseline {name!r}; choose one of {sorted(BASELINE_KINDS)}.") from None


def saved_kind(path: str | os.PathLike) -> str:
    """The baseline kind (``return_markov``, ``sequence``, ...) recorded in a file written by ``save``."""
    return str(json.loads(Path(path).read_text(encoding="utf-8")).get("kind"))


def load_baseline(path: str | os.PathLike, taxonomy: OnetTaxonomy | None = None) -> _StateBaseline:
    """Loads any baseline saved with ``save`` (the class is read from the file)."""
    return make_baseline(saved_kind(path), taxonomy=taxonomy).load(path)
