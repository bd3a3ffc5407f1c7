"""The paper's claims from the rows of Table A: paired differences (a), (b), the hybrid student against its parents
(h), the joint student against the synthetic world's Bayes ceiling (s) and the reason-quality claim (c).

Claims (a1)-(a3) compare the paper's student (the joint one); (a1_best)-(a4_best) compare the best of the distilled
students that ran, picked by its mean on this same sample -- so their CIs are Bonferroni-widened over the number of
students compared (each at level ``1 - alpha / n_students``), which keeps the family of comparisons the pick was made
from at ``1 - alpha``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments.bootstrap import paired_bootstrap_diff
from experiments.rows import DISTILL_ROWS, LM_FREE_ROWS, SUPERVISED
from experiments.tables import STATUS_FAILED, STATUS_NOT_RUN, STATUS_OK, RowScores, metric_names, paired_claim, verdict

CEILING_SHARE = 0.8  # the joint student should reach this share of the history-only Bayes ceiling


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

    def paired(cid: str, statement: str, a: RowScores | None, b: RowScores | None, missing: str,
               alpha: float | None = None) -> dict[str, Any]:
        opts = {**boot, "alpha": boot["alpha"] if alpha is None else alpha}
        level = {"ci_level": 1 - opts["alpha"]}
        if a is None or b is None:
            return {"id": cid, "statement": statement, "kind": "paired", "a": a.name if a else None,
                    "b": b.name if b else None, "metric": metric, "diff": None, "p": None, "status": STATUS_NOT_RUN,
                    "verdict": STATUS_NOT_RUN, "reason": missing, "by_metric": {}, **level}
        main = paired_claim(a, b, metric, **opts)
        by_metric = {m: paired_claim(a, b, m, **opts) for m in metric_names(config.k)}
        return {"id": cid, "statement": statement, "kind": "paired", **main, **level,
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
    claims += best_student_claims(rows, metric, boot["alpha"], best_sup, paired)
    hybrid = _first_ok(rows, ("distilled_hybrid",))
    no_hybrid = "the distilled hybrid row did not run (finetune.distill --mode hybrid)"
    parent = hybrid_parent(hybrid)
    parent_label = rows[parent].label if parent in rows else parent
    claims += [
        paired("h1", f"The hybrid student is more accurate than its supervised baseline ({parent_label})", hybrid,
               _first_ok(rows, (parent,)), no_hybrid if hybrid is None else f"the {parent} row did not run"),
        paired("h2", "The hybrid student is more accurate than the plain joint student", hybrid,
               _first_ok(rows, ("distilled_joint",)), no_hybrid if hybrid is None else "the distilled joint row did not run"),
    ]
    ceiling = _first_ok(rows, ("bayes_optimal",))
    if ceiling is not None:
        claims.append(ceiling_claim(_first_ok(rows, ("distilled_joint",)), ceiling, metric, boot))
    claims.append(quality_claim(quality))
    return claims


def hybrid_parent(hybrid: RowScores | None) -> str:
    """The row of the supervised baseline whose candidates the hybrid student read (its distill run's baseline kind;
    ``return_markov`` when the row does not say)."""
    kind = hybrid.extra.get("baseline_kind") if hybrid is not None else None
    return kind if kind in SUPERVISED else "return_markov"


def best_student_claims(rows: Mapping[str, RowScores], metric: str, alpha: float, best_sup: RowScores | None,
                        paired: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """Claims (a1_best)-(a4_best): the distilled student with the highest mean ``metric`` on this sample against the
    zero-shot LM, the best supervised row, the optimized prompt and the return-aware Markov chain, with Bonferroni
    CIs (``alpha / n_students``); none when no student ran."""
    students = [rows[n] for n in DISTILL_ROWS if n in rows and rows[n].ok]
    if not students:
        return []
    best = max(students, key=lambda r: _mean(r, metric))  # the first of equals, in DISTILL_ROWS order
    wide = alpha / len(students)
    who = (f"The best distilled student ({best.label}: the highest {metric} of the {len(students)} students here; "
           "Bonferroni CI for that pick)")
    out = [
        paired("a1_best", f"{who} is more accurate than the zero-shot LM (two-step)", best,
               _first_ok(rows, ("zero_shot_two_step",)), "the zero-shot two-step row did not run", wide),
        paired("a2_best", f"{who} is more accurate than the best supervised baseline"
               + (f" ({best_sup.label})" if best_sup else ""), best, best_sup, "no supervised baseline ran", wide),
        paired("a3_best", f"{who} is more accurate than the optimized prompt", best, _first_ok(rows, ("optimized",)),
               "the optimized-prompt row did not run", wide),
    ]
    markov = _first_ok(rows, ("return_markov",))
    if markov is not None and markov is not best_sup:
        out.append(paired("a4_best", f"{who} is more accurate than the return-aware Markov chain", best, markov,
                          "the return_markov row did not run", wide))
    return out


def ceiling_claim(student: RowScores | None, ceiling: RowScores, metric: str, boot: Mapping[str, Any],
                  share: float = CEILING_SHARE) -> dict[str, Any]:
    """Claim (s): the joint student reaches ``share`` of the Bayes-optimal row, as the paired difference
    ``student - share * ceiling`` (supported when its CI is above 0)."""
    statement = (f"The joint student reaches {share:.0%} of the history-only Bayes ceiling (difference: student "
                 f"minus {share:g} x ceiling)")
    base = {"id": "s", "statement": statement, "kind": "paired", "a": student.name if student else None,
            "b": ceiling.name, "metric": metric, "by_metric": {}, "ci_level": 1 - boot["alpha"]}
    if student is None:
        return {**base, "diff": None, "p": None, "status": STATUS_NOT_RUN, "verdict": STATUS_NOT_RUN,
                "reason": "the distilled joint row did not run"}
    if student.keys != ceiling.keys:
        raise ValueError("the joint student and the Bayes row were scored on different examples.")
    diff, p = paired_bootstrap_diff(student.scores[metric], [share * v for v in ceiling.scores[metric]],
                                    student.groups, **boot)
    return {**base, "diff": diff, "p": p, "status": STATUS_OK, "verdict": verdict(diff), "reason": ""}


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
                    "ci_level": q.get("ci_level", 0.95),
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
