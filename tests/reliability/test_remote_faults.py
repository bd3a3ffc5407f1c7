"""The CLIs against a stub OpenAI-compatible server on 127.0.0.1 that injects faults (``tests/helpers/stub_openai``).

Each failure mode -- malformed replies, HTTP 500, 429 with Retry-After, slow replies past the client timeout, a dead
server, a missing API key -- is reproduced through ``compile.optimize``, ``programs.evaluate`` and
``experiments.paper_claims``: the exit status, the one-line summary as the last line of stderr, the counts in
``metrics.json`` (``lm_usage`` per role), no lost candidate lines, retries that reach the server (never DSPy's cached
copy of a bad reply), and the API key absent from every written file. DSPy's retry backoff is patched to 0 s.
"""

from __future__ import annotations

import json
import logging
import time
import types
from pathlib import Path

import dspy
import pytest
from rel_helpers import DATA, HAVE_DATA

from tests.helpers.stub_openai import StubServer, stub_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(not HAVE_DATA, reason="data mirror not available")
KEY = "sk-stub-SECRET-4711"


@pytest.fixture(autouse=True)
def _fast_and_isolated(tmp_path, monkeypatch):
    """No real backoff waits; a private DSPy cache; the key in the environment only."""
    from dspy.clients import execution
    from dspy.clients.cache import Cache

    monkeypatch.setattr(execution, "_delay", lambda exc, attempt: 0.0)
    # the pipeline's own backoff: a stand-in for the module's ``time`` (patching time.sleep itself would also stop
    # the stub server's slow mode from sleeping)
    monkeypatch.setattr("compile.candidates.time", types.SimpleNamespace(sleep=lambda s: None,
                                                                         perf_counter=time.perf_counter))
    monkeypatch.setattr(dspy, "cache", Cache(enable_disk_cache=True, enable_memory_cache=True,
                                             disk_cache_dir=str(tmp_path / "dspy_cache")))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _compile_args(tmp_path, url, *extra):
    return ["--dataset", "synthetic", "--data_dir", str(DATA), "--synthetic_persons", "60", "--n_train", "8",
            "--n_dev", "2", "--n_test", "2", "--candidates_per_person", "2", "--teacher_lm", "openai/stub",
            "--judge_lm", "openai/stub", "--api_base", url, "--optimizer", "bootstrap", "--max_bootstrapped_demos",
            "1", "--max_labeled_demos", "1", "--threads", "4", "--retries", "1", "--output_dir", str(tmp_path / "runs"),
            "--run_name", "r", *extra]


def _eval_args(tmp_path, url, *extra):
    return ["--dataset", "synthetic", "--data_dir", str(DATA), "--program", "two_step", "--lm", "openai/stub",
            "--api_base", url, "--max_examples", "4", "--threads", "2", "--output_dir", str(tmp_path / "runs"),
            "--run_name", "e", *extra]


def _last_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _no_key_anywhere(*roots: Path) -> None:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"


def test_malformed_replies_abort_in_order_then_rerun_retries_live(stub_server, tmp_path, capsys, caplog):  # noqa: F811
    from compile.optimize import main

    stub_server.mode = "malformed"
    caplog.set_level(logging.WARNING)
    assert main(_compile_args(tmp_path, stub_server.url)) == 1
    err = capsys.readouterr().err
    last = _last_line(err)
    assert last.startswith("error: ") and "max_errors=0.5" in last and "ChatAdapter failed to parse" in last
    assert "JSONAdapter" not in err and err.count("max_errors=0.5") == 1, "the abort message appears once, last"
    assert "I/O operation on closed file" not in caplog.text
    run = tmp_path / "runs" / "r"
    lines = (run / "candidates.jsonl").read_text().splitlines()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["candidates_written"] == len(lines) > 0
    assert all(json.loads(x)["error"] for x in lines)
    teacher = metrics["lm_usage"]["teacher"]
    # every candidate: one request plus one retry with a fresh rollout, each an unparseable reply, no cache hit
    assert teacher["requests"] == 2 * len(lines) == stub_server.requests
    assert teacher["parse_errors"] == teacher["requests"] and teacher["cache_hits"] == 0
    assert teacher["retries"] == len(lines)
    assert "failed" in (run / "report.md").read_text()

    # the server is fixed: the same command retries the recorded failures against the live LM
    stub_server.mode = "ok"
    before = stub_server.requests
    assert main(_compile_args(tmp_path, stub_server.url)) == 0
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["candidates"]["generated"] == 16 and metrics["candidates"]["errors"] == 0
    assert metrics["lm_usage"]["teacher"]["requests"] == 16 and metrics["lm_usage"]["teacher"]["cache_hits"] == 0
    assert stub_server.requests - before >= 16 + 16 + 3 * 16  # teacher, predictor and three judges per candidate
    records = [json.loads(x) for x in (run / "candidates.jsonl").read_text().splitlines()]
    assert records[: len(lines)] == [json.loads(x) for x in lines], "lines of the aborted run are kept"
    assert metrics["selection"]["candidates"] == 16 and metrics["selection"]["generation_errors"] == 0
    _no_key_anywhere(run, tmp_path / "dspy_cache")


def test_recovered_500_and_429_are_counted(tmp_path, capsys):
    from compile.optimize import main

    server = StubServer("flaky", fail_rate=0.2, seed=3)
    try:
        assert main(_compile_args(tmp_path, server.url, "--n_train", "4")) == 0
    finally:
        server.stop()
    err = capsys.readouterr().err
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    usage = metrics["lm_usage"]
    failed = server.statuses[500] + server.statuses[429]
    assert failed > 0
    assert sum(u["status"]["5xx"] for u in usage.values()) == server.statuses[500]
    assert sum(u["status"]["429"] for u in usage.values()) == server.statuses[429]
    assert sum(u["requests"] for u in usage.values()) == server.requests
    assert sum(u["retries"] for u in usage.values()) >= failed - sum(u["errors"] for u in usage.values())
    report = (tmp_path / "runs" / "r" / "report.md").read_text()
    assert "## LM usage per role" in report and "| teacher |" in report
    assert _last_line(err).startswith("warning: ") and "retried" in _last_line(err)


def test_evaluate_against_a_dead_server_exits_1_with_an_errors_column(tmp_path, capsys):
    from programs.evaluate import main

    server = StubServer()
    url = server.url
    server.stop()  # mode down: connection refused
    assert main(_eval_args(tmp_path, url)) == 1
    out, err = capsys.readouterr()
    assert _last_line(err).startswith("error: two_step on synthetic/dev: all 4 predictions failed")
    assert "Connection refused" in _last_line(err) or "connect" in _last_line(err)
    header = next(ln for ln in out.splitlines() if "AccEM" in ln)
    assert " errors" in header and "lm_errors" in header
    metrics = json.loads((tmp_path / "runs" / "e" / "metrics.json").read_text())
    assert metrics["metrics"]["errors"] == 4
    predictor = metrics["lm_usage"]["predictor"]
    assert predictor["errors"] == 4 and predictor["status"]["connection"] == predictor["requests"] > 4


def test_evaluate_429_with_retry_after_is_honoured_and_counted(stub_server, tmp_path, capsys,  # noqa: F811
                                                               monkeypatch):
    from dspy.clients import execution

    from programs.evaluate import main

    waits = []
    monkeypatch.setattr(execution, "_delay", lambda exc, attempt: waits.append(exc.retry_after) or 0.0)
    stub_server.mode, stub_server.retry_after = "429", 0.01
    assert main(_eval_args(tmp_path, stub_server.url)) == 1
    assert "LMRateLimitError" in _last_line(capsys.readouterr().err)
    metrics = json.loads((tmp_path / "runs" / "e" / "metrics.json").read_text())
    predictor = metrics["lm_usage"]["predictor"]
    assert predictor["status"]["429"] == predictor["requests"] == stub_server.requests
    # DSPy's 3 retries per call, each waiting the server's Retry-After
    assert predictor["retries"] == predictor["requests"] - 4 == 12 and waits == [pytest.approx(0.01)] * 12


def test_slow_server_times_out_and_is_counted(stub_server, tmp_path):  # noqa: F811
    from programs.evaluate import EvalConfig, run_evaluation
    from runkit.run_dir import RunFailed

    stub_server.mode, stub_server.slow_seconds = "slow", 2.0
    lm = dspy.LM("openai/stub", api_base=stub_server.url, timeout=0.3, num_retries=1, cache=False)
    config = EvalConfig(dataset="synthetic", data_dir=str(DATA), program="two_step", max_examples=4, threads=4,
                        output_dir=str(tmp_path / "runs"), run_name="e")
    with pytest.raises(RunFailed, match="all 4 predictions failed"):
        run_evaluation(config, lm=lm)
    metrics = json.loads((tmp_path / "runs" / "e" / "metrics.json").read_text())
    predictor = metrics["lm_usage"]["predictor"]
    assert predictor["status"]["timeout"] == predictor["requests"] == 8 and predictor["retries"] == 4


def test_missing_api_key_fails_fast_with_the_reason(stub_server, tmp_path, capsys, monkeypatch):  # noqa: F811
    from programs.evaluate import main

    monkeypatch.delenv("OPENAI_API_KEY")
    assert main(_eval_args(tmp_path, stub_server.url)) == 1
    assert "API key" in _last_line(capsys.readouterr().err) and stub_server.requests == 0


def test_malformed_judge_replies_exit_1_in_evaluate(stub_server, tmp_path, capsys):  # noqa: F811
    from programs.evaluate import EvalConfig, run_evaluation
    from runkit.run_dir import RunFailed
    from tests.reliability.rel_helpers import scripted_lm

    stub_server.mode = "malformed"
    judge = dspy.LM("openai/stub", api_base=stub_server.url, num_retries=0)
    config = EvalConfig(dataset="synthetic", data_dir=str(DATA), program="two_step", max_examples=3, threads=1,
                        judge_lm="remote", output_dir=str(tmp_path / "runs"), run_name="j")
    with pytest.raises(RunFailed, match="all 3 judge calls failed"):
        run_evaluation(config, lm=scripted_lm(), judge_lm=judge)
    metrics = json.loads((tmp_path / "runs" / "j" / "metrics.json").read_text())
    judge_usage = metrics["lm_usage"]["judge"]
    # 3 criteria x (1 + 1 retry) per example, one request each (no JSON-adapter fallback doubling them)
    assert judge_usage["requests"] == stub_server.requests == 3 * 3 * 2
    assert judge_usage["parse_errors"] == judge_usage["requests"] and metrics["metrics"]["judge_errors"] == 3


def test_paper_claims_with_every_lm_call_failing_exits_1(stub_server, tmp_path, capsys):  # noqa: F811
    from experiments.paper_claims import main

    stub_server.mode = "500"
    args = ["--datasets", "synthetic", "--data_dir", str(DATA), "--n_test", "4", "--lm", "openai/stub",
            "--api_base", stub_server.url, "--rows", "markov,zero_shot_two_step", "--threads", "1", "--n_boot",
            "100", "--synthetic_persons", "60", "--compile_run", "none", "--distill_joint_run", "none",
            "--distill_two_model_run", "none", "--output_dir", str(tmp_path / "runs"), "--run_name", "c"]
    assert main(args) == 1
    last = _last_line(capsys.readouterr().err)
    assert last.startswith("error: every LM row failed") and "zero_shot_two_step" in last
    claims = json.loads((tmp_path / "runs" / "c" / "claims.json").read_text())
    assert claims["lm_usage"]["predictor"]["status"]["5xx"] == stub_server.requests > 0


@pytest.mark.slow
def test_sigkill_mid_compile_against_the_server_then_rerun_resumes(stub_server, tmp_path):  # noqa: F811
    import os
    import subprocess
    import sys

    from rel_helpers import driver_env, run_until_killed

    root = Path(__file__).resolve().parents[2]
    stub_server.mode, stub_server.slow_seconds = "slow", 0.15
    env = driver_env(0.0, OPENAI_API_KEY=KEY, DSPY_CACHEDIR=str(tmp_path / "dspy_cache"))
    cmd = [sys.executable, "-m", "compile.optimize", *_compile_args(tmp_path, stub_server.url, "--threads", "2")]
    cands = tmp_path / "runs" / "r" / "candidates.jsonl"

    def lines():
        data = cands.read_bytes() if cands.exists() else b""
        return data[: data.rfind(b"\n") + 1].splitlines()

    run_until_killed(cmd, lambda: len(lines()) >= 3, cwd=root, env=env, timeout=120)
    before = lines()
    assert 3 <= len(before) < 16
    stub_server.mode = "ok"
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = lines()
    assert after[: len(before)] == before
    keys = [(json.loads(x)["example_id"], json.loads(x)["candidate"]) for x in after]
    assert len(keys) == len(set(keys)) == 16, "no candidate lost or duplicated"
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert metrics["candidates"]["skipped"] == len(before) and metrics["candidates"]["generated"] == 16 - len(before)
    assert os.environ.get("OPENAI_API_KEY") == KEY
    _no_key_anywhere(tmp_path / "runs", tmp_path / "dspy_cache")
