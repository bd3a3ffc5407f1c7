"""Field-by-field output plans for requests formatted by DSPy's ChatAdapter.

Small models rarely reproduce DSPy's ``[[ ## field ## ]]`` layout. When a request comes from a ChatAdapter
signature, the engine therefore writes every header itself and lets the model generate only the values:

``[[ ## reason ## ]]\\n<generated>\\n\\n[[ ## occupation ## ]]\\n<generated>\\n\\n[[ ## completed ## ]]``

The output fields (order and type) are read from DSPy's own formatted messages: the last user message says
"Respond with the corresponding output fields, starting with the field `[[ ## a ## ]]`, then `[[ ## b ## ]]` (must
be formatted as a valid Python int), ..." and the system message's field structure carries each field's
``# note: the value you produce ...`` (allowed Literal values, bool, int, float). An int field whose description
states a small range ("An integer from 1 to 5", "1-5") becomes a choice over that range. This module only parses; the
engine (``lms.local_engine``) runs the generation with the constraints from ``lms.constrained``.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

COMPLETED_MARKER = "[[ ## completed ## ]]"
FIELD_STOPS = ("[[ ##", "[ ##", "## ]]", "\n\n")  # the header, the model's misspelt copies of it, a blank line
_RESPOND_RE = re.compile(r"Respond with the corresponding output fields, starting with the field (.*?), and then ending")
_FIELD_RE = re.compile(r"`\[\[ ## (\w+) ## \]\]`(?: \(must be formatted as a valid Python ([^)]*(?:\)[^,]*?)?)\))?")
_RANGE_RE = re.compile(r"(?:from|between)\s+(-?\d+)\s+(?:to|and)\s+(-?\d+)|\b(-?\d+)\s*(?:-|\u2013)\s*(-?\d+)\b")
_MAX_RANGE = 100
_NOTE_RE = re.compile(r"\[\[ ## (\w+) ## \]\]\n\{\1\}[ \t]+# note: the value you produce (.+)")


@dataclass(frozen=True)
class FieldSpec:
    """One output field to generate.

    Attributes:
        name: Field name.
        kind: ``'text'`` (free, stops at a blank line or the next header), ``'int'``, ``'float'`` or ``'choice'``.
        options: Allowed values for ``'choice'`` fields (Literal, bool, enum, or engine ``constrained_fields``).
    """

    name: str
    kind: str = "text"
    options: tuple[str, ...] = ()

    def header(self) -> str:
        return f"[[ ## {self.name} ## ]]\n"


def _split_options(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(";") if part.strip())


def _literal_options(type_name: str) -> tuple[str, ...]:
    inner = type_name.strip()
    if not (inner.startswith("Literal[") and inner.endswith("]")):
        return ()
    try:
        values = ast.literal_eval("(" + inner[len("Literal["):-1] + ",)")
    except (ValueError, SyntaxError):
        return ()
    return tuple(str(v) for v in values)


def detect_output_fields(
    system: str | None, last_user: str | None, constrained_fields: dict[str, list[str]] | None = None
) -> list[FieldSpec] | None:
    """Detect a ChatAdapter request and return its output fields in order.

    Args:
        system: The system message text (DSPy's signature description), or None.
        last_user: The last user message text.
        constrained_fields: Field name -> allowed strings; such fields become ``'choice'`` fields.

    Returns:
        The ordered output fields, or None when the request is not a ChatAdapter request.
    """
    if not last_user:
        return None
    match = _RESPOND_RE.search(last_user)
    if not match:
        return None
    notes = {name: note.strip() for name, note in _NOTE_RE.findall(system or "")}
    constrained_fields = constrained_fields or {}
    fields = []
    for name, type_name in _FIELD_RE.findall(match.group(1)):
        spec = _field_spec(name, type_name, notes.get(name, ""), constrained_fields.get(name))
        if spec.kind == "int" and (bounds := _int_range(system or "", name)):
            spec = FieldSpec(name, "choice", tuple(str(i) for i in range(bounds[0], bounds[1] + 1)))
        fields.append(spec)
    return fields or None


def _int_range(system: str, name: str) -> tuple[int, int] | None:
    """A small integer range stated in an int field's description ("An integer from 1 to 5", "1-5")."""
    section = system.split("Your output fields are:", 1)[-1].split("All interactions will be structured", 1)[0]
    line = re.search(rf"^\d+\. `{re.escape(name)}` \(int\): (.*)$", section, re.M)
    match = _RANGE_RE.search(line.group(1)) if line else None
    if not match:
        return None
    low, high = (int(v) for v in (match.group(1, 2) if match.group(1) is not None else match.group(3, 4)))
    return (low, high) if 0 < high - low <= _MAX_RANGE else None


def _field_spec(name: str, type_name: str, note: str, allowed: list[str] | None) -> FieldSpec:
    if allowed:
        return FieldSpec(name, "choice", tuple(allowed))
    type_name = type_name.strip()
    if note.startswith("must exactly match (no extra characters) one of: "):
        return FieldSpec(name, "choice", _split_options(note.split(": ", 1)[1]))
    if note.startswith("must be one of: "):
        return FieldSpec(name, "choice", _split_options(note.split(": ", 1)[1]))
    if literal := _literal_options(type_name):
        return FieldSpec(name, "choice", literal)
    if type_name == "bool" or note == "must be True or False":
        return FieldSpec(name, "choice", ("True", "False"))
    if type_name == "int" or note == "must be a single int value":
        return FieldSpec(name, "int")
    if type_name == "float" or note == "must be a single float value":
        return FieldSpec(name, "float")
    return FieldSpec(name, "text")


def clean_value(text: str, stops: tuple[str, ...]) -> str:
    """Cut generated text at the first stop string and strip it."""
    cut = len(text)
    for stop in stops:
        if stop and (index := text.find(stop)) >= 0:
            cut = min(cut, index)
    return text[:cut].strip()


def format_fields(values: list[tuple[str, str]], completed: bool = True) -> str:
    """Render ``[(name, value), ...]`` in the ChatAdapter layout, ending with the completed marker."""
    parts = [f"[[ ## {name} ## ]]\n{value}" for name, value in values]
    if completed:
        parts.append(COMPLETED_MARKER)
    return "\n\n".join(parts)


def prefix_before(values: list[tuple[str, str]], field: FieldSpec) -> str:
    """Assistant text preceding the value of ``field``: earlier fields, then its header."""
    done = format_fields(values, completed=False)
    return (done + "\n\n" if done else "") + field.header()
