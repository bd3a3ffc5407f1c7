"""Paired comparison of ``programs.evaluate`` runs on the same examples: ``python -m experiments.compare_runs``.

Example::

    python -m experiments.compare_runs --runs runs/dev/nlsy79-return_markov,runs/dev/nlsy79-joint \\
        --metrics AccEM,Acc@5,MRR --output runs/dev/joint_vs_markov.md

The first run is the reference; every other run gets its mean with a person-bootstrap CI and its paired difference to
the reference (same persons resampled for both; one-sided p of ``run <= reference``). Examples are matched by person,
gold occupation and order, so the runs must cover the same examples (the same ``--split``, ``--max_examples`` and
``--seed``); a mismatch is an error. Each CI is for its own comparison (no multiplicity correction).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.bootstrap import bootstrap_ci, paired_bootstrap_diff
from experiments.tables import fmt_interval, metric_label
from programs.evaluate import read_run
from runkit.cli import run_cli
from runkit.config import load_config
from runkit.files import write_json

logger = logging.getLogger(__name__)


@dataclass
class CompareConfig:
    """Paired bootstrap comparison of evaluate runs against the first one."""

    runs: list[str] = field(default_factory=list, metadata={
        "help": "Run directories of python -m programs.evaluate (comma list); the first is the reference."})
    metrics: list[str] = field(default_factory=lambda: ["AccEM", "AccRM", "Acc@5", "MRR"], metadata={
        "help": "Per-example scores to compare (keys of each record's 'scores': AccEM, AccRM, Acc@k, MRR, soc_major)."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap replicates."})
    alpha: float = field(default=0.05, metadata={"help": "1 - confidence level of every interval."})
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})
    output: str | None = field(default=None, metadata={
        "help": "Write the markdown table here and the results dict beside it (.json); None: print only."})
    log_level: str = field(default="INFO", metadata={"help": "Logging level."})

    def __post_init__(self):
        if len(self.runs) < 2:
            raise ValueError(f"runs: give at least two run directories (reference first), got {len(self.runs)}.")
        if not self.metrics:
            raise ValueError("metrics must name at least one score, e.g. AccEM.")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100, got {self.n_boot}.")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}.")


def _keyed(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    seen: Counter = Counter()
    out = {}
    for rec in records:
        base = (str(rec["person_id"]), str(rec["gold_occupation"]))
        out[(*base, seen[base])] = rec
        seen[base] += 1
    return out


def _label(run_dir: str, results: dict[str, Any]) -> str:
    return f"{Path(run_dir).name} ({results.get('program', '?')})"


def compare_runs(config: CompareConfig) -> dict[str, Any]:
    """Compares every run with the first on their shared examples.

    Returns:
        ``{"dataset", "split", "n", "metrics", "alpha", "runs": [{"run_dir", "label", "program", "lm", "scores":
        {metric: {mean, low, high}}, "vs_reference": {metric: {mean, low, high, p}} (absent for the reference)}],
        "table"}`` -- means and bounds on the per-example scale (0-1).

    Raises:
        ValueError: When the runs differ in dataset or split, cover different examples, or lack a metric.
    """
    loaded = []
    for run in config.runs:
        res, recs = read_run(run)
        loaded.append((run, res, _keyed(recs)))
    ref_run, ref_res, ref = loaded[0]
    if not ref:
        raise ValueError(f"{ref_run}: predictions.jsonl holds no examples.")
    for run, res, keys in loaded[1:]:
        for key in ("dataset", "split"):
            if res.get(key) != ref_res.get(key):
                raise ValueError(f"{run}: {key} {res.get(key)!r} differs from the reference's {ref_res.get(key)!r}; "
                                 "compare runs of the same dataset and split.")
        if set(keys) != set(ref):
            only_ref, only_run = len(set(ref) - set(keys)), len(set(keys) - set(ref))
            raise ValueError(f"{run}: {only_run} examples not in the reference {ref_run} and {only_ref} of it missing; "
                             "evaluate both with the same --split, --max_examples and --seed.")
    order = list(ref)
    groups = [k[0] for k in order]
    per_run = []
    for run, res, keyed in loaded:
        missing = [m for m in config.metrics if m not in keyed[order[0]]["scores"]]
        if missing:
            raise ValueError(f"{run}: no per-example score {missing}; choose from {sorted(keyed[order[0]]['scores'])}.")
        per_run.append((run, res, {m: [float(keyed[k]["scores"][m] or 0.0) for k in order] for m in config.metrics}))
    ref_scores = per_run[0][2]
    rows: list[dict[str, Any]] = []
    for i, (run, res, scores) in enumerate(per_run):
        row: dict[str, Any] = {"run_dir": run, "label": _label(run, res), "program": res.get("program"),
                               "lm": res.get("lm"), "scores": {}}
        for m in config.metrics:
            iv = bootstrap_ci(scores[m], groups, n_boot=config.n_boot, alpha=config.alpha, seed=config.seed)
            row["scores"][m] = {"mean": iv.mean, "low": iv.low, "high": iv.high, "interval": iv}
            if i:
                diff, p = paired_bootstrap_diff(scores[m], ref_scores[m], groups, n_boot=config.n_boot,
                                                alpha=config.alpha, seed=config.seed)
                row.setdefault("vs_reference", {})[m] = {"mean": diff.mean, "low": diff.low, "high": diff.high,
                                                         "p": p, "interval": diff}
        rows.append(row)
    table = _markdown(rows, config.metrics, config.alpha, len(order))
    for row in rows:  # the Interval objects only served the table
        for part in ("scores", "vs_reference"):
            for v in row.get(part, {}).values():
                v.pop("interval")
    return {"dataset": ref_res.get("dataset"), "split": ref_res.get("split"), "n": len(order),
            "metrics": list(config.metrics), "alpha": config.alpha, "runs": rows, "table": table}


def _markdown(rows: list[dict[str, Any]], metrics: Sequence[str], alpha: float, n: int) -> str:
    level = f"{100 * (1 - alpha):.4g}%"
    head = " | ".join(f"{metric_label(m)} | Δ {metric_label(m)}" for m in metrics)
    lines = [f"{n} examples; means with {level} person-bootstrap CIs; Δ: paired difference to the first row.", "",
             f"| run | {head} |", "|---|" + "---|---|" * len(metrics)]
    for row in rows:
        cells = []
        for m in metrics:
            diff = row.get("vs_reference", {}).get(m)
            cells += [fmt_interval(row["scores"][m]["interval"], m),
                      "reference" if diff is None else fmt_interval(diff["interval"], m)]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints the comparison table (and writes it with ``--output``)."""

    def run(config: CompareConfig) -> dict[str, Any]:
        results = compare_runs(config)
        if config.output:
            out = Path(config.output)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(results["table"] + "\n", encoding="utf-8")
            write_json(out.with_suffix(".json"), results)
            logger.info("Wrote %s and %s", out, out.with_suffix(".json"))
        return results

    def report(results: dict[str, Any]) -> int:
        print(results["table"])
        return 0

    return run_cli(lambda: load_config(CompareConfig, argv, description=CompareConfig.__doc__), run, report)


if __name__ == "__main__":
    sys.exit(main())
