"""Claim (c): accuracy by reason-quality bucket and its correlation with the judged reason quality.

:class:`QualityData` collects judged reasons with their outcome (from a compile run's ``candidates.jsonl`` or from
judged predictions); :func:`quality_buckets` gives accuracy per bucket of each criterion and :func:`correlation_ci`
the Spearman / point-biserial correlation with a person-level bootstrap CI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.bootstrap import Interval, bootstrap_ci
from metrics.judge import CRITERIA as JUDGE_CRITERIA

CRITERIA = ("oracle_score", *JUDGE_CRITERIA)


def quality_bucket(criterion: str, value: Any) -> str | None:
    """The bucket of a judge score: 1-5 criteria -> ``low (1-2)``, ``mid (3)``, ``high (4-5)``; the oracle score in
    [0, 1] -> ``low (<0.5)``, ``mid (0.5-0.75)``, ``high (>=0.75)`` (the same cut points mapped by (s-1)/4)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return None
    if criterion == "oracle_score":
        return "low (<0.5)" if value < 0.5 else "mid (0.5-0.75)" if value < 0.75 else "high (>=0.75)"
    return "low (1-2)" if value < 2.5 else "mid (3)" if value < 3.5 else "high (4-5)"


BUCKET_ORDER = {"oracle_score": ("low (<0.5)", "mid (0.5-0.75)", "high (>=0.75)"),
                **{c: ("low (1-2)", "mid (3)", "high (4-5)") for c in CRITERIA[1:]}}


def _ranks(x: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.Series(x).rank(method="average").to_numpy()


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def correlation_ci(x: Sequence[float], y: Sequence[float], groups: Sequence[str] | None = None, *,
                   method: str = "spearman", n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """Spearman or point-biserial (Pearson with a 0/1 variable) correlation with a person-level bootstrap CI.

    Replicates whose resample has no variance in x or y are dropped; NaN when the data has none.
    """
    if method not in ("spearman", "pointbiserial"):
        raise ValueError(f"method must be 'spearman' or 'pointbiserial', got {method!r}.")
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}.")

    def corr(i: np.ndarray) -> float:
        xs, ys = xa[i], ya[i]
        if method == "spearman":
            xs, ys = _ranks(xs), _ranks(ys)
        return _pearson(xs, ys)

    point = corr(np.arange(xa.size))
    if math.isnan(point):
        return Interval(float("nan"), float("nan"), float("nan"), int(xa.size))
    index: dict[str, list[int]] = {}
    for i, g in enumerate(groups if groups is not None else range(xa.size)):
        index.setdefault(str(g), []).append(i)
    clusters = [np.array(v) for v in index.values()]
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        draw = rng.integers(0, len(clusters), size=len(clusters))
        value = corr(np.concatenate([clusters[j] for j in draw]))
        if not math.isnan(value):
            reps.append(value)
    if not reps:
        return Interval(point, float("nan"), float("nan"), int(xa.size))
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(point, float(low), float(high), int(xa.size))


@dataclass
class QualityData:
    """Reason-quality observations of one source: judge scores, correctness (0/1) and person ids."""

    source: str
    quality: dict[str, list[float | None]]
    correct: list[float]
    groups: list[str]

    @property
    def n(self) -> int:
        return len(self.correct)


def quality_from_candidates(candidates: Iterable[Mapping[str, Any]], source: str = "candidates") -> QualityData:
    """Claim (c) data from a compile run's ``candidates.jsonl``: each judged candidate's scores and
    ``predicted_correct`` (candidates with an error, without a verdict or without a prediction -- compile's
    ``predict_candidates: false`` -- are skipped)."""
    data = QualityData(source, {c: [] for c in CRITERIA}, [], [])
    for cand in candidates:
        if cand.get("error") or cand.get("predicted_correct") is None:  # no predictor call: no outcome
            continue
        if all(not isinstance(cand.get(c), (int, float)) for c in CRITERIA):
            continue
        for c in CRITERIA:
            data.quality[c].append(cand.get(c))
        data.correct.append(1.0 if cand.get("predicted_correct") else 0.0)
        data.groups.append(str(cand.get("person_id") or cand.get("example_id")))
    return data


def quality_from_records(records: Sequence[Mapping[str, Any] | None], correct: Sequence[float], groups: Sequence[str],
                         source: str) -> QualityData:
    """Claim (c) data from judged prediction records (``record["judge"]`` holds the verdict) and per-example
    correctness (e.g. the row's AccEM hits); records without a verdict are skipped."""
    data = QualityData(source, {c: [] for c in CRITERIA}, [], [])
    for rec, hit, g in zip(records, correct, groups, strict=True):
        verdict_ = (rec or {}).get("judge") if rec else None
        if not isinstance(verdict_, Mapping) or all(not isinstance(verdict_.get(c), (int, float)) for c in CRITERIA):
            continue
        for c in CRITERIA:
            data.quality[c].append(verdict_.get(c))
        data.correct.append(float(hit))
        data.groups.append(str(g))
    return data


def quality_buckets(data: QualityData, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
                    ) -> dict[str, Any]:
    """Accuracy per quality bucket (count and CI) and the correlations, per criterion.

    Returns:
        ``{"source", "n", "ci_level", "criteria": {criterion: {"buckets": [{"bucket", "n", "accuracy": Interval}],
        "spearman": Interval, "pointbiserial": Interval}}}``; correlations are between the raw score and
        correctness (point-biserial is Pearson with the 0/1 correctness).
    """
    out: dict[str, Any] = {"source": data.source, "n": data.n, "ci_level": 1 - alpha, "criteria": {}}
    for c in CRITERIA:
        triples = [(v, y, g) for v, y, g in zip(data.quality[c], data.correct, data.groups, strict=True)
                   if quality_bucket(c, v) is not None]
        buckets = []
        for name in BUCKET_ORDER[c]:
            sel = [(y, g) for v, y, g in triples if quality_bucket(c, v) == name]
            iv = bootstrap_ci([y for y, _ in sel], [g for _, g in sel], n_boot=n_boot, alpha=alpha, seed=seed)
            buckets.append({"bucket": name, "n": len(sel), "accuracy": iv})
        xs = [float(v) for v, _, _ in triples]
        ys = [y for _, y, _ in triples]
        gs = [g for _, _, g in triples]
        out["criteria"][c] = {
            "n": len(triples), "buckets": buckets,
            "spearman": correlation_ci(xs, ys, gs, method="spearman", n_boot=min(n_boot, 1000), alpha=alpha,
                                       seed=seed),
            "pointbiserial": correlation_ci(xs, ys, gs, method="pointbiserial", n_boot=min(n_boot, 1000),
                                            alpha=alpha, seed=seed),
        }
    return out
