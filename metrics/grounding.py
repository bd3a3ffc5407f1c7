"""LM-free signals about a reason: grounding in the history, and the likelihood utility of the gold occupation.

**Grounding check** (:func:`grounding_check`). Mentions are extracted from the reason and looked up in the
history; the rule, per kind of mention:

* **Years** — every ``\\b(19|20)\\d\\d\\b`` in the reason. A year is grounded when it occurs in the history text or
  lies within the span of an entry (``2001-2005`` covers 2001..2005; ``2010-present`` covers 2010..this year).
* **Degrees** — degree words (high school diploma/GED, associate, bachelor's/BA/BS, master's/MBA/MA/MS,
  doctorate/PhD, plus ``certificate``) map to a level; a level is grounded when the history mentions the same level.
* **Titles and employers** — phrases introduced by a cue (``worked as``, ``job as``, ``role as``, ``position as``,
  ``became``, ``promoted to``, ``moved into``, ``at``, ``for``, ``with``, ``joined``, ``left``, ``from``) followed by
  capitalized words, and any other run of two or more capitalized words (leading function words such as "After" or
  "Her" are dropped). A phrase is grounded when rapidfuzz's ``partial_ratio`` between the canonical phrase and
  some history line (title, employer, education; ``ratio`` when the phrase is longer than the line) is at least
  ``threshold`` (default 85), i.e. the phrase fuzzily occurs inside a history entry (case, punctuation and plural "s"
  insensitive). A phrase joined by "and"/"&" is also grounded when each part is.

The score is ``1 - ungrounded / mentions`` (1.0 when the reason mentions nothing checkable).

**Likelihood utility** (:func:`likelihood_utility`). The log-probability of the gold occupation under the predictor
given history + reason, computed exactly by the local engine (:func:`lms.option_logprob`); None when the LM is not
local, ``lms`` is missing, or the engine cannot score (e.g. the occupation field is not constrained).
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import dspy
from rapidfuzz import fuzz

import lms
from careers.history import coerce_history
from careers.onet import canonical
from signatures import PredictOccupation

logger = logging.getLogger(__name__)

YEAR_RE = re.compile(r"\b(?:19|20)\d\d\b")
SPAN_RE = re.compile(r"\b((?:19|20)\d\d)\s*[-–]\s*((?:19|20)\d\d|present)\b", re.IGNORECASE)
DEGREE_PATTERNS: dict[str, re.Pattern] = {
    "high_school": re.compile(r"(?i:\bhigh[- ]school\b|\bGED\b)"),
    "associate": re.compile(
        r"(?i:\bassociate'?s?\s+degree\b|\bassociate of (?:arts|science)\b)|\bA\.?A\.?S?\.?(?!\w)"
    ),
    "bachelor": re.compile(r"(?i:\bbachelor|\bundergraduate degree\b)|\bB\.?(?:A|Sc?)\.?(?!\w)"),
    "master": re.compile(
        r"(?i:\bmaster'?s\b|\bmaster of\b|\bmaster degree\b|\bgraduate degree\b)|\bM\.?(?:A|Sc?|BA)\.?(?!\w)"
    ),
    "doctorate": re.compile(r"(?i:\bdoctorate\b|\bdoctoral\b|\bph\.?d\b)"),
    "certificate": re.compile(r"(?i:\bcertificat(?:e|ion)\b)"),
}
_LEADING_STOP = {"after", "before", "in", "since", "during", "then", "her", "his", "their", "the", "this", "that",
                 "with", "as", "from", "at", "for", "by", "while", "when", "later", "now", "having", "both", "a", "an",
                 "she", "he", "they", "it", "its", "these", "those", "over", "through", "until", "moving", "working"}
_CUE_RE = re.compile(
    r"\b(?:worked as|work as|job as|role as|position as|became|becoming|promoted to|moved into|moving into|"
    r"at|for|with|joined|joining|left|leaving|from)\s+(?:an?\s+|the\s+)?"
    r"((?:[A-Z][\w&'.-]*)(?:\s+(?:of|and|&|[A-Z][\w&'.-]*))*)"
)
_CAPS_RE = re.compile(r"\b([A-Z][\w&'.-]*(?:\s+(?:of|and|&)?\s*[A-Z][\w&'.-]*)+)")
_STOP_PHRASES = {"o net", "onet", "o net soc", "i", "the", "he", "she", "they", "this", "their"}
_MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"}


@dataclass(frozen=True)
class Mention:
    """One checkable mention of a reason: ``kind`` is ``year``, ``degree`` or ``entity`` (title/employer)."""

    kind: str
    text: str


@dataclass
class GroundingResult:
    """The grounding of a reason: ``score`` in [0, 1], the checked mentions and the ungrounded ones."""

    score: float
    mentions: list[Mention] = field(default_factory=list)
    ungrounded: list[Mention] = field(default_factory=list)

    @property
    def ungrounded_texts(self) -> list[str]:
        """The ungrounded mentions as plain strings."""
        return [m.text for m in self.ungrounded]


def _history_text(history: Any) -> str:
    if isinstance(history, str):
        return history
    return coerce_history(history)[0]


def _history_years(text: str) -> set[int]:
    years = {int(y) for y in YEAR_RE.findall(text)}
    this_year = _dt.date.today().year
    for start, end in SPAN_RE.findall(text):
        last = this_year if end.lower() == "present" else int(end)
        years.update(range(int(start), max(int(start), last) + 1))
    return years


def _degree_levels(text: str) -> set[str]:
    return {level for level, pattern in DEGREE_PATTERNS.items() if pattern.search(text)}


def _key(text: str) -> str:
    words = canonical(text).split()
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words)


def _entity_phrases(reason: str) -> list[str]:
    found: list[str] = []
    for match in _CUE_RE.finditer(reason):
        found.append(match.group(1))
    for match in _CAPS_RE.finditer(reason):
        found.append(match.group(1))
    out, seen = [], set()
    for phrase in found:
        phrase = re.sub(r"[\s'.,-]+$", "", phrase.strip())
        phrase = re.sub(r"\s+(?:of|and|&)$", "", phrase)
        raw_words = phrase.split()
        while raw_words and canonical(raw_words[0]) in _LEADING_STOP:
            raw_words.pop(0)
        phrase = " ".join(raw_words)
        words = [w for w in canonical(phrase).split() if w not in _MONTHS]
        key = " ".join(words)
        if not key or key in _STOP_PHRASES or YEAR_RE.fullmatch(key) or len(key) < 3:
            continue
        if any(DEGREE_PATTERNS[level].search(phrase) for level in DEGREE_PATTERNS):
            continue  # degrees are checked by level
        if key not in seen:
            seen.add(key)
            out.append(phrase)
    # drop phrases contained in a longer extracted phrase
    keys = [canonical(p) for p in out]
    return [p for p, k in zip(out, keys, strict=True) if not any(k != o and f" {k} " in f" {o} " for o in keys)]


def grounding_check(reason: str, history: Any, *, threshold: float = 85.0) -> GroundingResult:
    """Finds years, degrees, titles and employers in ``reason`` that do not occur in ``history``.

    Args:
        reason: The reason text.
        history: The rendered history text, or a dict/JSON/:class:`~careers.history.CareerHistory`.
        threshold: Minimum rapidfuzz ``partial_ratio`` (0-100) for a title/employer phrase to count as found.

    Returns:
        A :class:`GroundingResult` (see the module docstring for the rule).
    """
    reason = reason or ""
    text = _history_text(history)
    lines = [_key(line) for line in re.split(r"[\n;]| at |, ", text) if line.strip()]
    lines = [line for line in lines if line] + [_key(text)]
    years = _history_years(text)
    levels = _degree_levels(text)
    mentions: list[Mention] = []
    ungrounded: list[Mention] = []

    for year in dict.fromkeys(YEAR_RE.findall(reason)):
        mention = Mention("year", year)
        mentions.append(mention)
        if int(year) not in years:
            ungrounded.append(mention)
    for level, pattern in DEGREE_PATTERNS.items():
        match = pattern.search(reason)
        if match:
            mention = Mention("degree", match.group(0))
            mentions.append(mention)
            if level not in levels:
                ungrounded.append(mention)
    def found(phrase: str) -> bool:
        key = _key(phrase)
        best = max((fuzz.partial_ratio(key, line) if len(key) <= len(line) else fuzz.ratio(key, line)
                    for line in lines), default=0.0)
        return best >= threshold

    for phrase in _entity_phrases(reason):
        mention = Mention("entity", phrase)
        mentions.append(mention)
        parts = [p for p in re.split(r"\s+(?:and|&)\s+", phrase) if p.strip()]
        if not (found(phrase) or (len(parts) > 1 and all(found(p) for p in parts))):
            ungrounded.append(mention)
    score = 1.0 - len(ungrounded) / len(mentions) if mentions else 1.0
    return GroundingResult(score=score, mentions=mentions, ungrounded=ungrounded)


def likelihood_utility(
    lm: Any,
    history: str,
    reason: str | None,
    occupation: str,
    *,
    signature: Any = None,
    demos: list | None = None,
    extra_inputs: dict[str, str] | None = None,
) -> float | None:
    """Log-probability of the gold ``occupation`` under the predictor given history + reason (local LMs only).

    Args:
        lm: The predictor's LM.
        history: Rendered history text.
        reason: The reason (None for a reason-less predictor; then ``signature`` must not have a reason input).
        occupation: The gold official title.
        signature: The predictor's signature (default :class:`signatures.PredictOccupation`).
        demos: The predictor's demos, formatted into the messages as in a real call.
        extra_inputs: Further input fields (e.g. ``candidates`` for the hybrid signatures).

    Returns:
        The total log-probability (``-inf`` when the title is not an allowed option), or None when the LM is not
        local or scoring is unavailable.
    """
    if not lms.is_local(lm):
        return None
    try:
        signature = signature or PredictOccupation
        inputs = {"history": history, **(extra_inputs or {})}
        if reason is not None and "reason" in signature.input_fields:
            inputs["reason"] = reason
        messages = dspy.ChatAdapter().format(signature, list(demos or []), inputs)
        prefix = {"reason": reason} if "reason" in signature.output_fields else None
        return float(lms.option_logprob(lm, messages, "occupation", occupation, prefix_fields=prefix))
    except Exception as exc:  # noqa: BLE001 - an unavailable signal is None, not a crash
        logger.warning("Likelihood utility unavailable: %s", exc)
        return None
