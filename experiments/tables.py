"""Table assembly for the paper claims: per-row per-example scores, bootstrap CIs, paired claims, quality buckets.

Everything here is LM-free and works on plain per-example records, so it is tested on fixture run directories:

* :class:`RowScores` -- one row of Table A: per-example scores (0/1 hits, AccRM credit, reciprocal rank) aligned
  with the example keys and person ids of the shared test sample, or a ``status`` ("not run", "failed") with the
  command that would produce it.
* :func:`example_key` / :func:`align_records` -- match prediction records (from any run directory) to the test
  sample; :func:`scores_from_records` recomputes the metrics with :func:`metrics.accuracy.score_example` so rows
  from different run directories are scored the same way.
* :func:`accuracy_table` -- mean and ``1 - alpha`` person-level bootstrap CI per metric (:mod:`experiments.bootstrap`).
* :func:`paired_claim` -- a difference of two rows on the same examples with a paired bootstrap CI and a verdict.
* claim (c), accuracy by reason-quality bucket, is in :mod:`experiments.quality`.
* :func:`render_markdown` -- ``claims.md``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experiments.bootstrap import Interval, bootstrap_ci, paired_bootstrap_diff
from metrics.accuracy import score_example

BASE_METRICS = ("AccEM", "AccRM", "Acc@{k}", "MRR", "soc_major")
METRIC_LABELS = {"AccEM": "AccEM", "AccRM": "AccRM", "MRR": "MRR", "soc_major": "SOC-major"}
STATUS_OK = "ok"
STATUS_NOT_RUN = "not run"
STATUS_FAILED = "failed"


def metric_names(k: int = 5) -> tuple[str, ...]:
    """The Table A columns for cut-off ``k``: AccEM, AccRM, Acc@k, MRR, soc_major."""
    return tuple(m.format(k=k) for m in BASE_METRICS)


def metric_label(metric: str) -> str:
    """Column header of a metric (``soc_major`` -> ``SOC-major``)."""
    return METRIC_LABELS.get(metric, metric)


def metric_scale(metric: str) -> float:
    """Display scale: percent for accuracies, 1 for MRR."""
    return 1.0 if metric == "MRR" else 100.0


# ---------------------------------------------------------------------- keys and alignment
def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    getter = getattr(obj, "get", None)
    if callable(getter):
        try:
            return getter(name, default)
        except TypeError:
            pass
    return getattr(obj, name, default)


def example_key(obj: Any) -> str:
    """A stable key of one transition (example or prediction record): person id plus a hash of the history.

    Matches :func:`compile.candidates.example_id` for examples with a history. Without a history (baseline records of
    ``programs.evaluate``) the gold codes stand in for it.
    """
    pid = _field(obj, "person_id", None)
    pid = "anon" if pid is None else str(pid)
    history = _field(obj, "history", None)
    if history is not None:
        return f"{pid}#{hashlib.sha1(str(history).encode('utf-8')).hexdigest()[:10]}"
    gold = _field(obj, "gold_codes", None) or []
    return f"{pid}#gold:{','.join(sorted(map(str, gold)))}"


def align_records(examples: Sequence[Any], records: Iterable[Mapping[str, Any]]) -> tuple[list[Any], list[int]]:
    """Orders prediction records like ``examples``.

    Returns:
        ``(aligned, missing)``: one record (or None) per example, and the indices of the examples without one.
        Records are matched on :func:`example_key`; a record without a history falls back to its person id when that
        person has exactly one example in ``examples`` and the gold codes agree.
    """
    by_key: dict[str, Mapping[str, Any]] = {}
    by_person: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        if not isinstance(rec, Mapping):
            continue
        if rec.get("history") is not None:
            by_key.setdefault(example_key(rec), rec)
        else:
            by_person.setdefault(str(rec.get("person_id")), []).append(rec)
    aligned: list[Any] = []
    missing: list[int] = []
    for i, ex in enumerate(examples):
        rec = by_key.get(example_key(ex))
        if rec is None:
            gold = sorted(map(str, _field(ex, "gold_codes", None) or []))
            for cand in by_person.get(str(_field(ex, "person_id", None)), []):
                if not gold or sorted(map(str, cand.get("gold_codes") or [])) == gold:
                    rec = cand
                    break
        aligned.append(rec)
        if rec is None:
            missing.append(i)
    return aligned, missing


def scores_from_records(examples: Sequence[Any], records: Sequence[Mapping[str, Any] | None], taxonomy: Any,
                        k: int = 5) -> dict[str, list[float]]:
    """Per-example scores of aligned records, recomputed with :func:`metrics.accuracy.score_example`.

    A record (dict with ``occupation``/``onet_code``/``matched``/``ranked``) is scored as a prediction; a missing
    record (None) scores 0 everywhere. Without a taxonomy the records' own ``scores`` rows are used.
    """
    names = metric_names(k)
    out: dict[str, list[float]] = {m: [] for m in names}
    for ex, rec in zip(examples, records, strict=True):
        if rec is None:
            row: Mapping[str, Any] = {}
        elif taxonomy is not None:
            pred = {key: rec.get(key) for key in ("occupation", "onet_code", "matched", "ranked")}
            if pred["matched"] is None:
                pred.pop("matched")
            row = score_example(ex, pred, taxonomy, ks=tuple(sorted({1, k})))
        else:
            row = rec.get("scores") or {}
        for m in names:
            value = row.get(m)
            out[m].append(float(value) if isinstance(value, (int, float)) else 0.0)
    return out


# ---------------------------------------------------------------------- rows
@dataclass
class RowScores:
    """One row of Table A.

    Attributes:
        name: Row id (e.g. ``markov``, ``distilled_joint``).
        label: Display name.
        group: Family (supervised, zero-shot LM, compiled, distilled, hybrid, ceiling).
        status: ``ok``, ``not run`` or ``failed``.
        keys: Example keys of the shared test sample (same order in every ok row).
        groups: Person id per example (bootstrap clusters).
        scores: Per-example values per metric.
        source: Where the predictions came from (a run directory, "fitted on train", "run here").
        note: Free text (why not run, reuse details).
        command: The command that produces a missing row.
        extra: Anything else for claims.json (e.g. the distill run's own before/after metrics).
    """

    name: str
    label: str
    group: str
    status: str = STATUS_OK
    keys: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    source: str = ""
    note: str = ""
    command: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK and bool(self.keys)

    @property
    def n(self) -> int:
        return len(self.keys)


def interval_dict(iv: Interval, scale: float = 1.0) -> dict[str, float | int | None]:
    """JSON form of an interval (NaN becomes None)."""

    def num(x: float) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x * scale, 6)

    return {"mean": num(iv.mean), "low": num(iv.low), "high": num(iv.high), "n": iv.n}


def accuracy_table(rows: Sequence[RowScores], k: int = 5, *, n_boot: int = 2000, alpha: float = 0.05,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Table A: per row, ``{metric: Interval}`` over persons plus ``n``, ``status``, ``note``, ``command``.

    Returns:
        One dict per row: ``name``, ``label``, ``group``, ``status``, ``n``, ``source``, ``note``, ``command`` and
        ``metrics`` (``{metric: Interval}``; empty for rows that did not run).
    """
    out = []
    for row in rows:
        metrics: dict[str, Interval] = {}
        if row.ok:
            for m in metric_names(k):
                metrics[m] = bootstrap_ci(row.scores[m], row.groups, n_boot=n_boot, alpha=alpha, seed=seed)
        out.append({"name": row.name, "label": row.label, "group": row.group, "status": row.status, "n": row.n,
                    "source": row.source, "note": row.note, "command": row.command, "metrics": metrics})
    return out


# ---------------------------------------------------------------------- claims
def verdict(iv: Interval | None, direction: int = 1) -> str:
    """``supported`` when the CI of (a - b) excludes 0 in the claimed direction, ``contradicted`` when it excludes 0
    in the other direction, ``inconclusive`` otherwise (``not run`` without an interval)."""
    if iv is None or iv.n == 0 or math.isnan(iv.low):
        return STATUS_NOT_RUN
    lo, hi = (iv.low, iv.high) if direction >= 0 else (-iv.high, -iv.low)
    if lo > 0:
        return "supported"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


def paired_claim(a: RowScores | None, b: RowScores | None, metric: str, *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0, direction: int = 1) -> dict[str, Any]:
    """Difference ``a - b`` of one metric on the same examples, with a paired person-level bootstrap CI.

    Returns:
        ``{"a", "b", "metric", "status", "diff" (Interval or None), "p", "verdict", "reason"}``; ``verdict`` is
        :func:`verdict`'s, or ``not run`` when a row is missing.

    Raises:
        ValueError: When both rows ran but on different examples (a paired comparison would be invalid).
    """
    out: dict[str, Any] = {"a": a.name if a else None, "b": b.name if b else None, "metric": metric,
                           "diff": None, "p": None}
    missing = [r.name for r in (a, b) if r is not None and not r.ok] + [None for r in (a, b) if r is None]
    if missing:
        out.update(status=STATUS_NOT_RUN, verdict=STATUS_NOT_RUN,
                   reason=f"row(s) not available: {', '.join(str(m) for m in missing)}")
        return out
    if a.keys != b.keys:
        raise ValueError(f"rows {a.name} and {b.name} were scored on different examples; cannot pair them.")
    diff, p = paired_bootstrap_diff(a.scores[metric], b.scores[metric], a.groups, n_boot=n_boot, alpha=alpha,
                                    seed=seed)
    out.update(status=STATUS_OK, diff=diff, p=p if direction >= 0 else 1 - p, verdict=verdict(diff, direction),
               reason="")
    return out


# ---------------------------------------------------------------------- JSON and markdown
def jsonable(obj: Any, scale_of: Callable[[str], float] | None = None) -> Any:
    """Intervals to dicts (recursively); metric intervals under a metric key are scaled for display."""
    if isinstance(obj, Interval):
        return interval_dict(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, scale_of) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, scale_of) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def fmt_level(level: float) -> str:
    """A confidence level as a percentage: ``0.95`` -> ``95%``, ``1 - 0.05 / 4`` -> ``98.75%``."""
    return f"{100 * level:.4g}%"


def fmt_interval(iv: Interval | None, metric: str = "AccEM") -> str:
    """``mean [low, high]`` scaled for the metric (percent, MRR as a fraction); ``-`` when missing."""
    if iv is None or iv.n == 0 or math.isnan(iv.mean):
        return "-"
    if metric == "MRR":
        return iv.fmt(scale=1.0, digits=3)
    if metric in ("spearman", "pointbiserial", "corr"):
        if math.isnan(iv.low):
            return f"{iv.mean:.3f}"
        return iv.fmt(scale=1.0, digits=3)
    return iv.fmt(scale=100.0, digits=1)


def table_markdown(table: Sequence[Mapping[str, Any]], k: int = 5) -> str:
    """Markdown of :func:`accuracy_table`: one line per row, CIs in brackets, "not run" rows with their command."""
    names = metric_names(k)
    lines = ["| model | group | " + " | ".join(metric_label(m) for m in names) + " | n |",
             "|---|---|" + "---|" * len(names) + "---|"]
    notes = []
    for row in table:
        if row["status"] == STATUS_OK and row["metrics"]:
            cells = [fmt_interval(row["metrics"][m], m) for m in names]
            lines.append(f"| {row['label']} | {row['group']} | " + " | ".join(cells) + f" | {row['n']} |")
        else:
            lines.append(f"| {row['label']} | {row['group']} | " + " | ".join([row["status"]] * len(names))
                         + " | 0 |")
            detail = (row.get("note") or "").strip().rstrip(".")
            detail = f"{detail}." if detail else ""
            if row.get("command"):
                detail += f" Command: `{row['command']}`"
            notes.append(f"- **{row['label']}** ({row['status']}): {detail.strip()}")
    return "\n".join(lines + ([""] + notes if notes else []))


def claim_sentence(claim: Mapping[str, Any]) -> str:
    """One sentence stating whether the data supports the claim, from its CI."""
    metric = claim["metric"]
    if claim["verdict"] == STATUS_NOT_RUN:
        return f"{claim['statement']}: **not run** ({claim.get('reason') or 'a row is missing'})."
    diff = claim["diff"]
    level = fmt_level(claim.get("ci_level", 0.95))
    if claim.get("kind") == "correlation":
        text = (f"{claim['statement']}: **{claim['verdict']}** — Spearman correlation of the score with correctness "
                f"{fmt_interval(diff, 'corr')} (person-level {level} bootstrap CI, {diff.n} judged reasons)")
        if claim["verdict"] == "supported":
            return text + ", the CI is above 0."
        if claim["verdict"] == "contradicted":
            return text + ", the CI is below 0."
        return text + ", the CI includes 0."
    unit = "" if metric == "MRR" else " points"
    if claim.get("kind") == "groups":
        text = (f"{claim['statement']}: **{claim['verdict']}** — {metric_label(metric)} when named minus when not "
                f"{fmt_interval(diff, metric)}{unit} (person-level {level} bootstrap CI; {claim.get('n_a')} vs "
                f"{claim.get('n_b')} examples)")
        return text + (", the CI includes 0." if claim["verdict"] == "inconclusive" else
                       ", the CI excludes 0" + (" in the claimed direction." if claim["verdict"] == "supported"
                                                 else " in the opposite direction."))
    text = (f"{claim['statement']}: **{claim['verdict']}** — {metric_label(metric)} difference "
            f"{fmt_interval(diff, metric)}{unit} (paired {level} bootstrap CI over {diff.n} examples)")
    if claim["verdict"] == "supported":
        return text + ", the CI excludes 0 in the claimed direction."
    if claim["verdict"] == "contradicted":
        return text + ", the CI excludes 0 in the opposite direction."
    return text + ", the CI includes 0."


def quality_markdown(quality: Mapping[str, Any]) -> str:
    """Markdown of :func:`quality_buckets` for one source."""
    lines = [f"Source: {quality['source']} ({quality['n']} judged reasons)", "",
             "| criterion | " + " | ".join(f"bucket {i + 1}" for i in range(3)) + " | Spearman | point-biserial |",
             "|---|---|---|---|---|---|"]
    for c, part in quality["criteria"].items():
        cells = [f"{b['bucket']}: {fmt_interval(b['accuracy'])} (n={b['n']})" for b in part["buckets"]]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {fmt_interval(part['spearman'], 'corr')} | "
                     f"{fmt_interval(part['pointbiserial'], 'corr')} |")
    return "\n".join(lines)


def motive_markdown(b: Mapping[str, Any]) -> str:
    """One row of the claim (c2) table (:func:`experiments.motives.motive_breakdown`)."""
    def acc(part: Mapping[str, Any]) -> str:
        return "-" if not part["n"] else f"{fmt_interval(part['accuracy'])} (n={part['n']})"

    return f"| {b['source']} | {acc(b['named'])} | {acc(b['not_named'])} | {fmt_interval(b['diff'])} |"


def render_markdown(results: Mapping[str, Any]) -> str:
    """``claims.md``: per dataset, Table A, the claims (one sentence each) and the reason-quality tables."""
    k = results.get("k", 5)
    out = ["# Paper claims", "",
           f"{fmt_level(1 - results.get('alpha', 0.05))} person-level bootstrap CIs ({results.get('n_boot')} "
           "replicates); every row is scored on the same seeded per-person test sample, so differences are paired.",
           ""]
    for ds, part in results["datasets"].items():
        out += [f"## Dataset `{ds}` ({part['n_test']} test examples, {part['n_persons']} persons)", "",
                "### Table A — accuracy", "", table_markdown(part["table"], k), ""]
        out += [f"**Warning:** {w}." for w in part.get("warnings") or []] + ([""] if part.get("warnings") else [])
        if part.get("bayes_optimal_expected") is not None:
            out += [f"Bayes-optimal expected AccEM (mean of max next-occupation probability over these examples): "
                    f"{100 * part['bayes_optimal_expected']:.1f}%.", ""]
        reported = [(r, info["distill_reported_evaluation"]) for r, info in (part.get("rows") or {}).items()
                    if isinstance(info.get("distill_reported_evaluation"), Mapping)]
        if reported:
            out += ["Distill runs' own before/after evaluation (their own test sample; not paired with Table A):", ""]
            for name, ev in reported:
                parts = [f"{label}: " + ", ".join(f"{m} {v:.2f}" if isinstance(v, float) else f"{m} {v}"
                                                  for m, v in (ev.get(key) or {}).get("metrics", {}).items())
                         for key, label in (("before", "before"), ("after", "after"))
                         if (ev.get(key) or {}).get("available")]
                out.append(f"- {name}: " + ("; ".join(parts) if parts else f"unavailable ({ev.get('reason')})"))
            out.append("")
        out += ["### Claims", ""]
        out += [f"- ({c['id']}) {claim_sentence(c)}" for c in part["claims"]]
        out += ["", "### Claim (c) — accuracy by reason quality", ""]
        if part.get("quality"):
            for q in part["quality"]:
                out += [quality_markdown(q), ""]
        else:
            out += ["No judged reasons (no compile run candidates and no judge configured).", ""]
        if part.get("motives"):
            out += ["### Claim (c2) — accuracy when the reason names the true motive", "",
                    "| row | reason names the true motive | reason does not | difference |", "|---|---|---|---|"]
            out += [motive_markdown(b) for b in part["motives"]] + [""]
        if part.get("plots"):
            out += [f"![{name}]({path})" for name, path in part["plots"].items()] + [""]
    return "\n".join(out) + "\n"
