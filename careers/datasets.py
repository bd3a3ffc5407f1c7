"""One entry point for every dataset: ``load_dataset(spec)`` returns person-split examples.

Specs:

* ``nlsy79``: the NLSY79 panel from the data directory (:func:`careers.nlsy79.load_nlsy79`);
* ``synthetic``: O*NET-grounded synthetic careers (:func:`careers.synthetic.load_synthetic`);
* ``jsonl:PATH`` / ``csv:PATH``: user data (:func:`careers.user_data.load_user_data`);
* ``jobhop:PATH``, ``karrierewege:PATH``, ``decorte:PATH``: ESCO-coded datasets (:mod:`careers.esco`).

Keyword arguments are passed to the loader (e.g. ``max_persons``, ``n_persons``, ``fractions``).
"""

from __future__ import annotations

import os
from typing import Any

from careers.splits import DatasetSplits

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
            from careers.nlsy79 import load_nlsy79

            return load_nlsy79(data_dir, seed=seed, **kwargs)
        if kind == "synthetic":
            from careers.synthetic import load_synthetic

            return load_synthetic(data_dir, seed=seed, **kwargs)
    elif kind in ("jsonl", "csv", "jobhop", "karrierewege", "decorte"):
        if not path.strip():
            raise ValueError(f"dataset spec {spec!r} needs a file path after the colon, e.g. {kind}:data/file")
        path = path.strip()
        if kind in ("jsonl", "csv"):
            from careers.user_data import load_user_data

            return load_user_data(path, seed=seed, data_dir=data_dir, fmt=kind, **kwargs)
        from careers import esco

        loader = {"jobhop": esco.load_jobhop, "karrierewege": esco.load_karrierewege,
                  "decorte": esco.load_decorte}[kind]
        return loader(path, data_dir=data_dir, seed=seed, **kwargs)
    raise ValueError(f"Unknown dataset spec {spec!r}; valid specs: {', '.join(SPECS)}")
