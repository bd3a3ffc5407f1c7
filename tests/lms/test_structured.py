"""Detection of ChatAdapter output fields from DSPy's own formatted messages."""

from __future__ import annotations

import enum
from typing import Literal

import dspy

from lms.structured import FieldSpec, detect_output_fields, format_fields, prefix_before


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Sig(dspy.Signature):
    """Do things."""

    history: str = dspy.InputField()
    reason: str = dspy.OutputField()
    score: int = dspy.OutputField()
    ratio: float = dspy.OutputField()
    level: Literal["low", "very high"] = dspy.OutputField()
    flag: bool = dspy.OutputField()
    color: Color = dspy.OutputField()
    tags: list[str] = dspy.OutputField()


def _fields(**constrained):
    msgs = dspy.ChatAdapter().format(Sig, demos=[], inputs={"history": "h"})
    return detect_output_fields(msgs[0]["content"], msgs[-1]["content"], constrained)


def test_detects_fields_and_types_in_order():
    fields = _fields()
    assert [f.name for f in fields] == ["reason", "score", "ratio", "level", "flag", "color", "tags"]
    kinds = {f.name: (f.kind, f.options) for f in fields}
    assert kinds["reason"] == ("text", ())
    assert kinds["score"] == ("int", ())
    assert kinds["ratio"] == ("float", ())
    assert kinds["level"] == ("choice", ("low", "very high"))
    assert kinds["flag"] == ("choice", ("True", "False"))
    assert kinds["color"] == ("choice", ("red", "blue"))
    assert kinds["tags"][0] == "text"


def test_constrained_fields_override():
    fields = _fields(reason=["a", "b"])
    assert fields[0] == FieldSpec("reason", "choice", ("a", "b"))


def test_not_a_chat_adapter_request():
    assert detect_output_fields(None, "Hello there") is None
    assert detect_output_fields("sys", None) is None


def test_formatting_round_trips_through_chat_adapter():
    text = format_fields([("reason", "because"), ("score", "3")])
    assert text == "[[ ## reason ## ]]\nbecause\n\n[[ ## score ## ]]\n3\n\n[[ ## completed ## ]]"
    sig = dspy.Signature("history -> reason, score: int")
    assert dspy.ChatAdapter().parse(sig, text) == {"reason": "because", "score": 3}
    assert prefix_before([("reason", "x")], FieldSpec("score", "int")) == "[[ ## reason ## ]]\nx\n\n[[ ## score ## ]]\n"
    assert prefix_before([], FieldSpec("score", "int")) == "[[ ## score ## ]]\n"


def test_repeated_line_cut():
    from lms.generation import repeated_line_cut

    assert repeated_line_cut("a\nb\na\n") == 4
    assert repeated_line_cut("a\nb\nc") is None
    assert repeated_line_cut("\n\nx\n") is None
    looped = "- 1983-1984: Clerks (age 23)\n- 1984-1985: Clerks (age 24)\n"
    assert repeated_line_cut(looped) == len("- 1983-1984: Clerks (age 23)\n")
    assert repeated_line_cut("- 1983: Clerks\n- 1984: Nurses\n") is None


def test_int_field_with_stated_range_becomes_choice():
    class Judge(dspy.Signature):
        """Judge."""

        reason: str = dspy.InputField()
        justification: str = dspy.OutputField(desc="Explain 3-4 things.")
        coherence: int = dspy.OutputField(desc="An integer from 1 to 5: 5 = clear; 3 = gaps; 1 = incoherent.")
        count: int = dspy.OutputField(desc="How many, 0-1000.")

    msgs = dspy.ChatAdapter().format(Judge, demos=[], inputs={"reason": "r"})
    fields = detect_output_fields(msgs[0]["content"], msgs[-1]["content"])
    kinds = {f.name: (f.kind, f.options) for f in fields}
    assert kinds["justification"] == ("text", ())
    assert kinds["coherence"] == ("choice", ("1", "2", "3", "4", "5"))
    assert kinds["count"] == ("int", ())
