"""Phase 1 of a compile run: candidate reasons per training example, judged, appended to ``candidates.jsonl``.

For every training example the teacher samples ``n`` candidate reasons (distinct ``rollout_id`` and
a sampling temperature), the predictor answers from history + reason, and the judge scores the
reason on factuality, coherence and utility. Every candidate becomes one JSON line, appended and
flushed as soon as it is produced, so a killed run loses nothing that was written: re-running with
the same run directory skips the ``(example_id, candidate)`` pairs already on disk.

Failures are data, not crashes: an LM or judge call that raises is retried with exponential
backoff (a retry never gets DSPy's cached copy of a bad reply); when the retries are spent the candidate is
written with its ``error`` and the run goes on. More than ``max_errors`` failed examples (a count, or a share
of the examples below 1) stops the run in order with :class:`TooManyErrors`.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import dspy

from lms import usage
from lms.progress import LiveProgress

logger = logging.getLogger(__name__)


class TooManyErrors(RuntimeError):
    """Raised when more examples failed than ``max_errors`` allows (raised once every worker has finished)."""


def error_limit(max_errors: float, n_examples: int) -> float:
    """The number of failed examples tolerated: ``max_errors`` itself when >= 1 (a count), else that share of
    ``n_examples`` (``0.5``: half of them); 0 stops at the first failure."""
    if max_errors < 0:
        raise ValueError(f"max_errors must be >= 0 (a count, or a share below 1), got {max_errors}.")
    return float(max_errors) if max_errors >= 1 else max_errors * n_examples


def one_line(text: str, limit: int = 300) -> str:
    """An error message on one line (whitespace collapsed), cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def example_id(example: dspy.Example) -> str:
    """A stable id for one transition: the person id plus a hash of the rendered history."""
    digest = hashlib.sha1(str(example.history).encode("utf-8")).hexdigest()[:10]
    return f"{example.get('person_id', 'anon')}#{digest}"


def _already_retried(exc: Exception) -> bool:
    """True for transient LM errors (429, 5xx, timeouts, refused connections): ``dspy.LM`` already retried them
    ``num_retries`` times with backoff, so asking again here would only multiply the wait."""
    from dspy.utils.exceptions import is_retryable_lm_error

    return is_retryable_lm_error(exc)


def with_retries(fn: Callable[[], Any], retries: int, backoff: float = 0.5, what: str = "call") -> Any:
    """Calls ``fn``; on an exception retries up to ``retries`` times with exponential backoff.

    Transient LM errors that DSPy already retried are raised at once. An unparseable reply is never handed back
    by DSPy's cache on the retry (:mod:`lms.usage` drops it), so each retry reaches the LM; retries are counted
    in the run's ``lm_usage``.
    """
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - any LM/back-end failure is retried, then recorded
            if attempt == retries or _already_retried(exc):
                raise
            delay = backoff * 2**attempt
            logger.warning("%s failed (%s); retry %d/%d in %.1fs", what, one_line(f"{type(exc).__name__}: {exc}", 200),
                           attempt + 1, retries, delay)
            usage.record_retry()
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


def sample_reason(example: dspy.Example, index: int, steps: CandidateSteps, retries: int,
                  backoff: float = 0.5) -> str:
    """The teacher's reason for candidate ``index``.

    A failed call or an empty reason is asked again up to ``retries`` times, each time with a fresh rollout
    (``index + 1000 * attempt``), so DSPy's cache never hands back the same failed sample.
    """
    last: Exception | None = None
    for attempt in range(retries + 1):
        rollout = index + EMPTY_RESAMPLE_STRIDE * attempt
        if attempt:
            usage.record_retry()
        try:
            reason = steps.reason(example, rollout)
        except Exception as exc:  # noqa: BLE001 - retried with another rollout, then recorded
            if attempt == retries or _already_retried(exc):
                raise
            last = exc
            logger.warning("teacher failed for %s/%d (%s); retry %d/%d with rollout %d", example_id(example), index,
                           one_line(f"{type(exc).__name__}: {exc}", 200), attempt + 1, retries,
                           rollout + EMPTY_RESAMPLE_STRIDE)
            time.sleep(backoff * 2**attempt)
            continue
        if isinstance(reason, str) and reason.strip():
            return reason.strip()
        usage.discard_last_reply()
        usage.record_error("teacher returned an empty reason")
        last = None
        if attempt < retries:
            logger.warning("teacher returned an empty reason for %s/%d; resampling (rollout %d)",
                           example_id(example), index, rollout + EMPTY_RESAMPLE_STRIDE)
    if last is not None:
        raise last
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
        with usage.role("teacher"):
            record["reason"] = sample_reason(example, index, steps, retries)
        with usage.role("predictor"):
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
        with usage.role("judge"):
            judgement = with_retries(lambda: steps.judge(example, record["reason"]), retries, what="judge")
        record.update(_judged_fields(judgement))
        record["signals"] = steps.signals(example, record["reason"], pred)
    except Exception as exc:  # noqa: BLE001 - recorded per candidate
        record["error"] = one_line(f"{type(exc).__name__}: {exc}", 500)
        logger.warning("candidate %s/%d failed: %s", record["example_id"], index, one_line(record["error"], 200))
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
    max_errors: float = 0.5,
    threads: int = 1,
) -> dict:
    """Generates, judges and appends candidates for every example, skipping finished ones.

    An abort is orderly: once more examples failed than ``max_errors`` allows, no new candidate starts, the ones
    already running finish and are written, and only then :class:`TooManyErrors` is raised (once). A
    ``KeyboardInterrupt`` in the calling thread stops the same way.

    Args:
        examples: Training examples (``history``, ``occupation``, ``onet_code``, ``gold_codes``).
        steps: The teacher, predictor, judge and signal callables.
        writer: An append-and-flush JSONL writer with ``write(dict)`` (see :mod:`runkit.files`).
        n: Candidates per example.
        done: ``(example_id, candidate)`` pairs already on disk (resume).
        retries: Retries per failing call.
        max_errors: Failed examples tolerated: a count (>= 1) or a share of the examples (below 1).
        threads: Worker threads (DSPy settings, the LM role and the usage tracker follow each task).

    Returns:
        Counts: ``generated``, ``skipped``, ``errors``, ``failed_examples``, ``last_error``.
    """
    examples = list(examples)
    done = set(done or ())
    todo = [(ex, i) for ex in examples for i in range(n) if (example_id(ex), i) not in done]
    skipped = len(done)
    limit = error_limit(max_errors, len(examples))
    lock = threading.Lock()
    stop = threading.Event()
    stats: dict[str, Any] = {"generated": 0, "skipped": skipped, "errors": 0, "last_error": None}
    failed: set[str] = set()
    # a bar over candidates whose postfix moves with every LM call and decoded token (None: on a TTY only)
    bar = LiveProgress(total=len(todo), desc="candidates", disable=True if not todo else None).__enter__()

    def work(item):
        if stop.is_set():
            return None
        ex, i = item
        rec = make_candidate(ex, i, steps, retries)
        with lock:
            writer.write(rec)
            stats["generated"] += 1
            if rec["error"]:
                stats["errors"] += 1
                stats["last_error"] = rec["error"]
                failed.add(rec["example_id"])
                if len(failed) > limit:
                    stop.set()
            bar.update(1)
        return rec

    try:
        if threads <= 1:
            for item in todo:
                if stop.is_set():
                    break
                work(item)
        else:
            pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="candidates")
            try:
                # each task runs in a copy of the caller's context: DSPy settings (LMs, adapter, role, tracker)
                futures = [pool.submit(contextvars.copy_context().run, work, item) for item in todo]
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                stop.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # running candidates finish and are written
    finally:
        bar.__exit__(None, None, None)
    stats["failed_examples"] = len(failed)
    if stop.is_set():
        exc = TooManyErrors(
            f"{len(failed)} of {len(examples)} examples failed (max_errors={max_errors:g}); stopped after "
            f"{stats['generated']} candidates, all written. Last error: {one_line(stats['last_error'], 300)}. "
            "Check the teacher/judge LM settings; a re-run resumes and retries the failed candidates."
        )
        exc.stats = stats
        raise exc
    logger.info("candidates: %d generated, %d already on disk, %d errors", stats["generated"], skipped,
                stats["errors"])
    return stats
