"""The paper's claims from the rows of Table A: paired differences (a), (b) and the reason-quality claim (c)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from experiments.rows import LM_FREE_ROWS, SUPERVISED
from experiments.tables import STATUS_FAILED, STATUS_NOT_RUN, STATUS_OK, RowScores, metric_names, paired_claim, verdict


def _first_ok(rows: Mapping[str, RowScores], names: Sequence[str]) -> RowScores | None:
    return next((rows[n] for n in names if n in rows and rows[n].ok), None)


def _mean(row: RowScores, metric: str) -> float:
    values = row.scores[metric]
    return sum(values) / len(values) if values else float("-inf")


def build_claims(rows: Mapping[str, RowScores], config: Any, quality: Sequence[Mapping[str, Any]] = ()
                 ) -> list[dict[str, Any]]:
    """Claims (a), (b) as paired differences (every metric; the verdict on ``primary_metric``) and (c) from the
    reason-quality correlation.

    Returns:
        Claim dicts: ``id``, ``statement``, ``kind`` (paired or correlation), ``a``, ``b``, ``metric``, ``diff``
        (Interval), ``p``, ``verdict``, ``reason``, ``by_metric`` (paired: every metric).
    """
    metric = config.primary_metric
    boot = {"n_boot": config.n_boot, "alpha": config.alpha, "seed": config.seed}
    distilled = _first_ok(rows, ("distilled_joint", "distilled_two_model"))
    sup_ok = [rows[n] for n in SUPERVISED if n in rows and rows[n].ok]
    best_sup = max(sup_ok, key=lambda r: _mean(r, metric)) if sup_ok else None
    d_label = f"{distilled.label.lower()} student" if distilled else "distilled student"

    def paired(cid: str, statement: str, a: RowScores | None, b: RowScores | None, missing: str) -> dict[str, Any]:
        if a is None or b is None:
            return {"id": cid, "statement": statement, "kind": "paired", "a": a.name if a else None,
                    "b": b.name if b else None, "metric": metric, "diff": None, "p": None, "status": STATUS_NOT_RUN,
                    "verdict": STATUS_NOT_RUN, "reason": missing, "by_metric": {}}
        main = paired_claim(a, b, metric, **boot)
        by_metric = {m: paired_claim(a, b, m, **boot) for m in metric_names(config.k)}
        return {"id": cid, "statement": statement, "kind": "paired", **main,
                "by_metric": {m: {"diff": c["diff"], "p": c["p"], "verdict": c["verdict"]}
                              for m, c in by_metric.items()}}

    no_distilled = "no distilled student row ran (see Table A for the distill command)"
    claims = [
        paired("a1", f"The {d_label} is more accurate than the zero-shot LM (two-step)", distilled,
               _first_ok(rows, ("zero_shot_two_step",)),
               no_distilled if distilled is None else "the zero-shot two-step row did not run"),
        paired("a2", f"The {d_label} is more accurate than the best supervised baseline"
               + (f" ({best_sup.label})" if best_sup else ""), distilled, best_sup,
               no_distilled if distilled is None else "no supervised baseline ran"),
        paired("a3", f"The {d_label} is more accurate than the optimized prompt", distilled,
               _first_ok(rows, ("optimized",)),
               no_distilled if distilled is None else "the optimized-prompt row did not run"),
        paired("b", "The joint student is more accurate than the two-model student",
               _first_ok(rows, ("distilled_joint",)), _first_ok(rows, ("distilled_two_model",)),
               "both distilled joint and distilled two-model rows are needed"),
    ]
    claims.append(quality_claim(quality))
    return claims


def quality_claim(quality: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Claim (c): higher judged reason quality (oracle score) goes with correct predictions -- supported when the
    person-level bootstrap CI of the Spearman correlation (first source with data) is above 0."""
    statement = "Reasons the judge scores higher (oracle score) come with more accurate predictions"
    for q in quality:
        part = q["criteria"].get("oracle_score") or {}
        iv = part.get("spearman")
        if iv is not None and iv.n >= 3 and iv.mean == iv.mean and iv.low == iv.low:
            return {"id": "c", "statement": f"{statement} ({q['source']})", "kind": "correlation", "a": q["source"],
                    "b": None, "metric": "spearman", "diff": iv, "p": None, "status": STATUS_OK,
                    "verdict": verdict(iv), "reason": "", "pointbiserial": part.get("pointbiserial"),
                    "by_metric": {c: {"spearman": q["criteria"][c]["spearman"],
                                      "pointbiserial": q["criteria"][c]["pointbiserial"]} for c in q["criteria"]}}
    return {"id": "c", "statement": statement, "kind": "correlation", "a": None, "b": None, "metric": "spearman",
            "diff": None, "p": None, "status": STATUS_NOT_RUN, "verdict": STATUS_NOT_RUN,
            "reason": "no judged reasons with varying scores and outcomes (compile candidates or judge_lm)",
            "by_metric": {}}


def unusable_lm_rows(results: dict[str, Any]) -> list[str]:
    """``row: note`` of the failed LM rows when no LM row produced a result (else ``[]``): a run whose every LM call
    failed must not look like a result."""
    failed, ok = [], 0
    for dataset, part in results["datasets"].items():
        for name, row in (part.get("rows") or {}).items():
            if name in LM_FREE_ROWS:
                continue
            if row["status"] == STATUS_FAILED:
                failed.append(f"{dataset}/{name}: {' '.join(str(row.get('note') or '').split())[:200]}")
            elif row["status"] == STATUS_OK:
                ok += 1
    return failed if failed and not ok else []
