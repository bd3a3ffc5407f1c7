"""Faults: compile survives ~10% injected LM faults (fail / timeout / garbage) in teacher and judge,
reports the failure counts in metrics.json and report.md, and loses nothing written before a fault.
"""

from __future__ import annotations

import json

import pytest
from rel_helpers import DATA, HAVE_DATA, record_figures, scripted_lm

from compile.candidates import TooManyErrors
from compile.config import OptimizeConfig
from compile.optimize import run_optimize
from tests.helpers.faulty_engine import faulty_lm

pytestmark = pytest.mark.skipif(not HAVE_DATA, reason="data mirror not available")


def _config(tmp_path, **kw):
    base = dict(dataset="synthetic", data_dir=str(DATA), synthetic_persons=60, n_train=4, n_dev=2, n_test=2,
                candidates_per_person=3, optimizer="bootstrap", max_bootstrapped_demos=1, max_labeled_demos=1,
                threads=1, retries=1, output_dir=str(tmp_path), run_name="faulty", teacher_lm="dummy",
                judge_lm="dummy")
    base.update(kw)
    return OptimizeConfig(**base)


def _lines(path):
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def test_compile_survives_ten_percent_faults_and_keeps_what_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr("compile.candidates.time.sleep", lambda s: None)  # no real back-off waits in tests
    run = tmp_path / "faulty"
    cands = run / "candidates.jsonl"

    # 1. a run whose teacher dies after a few candidates: it stops clearly, keeping every finished line
    dying = faulty_lm(scripted_lm(), fail=1.0)
    good_then_dead = _Switch(scripted_lm(), dying, after=4)  # 4 good teacher calls, then only failures
    with pytest.raises(TooManyErrors):
        run_optimize(_config(tmp_path, max_errors=0, retries=0), teacher_lm=good_then_dead, judge_lm=scripted_lm())
    before = _lines(cands)
    assert before and all(json.loads(x)["error"] is None for x in before[:-1]) and json.loads(before[-1])["error"]

    # 2. the same command with 10% faults in teacher and judge: completes, reports the failures
    rates = dict(fail=0.04, timeout=0.03, garbage=0.03)
    teacher = faulty_lm(scripted_lm(), seed=1, **rates)
    judge = faulty_lm(scripted_lm(), seed=2, **rates)
    res = run_optimize(_config(tmp_path), teacher_lm=teacher, judge_lm=judge)
    after = _lines(cands)
    assert after[:len(before)] == before, "lines written before the fault must survive byte for byte"
    records = [json.loads(x) for x in after]
    finished = [(r["example_id"], r["candidate"]) for r in records if r["error"] is None]
    assert len(finished) == len(set(finished)), "no finished candidate may be written twice"
    # finished candidates of run 1 are reused; its failed candidate (an error record) is generated again
    assert res["candidates"]["skipped"] == len(before) - 1
    failed_key = (json.loads(before[-1])["example_id"], json.loads(before[-1])["candidate"])
    assert sum((r["example_id"], r["candidate"]) == failed_key for r in records) == 2
    assert res["selection"]["candidates"] == len({(r["example_id"], r["candidate"]) for r in records})

    engines = {"teacher": teacher._engine_spec.counts, "judge": judge._engine_spec.counts}
    injected = sum(c[k] for c in engines.values() for k in ("fail", "timeout", "garbage"))
    calls = sum(c["calls"] for c in engines.values())
    assert calls > 50 and 0.03 < injected / calls < 0.25

    metrics = json.loads((run / "metrics.json").read_text())
    report = (run / "report.md").read_text()
    sel = metrics["selection"]
    assert {"generated", "skipped", "errors", "failed_examples"} <= set(metrics["candidates"])
    assert "generation_errors" in sel and "judge_failures" in sel
    assert f"errors: {metrics['candidates']['errors']}" in report
    assert f"judge failures {sel['judge_failures']}" in (run / "data_card.md").read_text()
    for name in ("program.json", "sft_reason.jsonl", "dpo_reason.jsonl", "config.yaml", "log.txt"):
        assert (run / name).exists(), name
    assert all("errors" in m for m in metrics["evaluation"].values())
    recorded = sum(json.loads(x)["error"] is not None for x in after) + sel["judge_failures"]
    record_figures("faults_compile", llm_calls=calls, injected=injected, by_engine=engines,
                   candidate_errors=metrics["candidates"]["errors"], judge_failures=sel["judge_failures"],
                   eval_errors={k: v["errors"] for k, v in metrics["evaluation"].items()},
                   lines_before=len(before), lines_after=len(after), recorded_failures=recorded)


class _Switch:
    """An LM that forwards the first ``after`` calls to ``first`` and the rest to ``then`` (a teacher that dies)."""

    def __new__(cls, first, then, after):
        import dspy

        class Switch(dspy.BaseLM):
            def __init__(self):
                super().__init__(model="switch", cache=False)
                self.calls = 0

            def forward(self, prompt=None, messages=None, **kwargs):
                self.calls += 1
                lm = first if self.calls <= after else then
                return lm.forward(prompt=prompt, messages=messages, **kwargs)

        return Switch()
