"""Before/after evaluation of a distilled student inside the DSPy program (guarded: never fails a distill run).

:func:`evaluate_student` builds :class:`programs.next_occupation.NextOccupation` on the compile run's program mode
with the given per-step LM specs (two-model: one adapter per step), runs it on the compile run's own ``test`` (or
``dev``) examples -- the same seeded per-person sample ``compile.optimize`` scored -- and scores it with
:func:`programs.scoring.score_program`. :func:`before_after` does it for the base model and the student. The students
are evaluated with the zero-shot program (no demos): its prompts are exactly the exported training prompts.
Whatever is missing (the compile config, data files, the model) yields ``{"available": False, "reason": ...}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from careers.onet import OnetTaxonomy
from compile.optimize import compile_splits
from compile.run_reader import compile_config
from programs.baseline_registry import BASELINE_INPUTS, load_baseline
from programs.hybrid import HybridNextOccupation
from programs.next_occupation import NextOccupation
from programs.scoring import score_program

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("n", "AccEM", "AccRM", "Acc@1", "Acc@5", "MRR", "soc_major", "unmatched", "errors")


def load_split(compile_run: str | Path, split: str = "test") -> tuple[list[Any], Any, dict[str, Any]]:
    """The compile run's examples of ``split`` (as compile sampled them), the taxonomy and the compile config."""
    cfg = compile_config(compile_run)
    train, dev, test = compile_splits(cfg)
    examples = {"train": train, "dev": dev, "test": test}[split]
    return examples, OnetTaxonomy.load(cfg.data_dir), vars(cfg)


def evaluate_student(compile_run: str | Path, reasoner: str, predictor: str | None = None, split: str = "test",
                     limit: int | None = None, examples: list | None = None, taxonomy: Any = None,
                     program_mode: str | None = None, threads: int = 4,
                     hybrid: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the program with the given LM specs on a split of the compile run.

    Args:
        compile_run: The compile run directory.
        reasoner: LM spec of the reason step (and of every step when ``predictor`` is None).
        predictor: LM spec of the occupation step (two-model and direct).
        split: ``"test"`` or ``"dev"``.
        limit: Evaluate at most this many examples.
        examples: Pre-loaded examples (skip :func:`load_split`; then ``taxonomy`` is required).
        taxonomy: The O*NET taxonomy.
        program_mode: ``"two_step"``, ``"joint"`` or ``"direct"`` (default: the compile config's ``mode``).
        threads: Worker threads (the local engine batches concurrent calls).
        hybrid: ``{"baseline": baseline.json path, "k_candidates": k}``: evaluate the hybrid program with that
            fitted baseline's candidates (the student of ``finetune.distill --mode hybrid``).

    Returns:
        ``{"available": True, "metrics": {...}}`` or ``{"available": False, "reason": ...}``.
    """
    try:
        cfg: dict[str, Any] = {}
        if examples is None:
            examples, taxonomy, cfg = load_split(compile_run, split)
        examples = examples[:limit] if limit else examples
        mode = program_mode or cfg.get("mode", "two_step")
        lm = predictor if mode == "direct" and predictor else reasoner
        inputs = None
        if hybrid:
            baseline = load_baseline(hybrid["baseline"], taxonomy=taxonomy)
            program = HybridNextOccupation(baseline=baseline, k_candidates=int(hybrid["k_candidates"]), mode=mode,
                                           lm=lm, predictor_lm=predictor, taxonomy=taxonomy)
            inputs = BASELINE_INPUTS
        else:
            program = NextOccupation(mode=mode, lm=lm, predictor_lm=predictor, taxonomy=taxonomy)
        scores, _ = score_program(program, examples, taxonomy, threads=threads, inputs=inputs)
        return {"available": True, "split": split, "mode": mode,
                "metrics": {k: scores[k] for k in SUMMARY_KEYS if k in scores}}
    except Exception as exc:  # noqa: BLE001 - evaluation is optional; report why it was skipped
        logger.warning("Student evaluation unavailable: %s: %s", type(exc).__name__, exc)
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}


def before_after(compile_run: str | Path | None, base_spec: str, students: dict[str, str], split: str = "test",
                 limit: int | None = None, program_mode: str | None = None,
                 hybrid: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the base model and the student (``{"reasoner": spec, "predictor": spec}``) on the same split (both
    inside the hybrid program when ``hybrid`` is given; see :func:`evaluate_student`)."""
    if not compile_run:
        return {"available": False, "reason": "no compile run given (--from_run); nothing to evaluate on"}
    before = evaluate_student(compile_run, base_spec, None, split, limit, program_mode=program_mode, hybrid=hybrid)
    if not before["available"]:
        return before
    after = evaluate_student(compile_run, students["reasoner"], students.get("predictor"), split, limit,
                             program_mode=program_mode, hybrid=hybrid)
    return {"available": after["available"], "before": before, "after": after,
            "reason": after.get("reason")}
