"""PNG plots of the paper claims (matplotlib, Agg backend): accuracy by model with CI bars, accuracy vs reason quality."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.quality import CRITERIA  # noqa: E402
from experiments.tables import fmt_level, metric_label, metric_scale  # noqa: E402

GROUP_COLORS = {"supervised": "#4C72B0", "zero-shot LM": "#DD8452", "compiled": "#937860", "distilled": "#55A868",
                "hybrid": "#8172B3", "ceiling": "#7f7f7f"}


def plot_accuracy(table: Sequence[Mapping[str, Any]], path: str | Path, metric: str = "AccEM",
                  title: str | None = None, level: float = 0.95) -> Path:
    """Horizontal bars of one metric per model with CI whiskers; rows that did not run are labelled so.

    Args:
        table: :func:`experiments.tables.accuracy_table` rows.
        path: The PNG to write.
        metric: The metric to plot.
        title: Plot title.
        level: The CIs' confidence level (for the axis label).

    Returns:
        The written path.
    """
    scale = metric_scale(metric)
    labels, means, errs, colors, oks = [], [], [[], []], [], []
    for row in table:
        iv = (row.get("metrics") or {}).get(metric)
        ok = iv is not None and iv.n > 0 and not math.isnan(iv.mean)
        labels.append(row["label"] if ok else f"{row['label']} ({row['status']})")
        mean = iv.mean * scale if ok else 0.0
        means.append(mean)
        errs[0].append(max(mean - iv.low * scale, 0.0) if ok else 0.0)
        errs[1].append(max(iv.high * scale - mean, 0.0) if ok else 0.0)
        colors.append(GROUP_COLORS.get(row.get("group", ""), "#999999") if ok else "#dddddd")
        oks.append(ok)
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(labels), 2) + 1.2))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, means, xerr=errs, color=colors, capsize=3, ecolor="black")
    top = max([m + e for m, e in zip(means, errs[1], strict=True)] + [1e-9])
    for yi, mean, hi, ok in zip(y, means, errs[1], oks, strict=True):
        if ok:
            ax.text(mean + hi + 0.01 * top, yi, f"{mean:.3f}" if metric == "MRR" else f"{mean:.1f}",
                    va="center", fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    unit = "" if metric == "MRR" else " (%)"
    ax.set_xlabel(f"{metric_label(metric)}{unit}, {fmt_level(level)} bootstrap CI")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_quality(qualities: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Accuracy per reason-quality bucket (one panel per criterion, one line per source) with CI bars (the level
    each result records as ``ci_level``).

    Args:
        qualities: :func:`experiments.tables.quality_buckets` results (one per source).
        path: The PNG to write.
        title: Figure title.

    Returns:
        The written path.
    """
    fig, axes = plt.subplots(1, len(CRITERIA), figsize=(3.2 * len(CRITERIA), 3.2), sharey=True)
    for ax, criterion in zip(axes, CRITERIA, strict=True):
        for q in qualities:
            part = q["criteria"].get(criterion)
            if not part:
                continue
            xs, ys, lo, hi = [], [], [], []
            for i, b in enumerate(part["buckets"]):
                iv = b["accuracy"]
                if iv.n == 0 or math.isnan(iv.mean):
                    continue
                xs.append(i)
                ys.append(100 * iv.mean)
                lo.append(max(100 * (iv.mean - iv.low), 0.0))
                hi.append(max(100 * (iv.high - iv.mean), 0.0))
            if xs:
                rho = part["spearman"].mean
                label = q["source"] + ("" if math.isnan(rho) else f" (rho={rho:.2f})")
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
        buckets = [b["bucket"] for b in next((q["criteria"][criterion]["buckets"] for q in qualities
                                               if criterion in q["criteria"]), [])]
        ax.set_xticks(range(len(buckets)))
        ax.set_xticklabels(buckets, fontsize=7, rotation=15)
        ax.set_title(criterion, fontsize=9)
        ax.set_xlim(-0.5, max(len(buckets), 1) - 0.5)
    level = next((q["ci_level"] for q in qualities if "ci_level" in q), 0.95)
    axes[0].set_ylabel(f"accuracy (%), {fmt_level(level)} CI")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=min(len(labels), 3))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if handles else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
