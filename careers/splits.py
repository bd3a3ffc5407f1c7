"""Person-level train/dev/test splits.

Every loader assigns whole persons to one split, never single rows or transitions, so no career is
seen in training and scored in evaluation. The assignment is a seeded, stable hash of the person id
(SHA-256 of ``"<seed>:<person_id>"``), identical across runs, machines and Python versions (Python's
``hash`` is salted per process and is not used).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dspy

SPLITS = ("train", "dev", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def check_fractions(fractions: Iterable[float]) -> tuple[float, float, float]:
    """Validates (train, dev, test) fractions: three non-negative numbers that sum to 1."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr):
        raise ValueError(f"fractions must be three non-negative numbers (train, dev, test), got {fractions!r}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fr):.6g})")
    return fr  # type: ignore[return-value]


def person_unit(person_id: Any, seed: int = 0) -> float:
    """A uniform number in [0, 1) from a stable hash of ``(seed, person_id)``."""
    digest = hashlib.sha256(f"{int(seed)}:{person_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def person_split(person_id: Any, seed: int = 0, fractions: Iterable[float] = DEFAULT_FRACTIONS) -> str:
    """The split (``"train"``, ``"dev"`` or ``"test"``) of a person, by a seeded stable hash of its id.

    Args:
        person_id: The person identifier (converted with ``str``; ``7`` and ``"7"`` land in the same split).
        seed: Changes the assignment; the same seed always gives the same split.
        fractions: Expected shares of persons in train, dev and test.
    """
    train, dev, _ = check_fractions(fractions)
    u = person_unit(person_id, seed)
    if u < train:
        return "train"
    if u < train + dev:
        return "dev"
    return "test"


@dataclass
class DatasetSplits:
    """Examples of a dataset split by person.

    Attributes:
        train, dev, test: Lists of ``dspy.Example`` (each with a ``person_id`` field).
        name: The dataset name (e.g. ``"nlsy79"``).
        stats: Loader counts (persons, transitions, skipped rows and why).
    """

    train: list[dspy.Example] = field(default_factory=list)
    dev: list[dspy.Example] = field(default_factory=list)
    test: list[dspy.Example] = field(default_factory=list)
    name: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_examples(
        cls,
        examples: Iterable[dspy.Example],
        *,
        seed: int = 0,
        fractions: Iterable[float] = DEFAULT_FRACTIONS,
        name: str = "",
        stats: dict[str, Any] | None = None,
    ) -> DatasetSplits:
        """Splits examples by their ``person_id`` with :func:`person_split` (order kept within a split)."""
        fr = check_fractions(fractions)
        out = cls(name=name, stats=dict(stats or {}))
        cache: dict[str, str] = {}
        for ex in examples:
            pid = ex.get("person_id") if hasattr(ex, "get") else None
            if pid is None:
                raise ValueError(f"{name or 'dataset'}: an example has no person_id; splits are made by person.")
            pid = str(pid)
            split = cache.get(pid)
            if split is None:
                split = cache[pid] = person_split(pid, seed, fr)
            getattr(out, split).append(ex)
        return out

    def get(self, split: str) -> list[dspy.Example]:
        """The examples of one split.

        Raises:
            ValueError: For a name other than train, dev or test.
        """
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}.")
        return getattr(self, split)

    def __getitem__(self, split: str) -> list[dspy.Example]:
        return self.get(split)

    def __iter__(self) -> Iterator[tuple[str, list[dspy.Example]]]:
        return iter((s, getattr(self, s)) for s in SPLITS)

    def all(self) -> list[dspy.Example]:
        """Every example, train then dev then test."""
        return self.train + self.dev + self.test

    def persons(self, split: str) -> set[str]:
        """The person ids in one split."""
        return {str(ex.person_id) for ex in self.get(split)}

    def summary(self) -> dict[str, Any]:
        """Counts per split: ``{"train": {"examples": n, "persons": m}, ..., "total": {...}}`` plus loader stats."""
        out: dict[str, Any] = {}
        for s in SPLITS:
            out[s] = {"examples": len(getattr(self, s)), "persons": len(self.persons(s))}
        out["total"] = {k: sum(out[s][k] for s in SPLITS) for k in ("examples", "persons")}
        if self.stats:
            out["stats"] = dict(self.stats)
        return out


def sample_per_person(examples, n: int | None, seed: int = 0) -> list:
    """Up to ``n`` examples from distinct persons (one random transition each), deterministic in ``seed``.

    Used for quick LM evaluations: a sample of persons rather than the first rows, so one person with many
    transitions does not dominate. ``n=None`` returns all examples unchanged.
    """
    import random

    examples = list(examples)
    if n is None:
        return examples
    by_person: dict[str, list] = {}
    for ex in examples:
        by_person.setdefault(str(ex.get("person_id")), []).append(ex)
    rng = random.Random(seed)
    persons = sorted(by_person)
    rng.shuffle(persons)
    return [rng.choice(by_person[p]) for p in persons[:n]]
