"""Hybrid signatures: the reasoner and predictor see a supervised baseline's top candidates.

A fitted supervised baseline (frequency or Markov transitions) proposes the K most likely next
occupations with probabilities. The candidates are rendered as text (:func:`format_candidates`) into a
``candidates`` input field; the LM may choose among them or name another official title when the
history clearly points elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import dspy

from signatures.reasoning import HISTORY_DESC, OCCUPATION_DESC, REASON_DESC

CANDIDATES_DESC = (
    "Likely next occupations proposed by a statistical model trained on many careers, one per line with its "
    "probability, most likely first. They are hints, not facts about the person."
)


def format_candidates(candidates: Sequence[Any] | str | None) -> str:
    """Renders baseline candidates as numbered lines ``1. Registered Nurses (p=0.42)``.

    Args:
        candidates: Text (returned as is), or a sequence of ``(title, probability)`` pairs, titles, or
            dicts with ``title``/``occupation`` and ``prob``/``score``.

    Returns:
        The rendered text; ``"(none)"`` when there are no candidates.
    """
    if candidates is None:
        return "(none)"
    if isinstance(candidates, str):
        return candidates.strip() or "(none)"
    lines = []
    for i, item in enumerate(_iter_pairs(candidates), 1):
        title, prob = item
        lines.append(f"{i}. {title}" + (f" (p={prob:.2f})" if prob is not None else ""))
    return "\n".join(lines) or "(none)"


_LINE = re.compile(r"^\s*\d+\.\s+(?P<title>.+?)(?:\s+\(p=(?P<prob>[0-9.]+)\))?\s*$")


def parse_candidates(text: str | None) -> list[tuple[str, float | None]]:
    """Reads back the ``(title, probability)`` pairs of :func:`format_candidates` text (numbered lines; other
    lines, such as ``"(none)"``, are skipped)."""
    out = []
    for line in (text or "").splitlines():
        if m := _LINE.match(line):
            out.append((m.group("title"), float(m.group("prob")) if m.group("prob") else None))
    return out


def _iter_pairs(candidates: Iterable[Any]) -> Iterable[tuple[str, float | None]]:
    for item in candidates:
        if isinstance(item, str):
            yield item, None
        elif isinstance(item, dict):
            title = item.get("title") or item.get("occupation")
            prob = item.get("prob", item.get("probability", item.get("score")))
            yield str(title), (float(prob) if prob is not None else None)
        else:
            title, prob = item[0], (item[1] if len(item) > 1 else None)
            yield str(title), (float(prob) if prob is not None else None)


class GenerateReasonWithCandidates(dspy.Signature):
    """Read a person's career history and explain what drives their next career move.

    Describe the preferences and the trajectory visible in the history: the direction of their moves,
    the skills and responsibilities built up, changes of level or sector, and returns to earlier work.
    The candidate list shows what similar careers usually do next; use it to notice which patterns
    matter, but state only facts from the history and do not name a specific next job title.
    """

    history: str = dspy.InputField(desc=HISTORY_DESC)
    candidates: str = dspy.InputField(desc=CANDIDATES_DESC)
    reason: str = dspy.OutputField(desc=REASON_DESC)


class PredictOccupationWithCandidates(dspy.Signature):
    """Name the occupation this person will most likely hold next.

    Weigh the candidate list from a statistical model against the career history and the reason.
    Choose a candidate when the reason supports it; name another official title when the history
    clearly points elsewhere. Answer with one official O*NET-SOC 2019 occupation title.
    """

    history: str = dspy.InputField(desc=HISTORY_DESC)
    candidates: str = dspy.InputField(desc=CANDIDATES_DESC)
    reason: str = dspy.InputField(desc="The person's preferences and trajectory, derived from the history.")
    occupation: str = dspy.OutputField(desc=OCCUPATION_DESC)


class ReasonAndPredictWithCandidates(dspy.Signature):
    """Explain what drives this person's next career move, then name the occupation they will most likely hold next.

    First describe the preferences and trajectory visible in the career history, using only facts stated
    there. Then weigh the candidate list from a statistical model: choose a candidate the reason supports,
    or another official title when the history clearly points elsewhere. Answer with one official
    O*NET-SOC 2019 occupation title.
    """

    history: str = dspy.InputField(desc=HISTORY_DESC)
    candidates: str = dspy.InputField(desc=CANDIDATES_DESC)
    reason: str = dspy.OutputField(desc=REASON_DESC)
    occupation: str = dspy.OutputField(desc=OCCUPATION_DESC)


class PredictDirectWithCandidates(dspy.Signature):
    """Name the occupation this person will most likely hold next, from their career history and a candidate list.

    Choose a candidate when the history supports it, or another official title when it clearly points
    elsewhere. Answer with one official O*NET-SOC 2019 occupation title.
    """

    history: str = dspy.InputField(desc=HISTORY_DESC)
    candidates: str = dspy.InputField(desc=CANDIDATES_DESC)
    occupation: str = dspy.OutputField(desc=OCCUPATION_DESC)
