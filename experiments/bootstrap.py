"""Bootstrap confidence intervals over persons, for single metrics and paired differences.

Examples are resampled *by person* (a cluster bootstrap): every example of a sampled person enters the
replicate, so persons with several transitions (NLSY79) do not shrink the interval artificially. The
interval is the percentile interval of the replicate means.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """Renders ``mean [low, high]`` (scaled, e.g. to percent)."""
        return f"{self.mean * scale:.{digits}f} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


def _clusters(groups: Sequence[str] | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} scores.")
    index: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        index[str(g)].append(i)
    return [np.array(v) for v in index.values()]


def _replicates(values: np.ndarray, clusters: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sums = np.array([values[c].sum(axis=0) for c in clusters])
    counts = np.array([len(c) for c in clusters])
    draws = rng.integers(0, len(clusters), size=(n_boot, len(clusters)))
    return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def bootstrap_ci(
    scores: Sequence[float],
    groups: Sequence[str] | None = None,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap CI of the mean of per-example scores, resampling persons.

    Args:
        scores: Per-example scores (e.g. 0/1 hits or AccRM credit).
        groups: Person id per example; None resamples examples independently.
        n_boot: Bootstrap replicates.
        alpha: 1 - confidence level.
        seed: RNG seed.
    """
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    reps = _replicates(values, _clusters(groups, len(values)), n_boot, seed)
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(float(values.mean()), float(low), float(high), int(values.size))


def paired_bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float],
    groups: Sequence[str] | None = None,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[Interval, float]:
    """CI of mean(a) - mean(b) on the same examples, resampling persons jointly.

    Returns:
        The difference interval and the one-sided bootstrap p-value of ``a <= b``.
    """
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if va.shape != vb.shape:
        raise ValueError(f"paired scores differ in length: {va.size} vs {vb.size}.")
    if va.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0), float("nan")
    reps = _replicates(va - vb, _clusters(groups, len(va)), n_boot, seed)
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    p = float((reps <= 0).mean())
    return Interval(float((va - vb).mean()), float(low), float(high), int(va.size)), p
