"""Accuracy when a reason names the true motive vs not, on the latent-motive synthetic world (claim c2).

Every motive-world example knows the motive that drove its next move (``example.motive``, never in the prompt). A
row's reason *names* it when :func:`careers.motives.motives_named` finds that motive's cue in the reason. The
breakdown compares the row's accuracy on the examples whose reason names the true motive with the rest, with a
person-level bootstrap CI of the difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from careers.motives import motives_named
from experiments.bootstrap import Interval, bootstrap_ci
from experiments.tables import STATUS_NOT_RUN, STATUS_OK, verdict

MIN_PER_BUCKET = 5


def diff_of_groups_ci(named: Sequence[bool], correct: Sequence[float], groups: Sequence[str], *, n_boot: int = 2000,
                      alpha: float = 0.05, seed: int = 0) -> Interval:
    """CI of mean(correct | named) - mean(correct | not named), resampling persons (both buckets move together)."""
    flags, hits = np.asarray(named, dtype=bool), np.asarray(correct, dtype=float)
    if flags.all() or not flags.any():
        return Interval(float("nan"), float("nan"), float("nan"), int(flags.size))
    index: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        index[str(g)].append(i)
    clusters = list(index.values())
    # per person: (hits named, n named, hits other, n other)
    sums = np.array([[hits[c][flags[c]].sum(), flags[c].sum(), hits[c][~flags[c]].sum(), (~flags[c]).sum()]
                     for c in map(np.array, clusters)], dtype=float)
    rng = np.random.default_rng(seed)
    reps = sums[rng.integers(0, len(clusters), size=(n_boot, len(clusters)))].sum(axis=1)
    ok = (reps[:, 1] > 0) & (reps[:, 3] > 0)
    diffs = reps[ok, 0] / reps[ok, 1] - reps[ok, 2] / reps[ok, 3]
    point = hits[flags].mean() - hits[~flags].mean()
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2]) if diffs.size else (float("nan"), float("nan"))
    return Interval(float(point), float(low), float(high), int(flags.size))


def motive_breakdown(examples: Sequence[Any], records: Sequence[Mapping[str, Any] | None], correct: Sequence[float],
                     groups: Sequence[str], source: str, *, n_boot: int = 2000, alpha: float = 0.05,
                     seed: int = 0) -> dict[str, Any] | None:
    """Accuracy of one row when its reason names the example's true motive vs not.

    Returns:
        ``{"source", "n", "named": {"n", "accuracy"}, "not_named": {...}, "diff": Interval, "by_motive":
        {motive: {"n", "named"}}}``, or None when the examples carry no motive or the row wrote no reasons.
    """
    if not examples or any(not ex.get("motive") for ex in examples):
        return None
    rows = [(ex.get("motive"), motives_named((rec or {}).get("reason")), float(hit), str(g))
            for ex, rec, hit, g in zip(examples, records, correct, groups, strict=True)]
    if not any((rec or {}).get("reason") for rec in records):
        return None
    named = [m in cues for m, cues, _, _ in rows]
    hits = [h for _, _, h, _ in rows]
    gs = [g for _, _, _, g in rows]

    def bucket(flag: bool) -> dict[str, Any]:
        sel = [(h, g) for f, h, g in zip(named, hits, gs, strict=True) if f == flag]
        return {"n": len(sel), "accuracy": bootstrap_ci([h for h, _ in sel], [g for _, g in sel], n_boot=n_boot,
                                                       alpha=alpha, seed=seed)}

    by_motive: dict[str, dict[str, int]] = {}
    for (motive, _, _, _), flag in zip(rows, named, strict=True):
        part = by_motive.setdefault(motive, {"n": 0, "named": 0})
        part["n"] += 1
        part["named"] += int(flag)
    return {"source": source, "n": len(rows), "ci_level": 1 - alpha, "named": bucket(True), "not_named": bucket(False),
            "diff": diff_of_groups_ci(named, hits, gs, n_boot=n_boot, alpha=alpha, seed=seed),
            "by_motive": by_motive}


def motive_claim(breakdowns: Sequence[Mapping[str, Any]], preferred: Sequence[str] = ()) -> dict[str, Any]:
    """Claim (c2) from the first breakdown (``preferred`` sources first) with at least :data:`MIN_PER_BUCKET`
    examples in each bucket."""
    statement = "Predictions are more accurate when the reason names the person's true motive (synthetic world)"
    order = [b for p in preferred for b in breakdowns if b["source"] == p]
    order += [b for b in breakdowns if b["source"] not in preferred]
    for b in order:
        if b["named"]["n"] >= MIN_PER_BUCKET and b["not_named"]["n"] >= MIN_PER_BUCKET:
            return {"id": "c2", "statement": f"{statement} ({b['source']})", "kind": "groups", "a": b["source"],
                    "n_a": b["named"]["n"], "n_b": b["not_named"]["n"],
                    "b": None, "metric": "AccEM", "diff": b["diff"], "p": None, "status": STATUS_OK,
                    "verdict": verdict(b["diff"]), "reason": "", "by_metric": {}, "ci_level": b.get("ci_level", 0.95)}
    why = ("no row wrote reasons on motive-world examples" if not breakdowns else
           f"fewer than {MIN_PER_BUCKET} examples in a bucket (reasons naming / not naming the true motive)")
    return {"id": "c2", "statement": statement, "kind": "groups", "a": None, "b": None, "metric": "AccEM",
            "diff": None, "p": None, "status": STATUS_NOT_RUN, "verdict": STATUS_NOT_RUN, "reason": why,
            "by_metric": {}}
