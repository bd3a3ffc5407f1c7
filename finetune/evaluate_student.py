"""Before/after evaluation of a distilled student inside the DSPy program (guarded: never fails a distill run).

:func:`evaluate_student` builds :class:`programs.next_occupation.NextOccupation` on the compile run's program mode
with the given per-step LM specs (two-model: one adapter per step), loads the compile run's optimized program state
when there is one, runs it on the run's ``test`` (or ``dev``) split and scores it with
:func:`metrics.accuracy.evaluate_predictions`. :func:`before_after` does it for the base model and the student.
Whatever is missing (program, dataset loader, data files) yields ``{"available": False, "reason": ...}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("n", "AccEM", "AccRM", "Acc@1", "Acc@5", "MRR", "unmatched")


def _compile_config(compile_run: Path) -> dict[str, Any]:
    path = compile_run / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the test split of the compile run is unknown")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def load_split(compile_run: str | Path, split: str = "test") -> tuple[list[Any], Any, dict[str, Any]]:
    """The compile run's examples of ``split``, the taxonomy and the compile config."""
    from careers.datasets import load_dataset
    from careers.onet import OnetTaxonomy

    cfg = _compile_config(Path(compile_run))
    splits = load_dataset(cfg.get("dataset", "synthetic"), cfg.get("data_dir"), cfg.get("seed", 0))
    examples = list(getattr(splits, split))
    limit = cfg.get(f"n_{split}")
    if limit:
        examples = examples[:limit]
    from careers.data_dir import resolve_data_dir

    taxonomy = OnetTaxonomy.load(resolve_data_dir(cfg.get("data_dir")))
    return examples, taxonomy, cfg


def evaluate_student(compile_run: str | Path, reasoner: str, predictor: str | None = None, split: str = "test",
                     limit: int | None = None, examples: list | None = None, taxonomy: Any = None,
                     program_mode: str | None = None) -> dict[str, Any]:
    """Evaluate the program with the given LM specs on a split of the compile run.

    Args:
        compile_run: The compile run directory.
        reasoner: LM spec of the reason step (and of every step when ``predictor`` is None).
        predictor: LM spec of the occupation step (two-model).
        split: ``"test"`` or ``"dev"``.
        limit: Evaluate at most this many examples.
        examples: Pre-loaded examples (skip :func:`load_split`; then ``taxonomy`` is required).
        taxonomy: The O*NET taxonomy.
        program_mode: ``"two_step"``/``"joint"`` (default: the compile config's ``mode``).

    Returns:
        ``{"available": True, "metrics": {...}}`` or ``{"available": False, "reason": ...}``.
    """
    try:
        from metrics.accuracy import evaluate_predictions
        from programs.next_occupation import NextOccupation

        cfg: dict[str, Any] = {}
        if examples is None:
            examples, taxonomy, cfg = load_split(compile_run, split)
        examples = examples[:limit] if limit else examples
        mode = program_mode or cfg.get("mode", "two_step")
        program = NextOccupation(mode=mode, lm=reasoner, predictor_lm=predictor, taxonomy=taxonomy)
        state = Path(compile_run) / "program.json"
        if state.is_file():
            try:
                program.load(str(state))
            except Exception as exc:  # noqa: BLE001
                logger.warning("Could not load the compiled program state %s: %s", state, exc)
        preds = []
        for ex in examples:
            inputs = ex.inputs() if hasattr(ex, "inputs") else {"history": ex["history"]}
            try:
                preds.append(program(**inputs))
            except Exception as exc:  # noqa: BLE001 - a failed call is scored as a miss
                logger.warning("Program call failed: %s", exc)
                preds.append(None)
        scores = evaluate_predictions(examples, preds, taxonomy)
        return {"available": True, "split": split, "metrics": {k: scores[k] for k in SUMMARY_KEYS if k in scores}}
    except Exception as exc:  # noqa: BLE001 - evaluation is optional; report why it was skipped
        logger.warning("Student evaluation unavailable: %s: %s", type(exc).__name__, exc)
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}


def before_after(compile_run: str | Path | None, base_spec: str, students: dict[str, str], split: str = "test",
                 limit: int | None = None) -> dict[str, Any]:
    """Evaluate the base model and the student (``{"reasoner": spec, "predictor": spec}``) on the same split."""
    if not compile_run:
        return {"available": False, "reason": "no compile run given (--from_run); nothing to evaluate on"}
    before = evaluate_student(compile_run, base_spec, None, split, limit)
    if not before["available"]:
        return before
    after = evaluate_student(compile_run, students["reasoner"], students.get("predictor"), split, limit)
    return {"available": after["available"], "before": before, "after": after,
            "reason": after.get("reason")}
