"""lms.usage: per-role counts from DSPy's execution path, propagation to worker threads, no cached bad replies."""

from __future__ import annotations

import dspy
import pytest
from dspy.clients.cache import Cache
from dspy.utils.parallelizer import ParallelExecutor

from lms import usage
from tests.helpers.stub_openai import stub_server  # noqa: F401 - the fixture


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    from dspy.clients import execution

    monkeypatch.setattr(execution, "_delay", lambda exc, attempt: 0.0)
    monkeypatch.setattr(dspy, "cache", Cache(enable_disk_cache=True, enable_memory_cache=True,
                                             disk_cache_dir=str(tmp_path / "cache")))


def _lm(server, **kw):
    return dspy.LM("openai/stub", api_base=server.url, api_key="sk-test", **kw)


def test_roles_requests_cache_hits_and_tokens_follow_worker_threads(stub_server):  # noqa: F811
    predict = dspy.Predict("history -> reason")
    lm = _lm(stub_server, num_retries=0)
    with usage.tracking() as tracker, dspy.context(lm=lm):
        with usage.role("teacher"):
            ParallelExecutor(num_threads=3).execute(lambda h: predict(history=h), ["a", "b", "c", "a"])
        tracker.register(lm, "judge")
        predict(history="d")  # outside any role block: the registered role
    got = usage.usage_by_role(tracker)
    assert got["teacher"]["requests"] + got["teacher"]["cache_hits"] == 4 and got["teacher"]["requests"] >= 3
    assert got["judge"]["requests"] == 1 and got["teacher"]["input_tokens"] == 10 * got["teacher"]["requests"]
    assert sum(u["requests"] for u in got.values()) == stub_server.requests
    assert usage.usage_by_role() == {}  # outside tracking


def test_an_unparseable_reply_is_dropped_from_the_cache(stub_server):  # noqa: F811
    predict = dspy.Predict("history -> reason")
    lm = _lm(stub_server, num_retries=0)
    adapter = dspy.ChatAdapter(use_json_adapter_fallback=False)
    with usage.tracking() as tracker, dspy.context(lm=lm, adapter=adapter), usage.role("teacher"):
        stub_server.mode = "malformed"
        with pytest.raises(Exception, match="ChatAdapter failed to parse"):
            predict(history="x")
        stub_server.mode = "ok"
        assert predict(history="x").reason  # the same request again reaches the server
        assert predict(history="x").reason  # and a good reply is cached as usual
    t = tracker.as_dict()["teacher"]
    assert stub_server.requests == 2 and t["requests"] == 2 and t["cache_hits"] == 1 and t["parse_errors"] == 1
    assert "ChatAdapter failed to parse" in t["last_error"] and "JSONAdapter" not in t["last_error"]


def test_a_judge_score_out_of_range_is_not_reused_on_a_rerun(stub_server, monkeypatch):  # noqa: F811
    from metrics.judge import ReasonJudge
    from tests.helpers import stub_openai

    monkeypatch.setitem(stub_openai.FIELD_VALUES, "coherence", "9")  # a parsed but invalid score
    judge = ReasonJudge(_lm(stub_server, num_retries=0), retries=1)
    with usage.tracking() as tracker, dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        first = judge(history="1. Cashier", reason="stayed in retail", occupation="Cashiers")
        sent = stub_server.requests
        again = judge(history="1. Cashier", reason="stayed in retail", occupation="Cashiers")
    assert first.coherence is None and again.coherence is None and first.factuality == 5
    # the re-run asks the coherence judge again (twice: attempt and retry); factuality/utility come from the cache
    assert stub_server.requests - sent == 2
    judge_usage = tracker.as_dict()["other"]
    assert judge_usage["parse_errors"] == 4 and judge_usage["retries"] == 2 and judge_usage["cache_hits"] == 2


@pytest.mark.parametrize("mode,cls", [("500", "5xx"), ("429", "429"), ("slow", "timeout")])
def test_failed_attempts_are_classed_and_retries_counted(stub_server, mode, cls):  # noqa: F811
    stub_server.mode, stub_server.slow_seconds = mode, 1.0
    lm = _lm(stub_server, num_retries=2, timeout=0.2, cache=False)
    with usage.tracking() as tracker, dspy.context(lm=lm), usage.role("predictor"):
        with pytest.raises(Exception):  # noqa: B017 - any LM error
            dspy.Predict("history -> reason")(history="x")
    p = tracker.as_dict()["predictor"]
    assert p["requests"] == 3 and p["retries"] == 2 and p["errors"] == 1 and p["status"][cls] == 3
    assert usage.format_table(tracker.as_dict()).count("| predictor | 3 | 2 | 1 |") == 1
