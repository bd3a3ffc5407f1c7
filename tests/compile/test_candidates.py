import dspy
import pytest

from compile.candidates import CandidateSteps, TooManyErrors, example_id, generate_candidates, with_retries


class ListWriter:
    def __init__(self):
        self.rows = []

    def write(self, row):
        self.rows.append(row)


def examples(n=3):
    return [dspy.Example(person_id=str(i), history=f"1. 2001-2004: Cashier {i}", occupation="Cashiers",
                         onet_code="41-2011.00", gold_codes=["41-2011.00"]).with_inputs("history") for i in range(n)]


def steps(fail_judge_for=None, fail_teacher=False):
    def reason(ex, i):
        if fail_teacher:
            raise TimeoutError("teacher timed out")
        return f"reason {i} for {ex.person_id}"

    def judge(ex, r):
        if fail_judge_for and ex.person_id in fail_judge_for:
            raise RuntimeError("judge down")
        return dspy.Prediction(factuality=4, coherence=3, utility=5, oracle_score=4.0, failures=[],
                               justifications={"factuality": "ok"})

    return CandidateSteps(
        reason=reason,
        predict=lambda ex, r: dspy.Prediction(occupation="Cashiers", onet_code="41-2011.00", matched=True),
        judge=judge,
        signals=lambda ex, r, p: {"grounding": 1.0},
    )


def test_generates_n_per_example_and_resumes():
    w = ListWriter()
    exs = examples(3)
    stats = generate_candidates(exs, steps(), w, n=2)
    assert stats["generated"] == 6 and stats["errors"] == 0
    rec = w.rows[0]
    assert rec["factuality"] == 4 and rec["predicted_correct"] and rec["justifications"] == {"factuality": "ok"}
    done = {(r["example_id"], r["candidate"]) for r in w.rows[:4]}
    w2 = ListWriter()
    stats = generate_candidates(exs, steps(), w2, n=2, done=done)
    assert stats["generated"] == 2 and stats["skipped"] == 4
    assert {(r["example_id"], r["candidate"]) for r in w2.rows}.isdisjoint(done)


def test_failures_are_recorded_not_raised():
    w = ListWriter()
    stats = generate_candidates(examples(3), steps(fail_judge_for={"1"}), w, n=1, retries=1, max_errors=5)
    assert stats["errors"] == 1 and stats["failed_examples"] == 1
    bad = [r for r in w.rows if r["error"]]
    assert bad[0]["person_id"] == "1" and "judge down" in bad[0]["error"] and bad[0]["reason"]


@pytest.mark.parametrize("threads", [1, 2])
def test_max_errors_stops_clearly(threads):
    w = ListWriter()
    with pytest.raises(TooManyErrors, match="max_errors=1"):
        generate_candidates(examples(4), steps(fail_teacher=True), w, n=1, retries=0, max_errors=1, threads=threads)
    assert all(r["error"] for r in w.rows)


def test_empty_reason_is_resampled_with_another_rollout():
    asked = []

    def reason(ex, i):
        asked.append(i)
        return "  " if i < 2000 else f"reason {i}"

    flaky = steps()
    flaky.reason = reason
    w = ListWriter()
    stats = generate_candidates(examples(1), flaky, w, n=1, retries=2)
    assert stats["errors"] == 0 and w.rows[0]["reason"] == "reason 2000" and asked == [0, 1000, 2000]
    asked.clear()
    w = ListWriter()
    stats = generate_candidates(examples(1), flaky, w, n=1, retries=1, max_errors=5)
    assert stats["errors"] == 1 and "empty reason 2 times" in w.rows[0]["error"] and asked == [0, 1000]


def test_retry_backoff_then_success():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("boom")
        return "ok"

    assert with_retries(flaky, retries=2, backoff=0.001) == "ok" and len(calls) == 3


def test_example_id_is_stable_and_distinct():
    a, b = examples(2)
    assert example_id(a) == example_id(a.copy()) and example_id(a) != example_id(b)


class ClosingWriter(ListWriter):
    """Fails like a closed file if anything is written after ``close``."""

    closed = False

    def write(self, row):
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        super().write(row)


def test_abort_is_orderly_running_candidates_finish_and_are_written():
    import threading
    import time

    started, lock = [], threading.Lock()

    def reason(ex, i):
        with lock:
            started.append((ex.person_id, i))
        time.sleep(0.05)
        raise ValueError("bad reply")

    failing = steps()
    failing.reason = reason
    w = ClosingWriter()
    with pytest.raises(TooManyErrors) as info:
        generate_candidates(examples(12), failing, w, n=2, retries=0, max_errors=0.25, threads=4)
    w.closed = True
    time.sleep(0.2)  # a straggler writing after the abort would fail here
    assert len(w.rows) == len(started) < 24, "every started candidate is written, no new one starts"
    import re

    # the limit is 3 examples (a quarter of 12): the 4th stops submission; candidates already running still finish
    assert re.search(r"[45] of 12 examples failed \(max_errors=0.25\)", str(info.value)) and "bad reply" in str(info.value)
    assert info.value.stats["generated"] == len(w.rows)


def test_max_errors_share_and_count():
    from compile.candidates import error_limit

    assert error_limit(0.5, 8) == 4 and error_limit(3, 8) == 3 and error_limit(0, 8) == 0
    with pytest.raises(ValueError, match="max_errors"):
        error_limit(-1, 8)
    w = ListWriter()
    with pytest.raises(TooManyErrors, match="max_errors=0.5"):  # the default triggers on a small run
        generate_candidates(examples(4), steps(fail_teacher=True), w, n=1, retries=0)
    assert len(w.rows) == 3
