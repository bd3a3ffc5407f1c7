"""Candidate-aware oracle traces for the hybrid student (:class:`programs.hybrid.HybridNextOccupation`).

The oracle traces of :mod:`compile.export`, formatted for the hybrid program's ``*WithCandidates`` signatures: each
row's prompt also holds a supervised baseline's top candidates. A training person's candidates come from a baseline
fitted *without* that person (cross-fitting over person folds of the training split), so the student learns to weigh
candidates as good as the ones it meets on unseen persons; in-sample candidates would contain the gold far more often
and teach it to copy them. The baseline saved beside the traces is fitted on the whole training split, as at inference.

Files written into the compile run directory:

- ``baseline.json``: the baseline fitted on the whole training split (:func:`programs.baseline_registry.load_baseline`).
- ``sft_hybrid_joint.jsonl``: one student's multitask rows -- the reason step, the predictor step and the single-call
  joint signature, each with candidates (``finetune.distill --mode hybrid``).

With ``reasons="ranked"`` only the examples whose gold is among their candidates get rows, and each reason opens with
the gold's rank in the list (:func:`ranked_reason`): the student's choice among the candidates is then its first
decoded decision, which greedy decoding takes at the most likely rank, instead of a choice buried in the title words
at the end of the reason.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dspy

from compile.candidates import example_id
from compile.config import HYBRID_REASONS
from compile.export import _write_jsonl, sft_row
from programs.factory import build_baseline
from programs.hybrid import BASELINE_FILE, HybridNextOccupation

logger = logging.getLogger(__name__)

HYBRID_FILE = "sft_hybrid_joint.jsonl"


def ranked_reason(reason: str, rank: int) -> str:
    """The oracle ``reason`` opened by the sentence naming the candidate it supports (``rank`` is 1-based)."""
    return f"Of the candidates, the history points to number {int(rank)}. {reason}"


def person_fold(person_id: Any, folds: int, seed: int) -> int:
    """The cross-fitting fold of a person (a seeded hash of the person id, stable across runs and machines)."""
    digest = hashlib.sha1(f"{seed}:{person_id}".encode()).hexdigest()
    return int(digest[:8], 16) % folds


def cross_fitted_candidates(examples: Sequence[dspy.Example], train_split: Sequence[dspy.Example], baseline: str,
                            *, k: int, folds: int, seed: int, taxonomy: Any = None,
                            baseline_options: Mapping[str, Any] | None = None) -> dict[str, list[tuple[str, float]]]:
    """Each example's top-``k`` baseline candidates from a baseline fitted on the other folds' persons.

    Args:
        examples: The examples that need candidates (the oracle examples).
        train_split: The whole training split the baselines are fitted on (one fit per fold, leaving the fold out).
        baseline: Baseline name (``frequency``, ``markov``, ``return_markov``, ``sequence``).
        k: Candidates per example.
        folds: Person folds (at least 2).
        seed: Seed of the fold assignment.
        taxonomy: The O*NET taxonomy (official titles).
        baseline_options: Extra options of the baseline.

    Returns:
        ``example_id -> [(title, prob), ...]``.
    """
    if folds < 2:
        raise ValueError(f"hybrid_folds must be >= 2 (cross-fitting leaves a fold out), got {folds}.")
    by_fold: dict[int, list[dspy.Example]] = {}
    for ex in examples:
        by_fold.setdefault(person_fold(ex.get("person_id"), folds, seed), []).append(ex)
    out: dict[str, list[tuple[str, float]]] = {}
    for fold, members in sorted(by_fold.items()):
        rest = [ex for ex in train_split if person_fold(ex.get("person_id"), folds, seed) != fold]
        fitted = build_baseline(baseline, taxonomy=taxonomy, trainset=rest, k=k, **dict(baseline_options or {}))
        program = HybridNextOccupation(baseline=fitted, k_candidates=k, lm=None, taxonomy=taxonomy)
        for ex in members:
            out[example_id(ex)] = program.baseline_candidates(None, str(ex.history), ex.get("states"),
                                                              ex.get("career"))
    return out


def export_hybrid_traces(run_dir: str | Path, oracles: Mapping[str, dict], train: Sequence[dspy.Example],
                         train_split: Sequence[dspy.Example], baseline: str, *, k: int = 5, folds: int = 5,
                         seed: int = 0, taxonomy: Any = None, adapter: dspy.ChatAdapter | None = None,
                         baseline_options: Mapping[str, Any] | None = None, reasons: str = "oracle") -> dict[str, Any]:
    """Writes ``baseline.json`` and ``sft_hybrid_joint.jsonl`` for the oracle examples of ``train``.

    Args:
        run_dir: The compile run directory.
        oracles: example_id -> oracle record (``history``, ``reason``, ``gold_occupation``).
        train: The compile run's training examples (the oracles' examples, with ``states``/``career``).
        train_split: The whole training split (the baselines' data).
        baseline: Baseline name.
        k: Candidates per prompt (the hybrid program's ``k_candidates``).
        folds: Cross-fitting person folds.
        seed: Fold seed.
        taxonomy: The O*NET taxonomy.
        adapter: The adapter used at inference.
        baseline_options: Extra options of the baseline.
        reasons: ``"oracle"`` (every oracle example, its oracle reason) or ``"ranked"`` (only examples whose gold is a
            candidate, the reason opened by the gold's rank; :func:`ranked_reason`).

    Returns:
        ``{"files": {file name: rows}, "examples": oracle examples with rows, "gold_in_candidates": examples whose
        gold title is among their cross-fitted candidates, "baseline", "k_candidates", "folds", "reasons"}``.
    """
    if reasons not in HYBRID_REASONS:
        raise ValueError(f"hybrid reasons must be one of {HYBRID_REASONS}, got {reasons!r}.")
    adapter = adapter or dspy.ChatAdapter()
    run_dir = Path(run_dir)
    by_id = {example_id(ex): ex for ex in train}
    examples = [by_id[key] for key in oracles if key in by_id]
    if len(examples) < len(oracles):
        logger.warning("%d oracle records have no training example; they get no hybrid rows",
                       len(oracles) - len(examples))
    candidates = cross_fitted_candidates(examples, train_split, baseline, k=k, folds=folds, seed=seed,
                                         taxonomy=taxonomy, baseline_options=baseline_options)
    full = build_baseline(baseline, taxonomy=taxonomy, trainset=list(train_split), k=k,
                          **dict(baseline_options or {}))
    full.save(run_dir / BASELINE_FILE)
    steps = {mode: HybridNextOccupation(baseline=full, k_candidates=k, mode=mode, lm=None, taxonomy=taxonomy)
             for mode in ("two_step", "joint")}
    reason_rows, predict_rows, joint_rows = [], [], []
    hits = 0
    for key, record in oracles.items():
        if key not in candidates:
            continue
        history, reason, gold = record["history"], record["reason"], record["gold_occupation"]
        shown = candidates[key]
        titles = [title for title, _ in shown]
        hits += gold in titles
        if reasons == "ranked":
            if gold not in titles:
                continue
            reason = ranked_reason(reason, titles.index(gold) + 1)
        text = steps["joint"].extra_inputs(history, None, None, candidates=shown)["candidates"]
        inputs = {"history": history, "candidates": text}
        reason_rows.append(sft_row(steps["two_step"].reasoner, inputs, {"reason": reason}, adapter))
        predict_rows.append(sft_row(steps["two_step"].predictor, {**inputs, "reason": reason},
                                    {"occupation": gold}, adapter))
        joint_rows.append(sft_row(steps["joint"].predictor, inputs, {"reason": reason, "occupation": gold}, adapter))
    n = _write_jsonl(run_dir / HYBRID_FILE, reason_rows + predict_rows + joint_rows)
    logger.info("Exported %s: %d rows (%d oracle examples, %s reasons; gold among the cross-fitted %s candidates in "
                "%d)", HYBRID_FILE, n, len(joint_rows), reasons, baseline, hits)
    if not joint_rows:
        logger.warning("No hybrid rows: no oracle example's gold is among its %s candidates (reasons=%s).", baseline,
                       reasons)
    return {"files": {HYBRID_FILE: n}, "examples": len(joint_rows), "gold_in_candidates": hits,
            "baseline": baseline, "k_candidates": k, "folds": folds, "reasons": reasons}
