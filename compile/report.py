"""Markdown outputs of a compile run: ``data_card.md`` (the exported datasets) and ``report.md`` (the run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compile.config import OptimizeConfig
from compile.selection import CRITERIA
from lms.usage import format_table

EVAL_COLUMNS = ("AccEM", "AccRM", "Acc@5", "MRR", "soc_major", "judge_factuality", "judge_coherence",
                "judge_utility", "judge_oracle_score", "n", "errors")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def _hybrid_sentence(hybrid: dict) -> str:
    """The data card's sentence on the hybrid rows (``export_hybrid_traces``' summary)."""
    ranked = " (only those examples, each reason opened by the gold's rank)" if hybrid["reasons"] == "ranked" else ""
    return (f"Hybrid rows: {hybrid['examples']} oracle examples with the top {hybrid['k_candidates']} candidates of "
            f"`{hybrid['baseline']}` (cross-fitted over {hybrid['folds']} person folds); the gold is a candidate for "
            f"{hybrid['gold_in_candidates']}; reasons `{hybrid['reasons']}`{ranked}.")


def write_data_card(path: Path, config: OptimizeConfig, summary: dict, counts: dict[str, int], n_oracles: int,
                    n_missing: int, hybrid: dict | None = None) -> None:
    """Writes the dataset card: counts, score distributions, pass rates and thresholds (and the hybrid rows' source)."""
    lines = [
        "# nextocc oracle-trace datasets",
        "",
        f"Source: compile run on `{config.dataset}` (seed {config.seed}); teacher `{config.teacher_lm}`, "
        f"judge `{config.judge_lm}`; {config.candidates_per_person} candidates per example at temperature "
        f"{config.temperature}; rationalization {'on' if config.rationalize else 'off'}.",
        "",
        "Rows are TRL conversational prompt/completion (SFT) and prompt/chosen/rejected (DPO) records whose "
        "messages are exactly what the program's DSPy ChatAdapter sends and expects at inference.",
        "",
        "| file | rows |", "|---|---|",
        *[f"| `{name}` | {n} |" for name, n in counts.items()],
        "",
        f"Examples with an oracle reason: {n_oracles}; without (no candidate passed): {n_missing}.",
        *(["", _hybrid_sentence(hybrid)] if hybrid else []),
        "",
        "## Judge scores of all candidates",
        "",
        f"Candidates: {summary['candidates']} (judged {summary['judged']}, generation errors "
        f"{summary['generation_errors']}, judge failures {summary['judge_failures']}); eligible "
        f"{summary['eligible']} (pass rate {_fmt(summary['pass_rate'])}); mean oracle score "
        f"{_fmt(summary['oracle_score_mean'])}.",
        "",
        "| criterion | threshold | mean | pass rate | 1 | 2 | 3 | 4 | 5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for crit in CRITERIA:
        s = summary[crit]
        hist = " | ".join(str(s["histogram"][str(k)]) for k in range(1, 6))
        lines.append(f"| {crit} | {config.thresholds[crit]} | {_fmt(s['mean'])} | {_fmt(s['pass_rate'])} | {hist} |")
    lines += ["", "Data: O*NET 29.3 (USDOL/ETA, CC BY 4.0) and the dataset's own licence (see README)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cell(column: str, value: Any) -> str:
    if isinstance(value, float) and column in ("AccEM", "AccRM", "Acc@5", "soc_major"):
        return f"{value:.1f}"  # percentages
    if isinstance(value, float) and column.startswith("judge_") and column != "judge_oracle_score":
        return f"{value:.2f}"  # mean 1-5 scores
    return _fmt(value)


def evaluation_table(evals: dict[str, dict]) -> str:
    """Markdown table of evaluation rows (``program/split`` → metrics)."""
    head = "| program/split | " + " | ".join(EVAL_COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(EVAL_COLUMNS) + 1)]
    for name, m in evals.items():
        rows.append(f"| {name} | " + " | ".join(_cell(c, m.get(c)) for c in EVAL_COLUMNS) + " |")
    return "\n".join(rows)


def write_report(path: Path, results: dict) -> None:
    """Writes ``report.md``: what ran, phase times, selection summary and baseline-vs-optimized metrics."""
    cfg, sel, cand = results["config"], results["selection"], results["candidates"]
    lines = [
        f"# compile run `{Path(results['run_dir']).name}`",
        "",
        f"Dataset `{cfg['dataset']}`, mode `{cfg['mode']}`, optimizer `{cfg['optimizer']}`, teacher "
        f"`{cfg['teacher_lm']}`, judge `{cfg['judge_lm']}`, seed {cfg['seed']}. Wall time {results['seconds']} s "
        f"(phases: {results['phases_seconds']}).",
        "",
        "## Oracle reasons",
        "",
        f"- candidates generated this run: {cand['generated']}, reused from disk: {cand['skipped']}, "
        f"errors: {cand['errors']} ({cand['failed_examples']} examples affected)",
        f"- judged {sel['judged']} of {sel['candidates']}; pass rate {_fmt(sel['pass_rate'])}; mean judge scores: "
        + ", ".join(f"{c} {_fmt(sel[c]['mean'])}" for c in CRITERIA),
        f"- oracle reasons: {results['oracles']}; examples without one: {results['examples_without_oracle']}; "
        f"DPO pairs: {results['dpo_pairs']}",
        f"- exports: {results['exports']}",
        f"- grounding pass rate: {_fmt(results.get('grounding_pass_rate'))}; oracle gold-support rate: "
        f"{_fmt(results.get('oracle_gold_support_rate'))}; judge histograms (counts of 1-5): "
        + "; ".join(f"{c} {list((results.get('judge_histograms') or {}).get(c, {}).values())}" for c in CRITERIA),
        "",
        *optimizer_section(results.get("optimizer_changes")),
        "## Zero-shot vs optimized program",
        "",
        "Accuracy columns are percentages; judge columns are mean 1-5 scores (oracle score in [0, 1]); `errors` "
        "counts failed predictions.",
        "",
        evaluation_table(results["evaluation"]),
        "",
        *usage_section(results.get("lm_usage")),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def optimizer_section(changes: dict | None) -> list[str]:
    """Markdown lines: what the optimizer changed (demos, instruction diffs, candidates tried)."""
    if not changes:
        return []
    lines = ["## What the optimizer changed", "", changes["summary"], ""]
    if changes.get("predictors"):
        lines += ["| predictor | demos before | demos after | instruction rewritten |", "|---|---|---|---|"]
        lines += [f"| {name} | {e['demos_before']} | {e['demos_after']} | {'yes' if e['instruction_changed'] else 'no'} |"
                  for name, e in changes["predictors"].items()]
        lines.append("")
    for name, e in (changes.get("predictors") or {}).items():
        if e.get("instruction_diff"):
            lines += [f"Instruction diff of `{name}`:", "", "```diff", e["instruction_diff"], "```", ""]
    tried = changes.get("candidates_tried") or []
    if tried:
        lines += [f"Candidates tried: {len(tried)}; scores: " + ", ".join(_fmt(c.get("score")) for c in tried), ""]
    return lines


def usage_section(lm_usage: dict | None) -> list[str]:
    """Markdown lines: the LM usage table per role (requests, retries, errors, HTTP classes, cache hits)."""
    if not lm_usage:
        return []
    lines = ["## LM usage per role", "",
             "Requests are attempts sent to an LM; retries are attempts after a failure (DSPy's backoff and the "
             "pipeline's own re-asks); errors are calls that still failed or replies that could not be parsed.", "",
             format_table(lm_usage), ""]
    last = [(role, u["last_error"]) for role, u in lm_usage.items() if u.get("last_error")]
    lines += [f"- last {role} error: {err}" for role, err in last]
    return lines + ([""] if last else [])


def write_failure_report(path: Path, failure: dict) -> None:
    """Writes ``report.md`` of a run that stopped: the reason, what was kept, and the LM usage."""
    cand = failure.get("candidates") or {}
    lines = [f"# compile run `{Path(failure['run_dir']).name}`: failed", "", f"**{failure['error']}**", ""]
    if cand or failure.get("candidates_written") is not None:
        lines += [f"- candidate lines written this run: {failure.get('candidates_written', '–')}; "
                  f"errors: {cand.get('errors', '–')}", ""]
    if failure.get("evaluation"):
        lines += [evaluation_table(failure["evaluation"]), ""]
    lines += usage_section(failure.get("lm_usage"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
