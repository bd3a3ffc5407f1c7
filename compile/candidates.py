"""Phase 1 of a compile run: candidate reasons per training example, judged, appended to ``candidates.jsonl``.

For every training example the teacher samples ``n`` candidate reasons (distinct ``rollout_id`` and
a sampling temperature), the predictor answers from history + reason, and the judge scores the
reason on factuality, coherence and utility. Every candidate becomes one JSON line, appended and
flushed as soon as it is produced, so a killed run loses nothing that was written: re-running with
the same run directory skips the ``(example_id, candidate)`` pairs already on disk.

Failures are data, not crashes: an LM or judge call that raises is retried with exponential
backoff; when the retries are spent the candidate is written with its ``error`` and the run goes on.
More than ``max_errors`` failed examples stops the run with :class:`TooManyErrors`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dspy
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


class TooManyErrors(RuntimeError):
    """Raised when more examples failed than ``max_errors`` allows."""


def example_id(example: dspy.Example) -> str:
    """A stable id for one transition: the person id plus a hash of the rendered history."""
    digest = hashlib.sha1(str(example.history).encode("utf-8")).hexdigest()[:10]
    return f"{example.get('person_id', 'anon')}#{digest}"


def with_retries(fn: Callable[[], Any], retries: int, backoff: float = 0.5, what: str = "call") -> Any:
    """Calls ``fn``; on an exception retries up to ``retries`` times with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - any LM/back-end failure is retried, then recorded
            if attempt == retries:
                raise
            delay = backoff * 2**attempt
            logger.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__, exc,
                           attempt + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@dataclass
class CandidateSteps:
    """The callables one candidate needs (built from the program, the teacher and the judge).

    Attributes:
        reason: ``(example, rollout_id) -> str`` samples one reason from the teacher.
        predict: ``(example, reason) -> dspy.Prediction`` the predictor's answer (occupation, onet_code).
        judge: ``(example, reason) -> dspy.Prediction`` with factuality/coherence/utility, justifications,
            failures and oracle_score.
        signals: ``(example, reason, prediction) -> dict`` LM-free signals (grounding, likelihood utility).
    """

    reason: Callable[[dspy.Example, int], str]
    predict: Callable[[dspy.Example, str], dspy.Prediction]
    judge: Callable[[dspy.Example, str], dspy.Prediction]
    signals: Callable[[dspy.Example, str, dspy.Prediction], dict] = field(default=lambda ex, r, p: {})


def _judged_fields(judgement: dspy.Prediction) -> dict:
    """The judge's scores, justifications and failures as plain JSON values."""
    out = {key: judgement.get(key) for key in ("factuality", "coherence", "utility", "oracle_score")}
    out["justifications"] = dict(judgement.get("justifications") or {})
    out["judge_failures"] = list(judgement.get("failures") or [])
    return out


EMPTY_RESAMPLE_STRIDE = 1000


def sample_reason(example: dspy.Example, index: int, steps: CandidateSteps, retries: int) -> str:
    """The teacher's reason for candidate ``index``; an empty reason is resampled up to ``retries`` times with
    rollout ``index + 1000 * attempt`` (re-asking the same rollout would return DSPy's cached empty answer)."""
    for attempt in range(retries + 1):
        rollout = index + EMPTY_RESAMPLE_STRIDE * attempt
        reason = with_retries(lambda r=rollout: steps.reason(example, r), retries, what="teacher")
        if isinstance(reason, str) and reason.strip():
            return reason.strip()
        if attempt < retries:
            logger.warning("teacher returned an empty reason for %s/%d; resampling (rollout %d)",
                           example_id(example), index, rollout + EMPTY_RESAMPLE_STRIDE)
    raise ValueError(f"teacher returned an empty reason {retries + 1} times")


def make_candidate(example: dspy.Example, index: int, steps: CandidateSteps, retries: int) -> dict:
    """Produces one judged candidate record; errors are recorded in the record, never raised."""
    record: dict[str, Any] = {
        "example_id": example_id(example), "person_id": str(example.get("person_id", "")), "candidate": index,
        "history": example.history, "gold_occupation": example.get("occupation"),
        "gold_onet_code": example.get("onet_code"), "gold_codes": list(example.get("gold_codes") or []),
        "reason": None, "prediction": None, "error": None,
    }
    started = time.perf_counter()
    try:
        record["reason"] = sample_reason(example, index, steps, retries)
        pred = with_retries(lambda: steps.predict(example, record["reason"]), retries, what="predictor")
        if pred.get("skipped"):
            record["predicted_correct"] = None  # predict_candidates: false
        else:
            record["prediction"] = {
                "occupation": pred.get("occupation"), "onet_code": pred.get("onet_code"),
                "matched": bool(pred.get("matched", pred.get("onet_code") is not None)),
            }
            codes = set(record["gold_codes"] or [record["gold_onet_code"]])
            record["predicted_correct"] = record["prediction"]["onet_code"] in codes
        judgement = with_retries(lambda: steps.judge(example, record["reason"]), retries, what="judge")
        record.update(_judged_fields(judgement))
        record["signals"] = steps.signals(example, record["reason"], pred)
    except Exception as exc:  # noqa: BLE001 - recorded per candidate
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
        logger.warning("candidate %s/%d failed: %s", record["example_id"], index, record["error"])
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def generate_candidates(
    examples: Iterable[dspy.Example],
    steps: CandidateSteps,
    writer,
    *,
    n: int,
    done: set[tuple[str, int]] | None = None,
    retries: int = 2,
    max_errors: int = 50,
    threads: int = 1,
) -> dict:
    """Generates, judges and appends candidates for every example, skipping finished ones.

    Args:
        examples: Training examples (``history``, ``occupation``, ``onet_code``, ``gold_codes``).
        steps: The teacher, predictor, judge and signal callables.
        writer: An append-and-flush JSONL writer with ``write(dict)`` (see :mod:`programs.run_dir`).
        n: Candidates per example.
        done: ``(example_id, candidate)`` pairs already on disk (resume).
        retries: Retries per failing call.
        max_errors: Failed examples tolerated before :class:`TooManyErrors`.
        threads: Worker threads (DSPy settings are propagated by :class:`dspy.Parallel`'s executor).

    Returns:
        Counts: ``generated``, ``skipped``, ``errors``, ``failed_examples``.
    """
    from dspy.utils.parallelizer import ParallelExecutor

    done = set(done or ())
    todo = [(ex, i) for ex in examples for i in range(n) if (example_id(ex), i) not in done]
    skipped = sum(1 for _ in done)
    lock = threading.Lock()
    stats = {"generated": 0, "skipped": skipped, "errors": 0}
    failed: set[str] = set()
    bar = tqdm(total=len(todo), desc="candidates", disable=not todo, leave=False)

    def work(item):
        ex, i = item
        rec = make_candidate(ex, i, steps, retries)
        with lock:
            writer.write(rec)
            stats["generated"] += 1
            if rec["error"]:
                stats["errors"] += 1
                failed.add(rec["example_id"])
                if len(failed) > max_errors:
                    raise TooManyErrors(
                        f"{len(failed)} examples failed (max_errors={max_errors}); last error: {rec['error']}. "
                        "Check the teacher/judge LM settings; finished candidates are kept and a re-run resumes."
                    )
            bar.update(1)
        return rec

    try:
        if threads <= 1:
            for item in todo:
                work(item)
        else:
            # max_errors=1: only TooManyErrors escapes make_candidate; no straggler resubmission (timeout).
            executor = ParallelExecutor(num_threads=threads, max_errors=1, disable_progress_bar=True, timeout=10**6)
            try:
                executor.execute(work, todo)
            except Exception as exc:
                cause = next((e for e in executor.exceptions_map.values() if isinstance(e, TooManyErrors)), None)
                if cause is None and len(failed) > max_errors:
                    cause = TooManyErrors(f"{len(failed)} examples failed (max_errors={max_errors}).")
                raise (cause or exc) from None
    finally:
        bar.close()
    stats["failed_examples"] = len(failed)
    logger.info("candidates: %d generated, %d already on disk, %d errors", stats["generated"], skipped,
                stats["errors"])
    return stats
