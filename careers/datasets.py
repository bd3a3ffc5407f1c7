"""One entry point for every dataset: ``load_dataset(spec)`` returns person-split examples.

Specs:

* ``nlsy79``: the NLSY79 panel from the data directory (:func:`careers.nlsy79.load_nlsy79`);
* ``synthetic``: O*NET-grounded synthetic careers (:func:`careers.synthetic_dataset.load_synthetic`);
* ``jsonl:PATH`` / ``csv:PATH``: user data (:func:`careers.user_data.load_user_data`);
* ``jobhop:PATH``, ``karrierewege:PATH``, ``decorte:PATH``: ESCO-coded datasets (:mod:`careers.esco`).

Keyword arguments are passed to the loader (e.g. ``max_persons``, ``n_persons``, ``fractions``).
:func:`load_splits` is what every command-line tool calls with its config's dataset fields.
"""

from __future__ import annotations

import os
from typing import Any

from careers import esco
from careers.nlsy79 import load_nlsy79
from careers.splits import DatasetSplits
from careers.synthetic_dataset import load_synthetic
from careers.user_data import load_user_data

SPECS = ("nlsy79", "synthetic", "jsonl:PATH", "csv:PATH", "jobhop:PATH", "karrierewege:PATH", "decorte:PATH")


def load_dataset(spec: str, data_dir: str | os.PathLike | None = None, seed: int = 0, **kwargs: Any) -> DatasetSplits:
    """Loads a dataset by spec (module doc) and splits it by person.

    Raises:
        ValueError: An unknown spec (the message lists the valid ones) or a path-less file spec.
    """
    if not isinstance(spec, str):
        raise ValueError(f"dataset spec must be a string, one of {list(SPECS)}; got {type(spec).__name__}")
    kind, sep, path = spec.strip().partition(":")
    kind = kind.lower()
    if not sep:
        if kind == "nlsy79":
            return load_nlsy79(data_dir, seed=seed, **kwargs)
        if kind == "synthetic":
            return load_synthetic(data_dir, seed=seed, **kwargs)
    elif kind in ("jsonl", "csv", "jobhop", "karrierewege", "decorte"):
        if not path.strip():
            raise ValueError(f"dataset spec {spec!r} needs a file path after the colon, e.g. {kind}:data/file")
        path = path.strip()
        if kind in ("jsonl", "csv"):
            return load_user_data(path, seed=seed, data_dir=data_dir, fmt=kind, **kwargs)

        loader = {"jobhop": esco.load_jobhop, "karrierewege": esco.load_karrierewege,
                  "decorte": esco.load_decorte}[kind]
        return loader(path, data_dir=data_dir, seed=seed, **kwargs)
    raise ValueError(f"Unknown dataset spec {spec!r}; valid specs: {', '.join(SPECS)}")


def load_splits(dataset: str, data_dir: str | os.PathLike | None = None, seed: int = 0, *,
                synthetic_persons: int | None = None, motives: bool = False, taxonomy: Any = None) -> DatasetSplits:
    """The person-split examples of a tool's ``dataset`` setting: the one dataset loader of every CLI.

    Args:
        dataset: A dataset spec (module doc).
        data_dir: The data directory (None: ``$NEXTOCC_DATA_DIR`` or the user cache).
        seed: Seed of the person split (and of the synthetic population).
        synthetic_persons: Persons generated for ``synthetic`` (None: the generator's default).
        motives: Synthetic careers with motives (``synthetic`` only).
        taxonomy: A loaded O*NET taxonomy for the synthetic generator (None loads it).

    Raises:
        ValueError: An unknown spec, or ``motives`` on a dataset other than ``synthetic``.
    """
    kwargs: dict[str, Any] = {}
    if dataset == "synthetic":
        if synthetic_persons is not None:
            kwargs["n_persons"] = synthetic_persons
        if motives:
            kwargs["motives"] = True
        if taxonomy is not None:
            kwargs["taxonomy"] = taxonomy
    elif motives:
        raise ValueError(f"motives: true needs dataset: synthetic (got {dataset!r}).")
    return load_dataset(dataset, data_dir, seed, **kwargs)
