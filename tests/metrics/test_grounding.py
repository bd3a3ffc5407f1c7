"""LM-free grounding check and the likelihood-utility glue."""

from __future__ import annotations

import types

import dspy
import pytest
from dspy.utils.dummies import DummyLM

import metrics.grounding as grounding
from metrics.grounding import grounding_check, likelihood_utility
from signatures import PredictOccupation, ReasonAndPredict

HISTORY = """Education:
- Bachelor's degree in Nursing, State University (2001-2005)
Jobs (oldest first):
1. 2005-2008: Cashier at Walmart (age 22)
2. 2008-present: Nursing Assistant at Mercy Hospital"""


def test_fully_grounded_reason():
    result = grounding_check(
        "After Walmart she worked as a Nursing Assistant at Mercy Hospital since 2008, using her bachelor's degree.",
        HISTORY)
    kinds = sorted({m.kind for m in result.mentions})
    assert kinds == ["degree", "entity", "year"]
    assert result.ungrounded == [] and result.score == 1.0


def test_invented_facts_are_ungrounded():
    result = grounding_check("In 1999 she earned an MBA and worked at Google as a Software Engineer.", HISTORY)
    assert set(result.ungrounded_texts) == {"1999", "MBA", "Google", "Software Engineer"}
    assert result.score == 0.0


def test_years_inside_spans_and_present_are_grounded():
    assert grounding_check("By 2003 she was studying; in 2012 she still cared for patients.", HISTORY).score == 1.0
    assert grounding_check("Since 2015 nothing changed.", HISTORY).score == 1.0  # 2008-present covers 2015
    assert grounding_check("In 1995 she started.", HISTORY).ungrounded_texts == ["1995"]


def test_fuzzy_titles_plurals_and_case():
    result = grounding_check("Years as a cashier at WALMART and her time with Mercy Hospitals.", HISTORY)
    assert result.ungrounded == []
    assert grounding_check("Worked at Walmart and Target.", HISTORY).ungrounded_texts == ["Walmart and Target"]


def test_partial_score_and_nothing_to_check():
    result = grounding_check("She left Walmart in 2008 for Amazon Logistics.", HISTORY)
    assert result.ungrounded_texts == ["Amazon Logistics"]
    assert result.score == pytest.approx(2 / 3)
    assert grounding_check("She prefers steady, hands-on work.", HISTORY).score == 1.0
    assert grounding_check("", HISTORY).score == 1.0


def test_history_as_dict():
    person = {"person_id": "1", "jobs": [{"title": "Welder", "employer": "Boeing", "start_year": 2010}]}
    assert grounding_check("She welded at Boeing from 2010.", person).score == 1.0
    assert grounding_check("She worked at Airbus in 2009.", person).score == 0.0


def test_likelihood_utility_none_for_non_local():
    assert likelihood_utility(DummyLM([]), HISTORY, "r", "Registered Nurses") is None
    assert likelihood_utility(None, HISTORY, "r", "Registered Nurses") is None


def test_likelihood_utility_local_glue(monkeypatch):
    calls = []

    def option_logprob(lm, messages, field, option, prefix_fields=None):
        calls.append((messages, field, option, prefix_fields))
        return -1.25

    monkeypatch.setattr(grounding, "lms", types.SimpleNamespace(is_local=lambda lm: True,
                                                                  option_logprob=option_logprob))
    assert likelihood_utility(object(), HISTORY, "reason text", "Registered Nurses") == -1.25
    messages, field, option, prefix = calls[0]
    assert messages == dspy.ChatAdapter().format(PredictOccupation, [], {"history": HISTORY, "reason": "reason text"})
    assert (field, option, prefix) == ("occupation", "Registered Nurses", None)
    likelihood_utility(object(), HISTORY, "reason text", "Registered Nurses", signature=ReasonAndPredict)
    assert calls[1][3] == {"reason": "reason text"}


def test_likelihood_utility_engine_error_is_none(monkeypatch):
    def option_logprob(*args, **kwargs):
        raise ValueError("no closed option list")

    monkeypatch.setattr(grounding, "lms", types.SimpleNamespace(is_local=lambda lm: True,
                                                                  option_logprob=option_logprob))
    assert likelihood_utility(object(), HISTORY, "r", "Registered Nurses") is None
