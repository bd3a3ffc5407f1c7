"""Running a program over examples and scoring it: accuracy metrics plus (optionally) the judge's means.

Used by ``python -m programs.evaluate`` for LM programs, by ``compile.optimize`` for the zero-shot and
optimized rows, and by ``finetune.distill`` for the before/after rows. Predictions run in DSPy's
:class:`~dspy.utils.parallelizer.ParallelExecutor` (settings propagate to worker threads, local LMs batch
concurrent calls); a failing example becomes an unmatched prediction recorded with its error, never a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import dspy

from careers.onet import OnetTaxonomy
from lms import usage
from lms.progress import LiveProgress
from metrics.accuracy import evaluate_predictions

logger = logging.getLogger(__name__)

JUDGE_CRITERIA = ("factuality", "coherence", "utility")


def _failed(exc: Exception) -> dspy.Prediction:
    return dspy.Prediction(occupation="", onet_code=None, ranked=[], matched=False, reason=None,
                           error=f"{type(exc).__name__}: {exc}"[:300])


def predict_batch(program: Any, examples: Sequence[dspy.Example], *, threads: int = 1,
                  inputs: tuple[str, ...] | None = None, progress: bool = True,
                  on_prediction: Callable[[dspy.Example, dspy.Prediction], None] | None = None,
                  ) -> list[dspy.Prediction]:
    """Runs ``program`` on every example (in ``threads`` worker threads), in order.

    Args:
        program: A callable DSPy module (NextOccupation, a baseline, ...).
        examples: Examples whose ``inputs()`` (or the named ``inputs``) are passed as keyword arguments.
        threads: Worker threads.
        inputs: Field names to pass instead of ``example.inputs()``.
        progress: Show a live progress bar (:class:`lms.progress.LiveProgress`: predictions, LM calls, tokens).
        on_prediction: Called with ``(example, prediction)`` as each prediction finishes, from the worker thread
            (e.g. to append it to a JSONL file, so an interrupted run keeps what it finished).

    Returns:
        One prediction per example; a failed call yields an unmatched prediction with an ``error`` field.
    """
    from dspy.utils.parallelizer import ParallelExecutor

    with LiveProgress(total=len(examples), desc="predictions", disable=None if progress else True) as bar:

        def run(example):
            kwargs = {k: example.get(k) for k in inputs} if inputs else dict(example.inputs())
            try:
                pred = program(**kwargs)
            except Exception as exc:  # noqa: BLE001 - recorded as a failed prediction
                logger.warning("prediction failed for %s: %s", example.get("person_id"), exc)
                pred = _failed(exc)
            if on_prediction is not None:
                on_prediction(example, pred)
            bar.update()
            return pred

        if threads <= 1:
            return [run(ex) for ex in examples]
        executor = ParallelExecutor(num_threads=threads, max_errors=len(examples) + 1, disable_progress_bar=True,
                                    timeout=10**6)
        return list(executor.execute(run, list(examples)))


def judge_means(judge: Any, examples: Sequence[dspy.Example], preds: Sequence[dspy.Prediction],
                *, threads: int = 1) -> tuple[dict[str, float | None], list[dict]]:
    """Judges each prediction's reason against the example's gold; returns mean scores and per-example verdicts."""
    from dspy.utils.parallelizer import ParallelExecutor

    pairs = [(ex, p) for ex, p in zip(examples, preds, strict=True) if p.get("reason")]

    def run(pair):
        ex, p = pair
        try:
            v = judge(history=ex.history, reason=p.reason, occupation=ex.occupation)
            out = {c: v.get(c) for c in (*JUDGE_CRITERIA, "oracle_score")}
            if v.get("failures"):
                out["failures"] = list(v.get("failures"))
            return out
        except Exception as exc:  # noqa: BLE001 - a judge failure is data
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}

    if threads <= 1:
        verdicts = [run(p) for p in pairs]
    else:
        verdicts = ParallelExecutor(num_threads=threads, max_errors=len(pairs) + 1, timeout=10**6).execute(run, pairs)
    means: dict[str, float | None] = {}
    for key in (*JUDGE_CRITERIA, "oracle_score"):
        values = [v[key] for v in verdicts if isinstance(v.get(key), (int, float))]
        means[f"judge_{key}"] = round(sum(values) / len(values), 3) if values else None
    means["judge_n"] = len(verdicts)
    # a verdict without any score: the judge call raised, or every criterion failed to parse/validate
    means["judge_errors"] = sum(1 for v in verdicts if not any(isinstance(v.get(c), (int, float))
                                                                 for c in JUDGE_CRITERIA))
    return means, verdicts


def score_program(
    program: Any,
    examples: Sequence[dspy.Example],
    taxonomy: OnetTaxonomy,
    *,
    judge: Any = None,
    threads: int = 1,
    ks: tuple[int, ...] = (1, 5),
    inputs: tuple[str, ...] | None = None,
    role: str = "predictor",
    on_prediction: Callable[[dspy.Example, dspy.Prediction], None] | None = None,
) -> tuple[dict[str, Any], list[dict]]:
    """Predicts and scores: accuracy metrics (and judge means when ``judge`` is given).

    The program's LM calls are counted under ``role`` and the judge's under ``judge`` in the enclosing
    :func:`lms.usage.tracking` block. ``on_prediction`` is passed to :func:`predict_batch`.

    Returns:
        ``(metrics, records)``: ``metrics`` is :func:`metrics.accuracy.evaluate_predictions` without the
        per-example rows, plus ``errors``, ``seconds`` and the ``judge_*`` means; ``records`` holds one JSON-ready
        dict per example (history, gold, reason, prediction, ranked, per-example scores, verdict).
    """
    t0 = time.perf_counter()
    examples = list(examples)
    with usage.role(role):
        preds = predict_batch(program, examples, threads=threads, inputs=inputs, on_prediction=on_prediction)
    scored = evaluate_predictions(examples, preds, taxonomy, ks=ks)
    rows = scored.pop("per_example")
    scored["errors"] = sum(1 for p in preds if p.get("error"))
    # how ranked lists were made (exact local ranking, text similarity, a baseline's probabilities) and how the
    # occupation was constrained (local engine, server-side guided choice, none): Acc@k/MRR depend on it
    for key, default in (("ranking", "baseline"), ("constraint", "none")):
        counts: dict[str, int] = {}
        for p in preds:
            if not p.get("error"):
                value = p.get(key) or default
                counts[value] = counts.get(value, 0) + 1
        scored[f"{key}_methods"] = counts
    failed = [p.get("error") for p in preds if p.get("error")]
    scored["last_error"] = failed[-1] if failed else None
    verdicts: list[dict] = []
    if judge is not None:
        with usage.role("judge"):
            means, verdicts = judge_means(judge, examples, preds, threads=threads)
        scored.update(means)
    scored["seconds"] = round(time.perf_counter() - t0, 2)
    it = iter(verdicts)
    records = [prediction_record(ex, pred, scores=row,
                                 verdict=next(it) if (judge is not None and pred.get("reason")) else None)
               for ex, pred, row in zip(examples, preds, rows, strict=True)]
    return scored, records


def prediction_record(example: dspy.Example, pred: dspy.Prediction, scores: dict | None = None,
                      verdict: dict | None = None) -> dict[str, Any]:
    """One JSON-ready record of a prediction: history, gold, reason, prediction, ranked list, scores and verdict."""
    return {
        "person_id": example.get("person_id"), "history": example.get("history"),
        "gold_occupation": example.get("occupation"), "gold_codes": list(example.get("gold_codes") or []),
        "reason": pred.get("reason"), "occupation": pred.get("occupation"), "onet_code": pred.get("onet_code"),
        "matched": pred.get("matched"), "ranked": [list(r) for r in pred.get("ranked") or []],
        "ranking": pred.get("ranking"), "error": pred.get("error"), "scores": scores, "judge": verdict,
    }
