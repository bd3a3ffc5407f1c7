"""The career-history schema: validated education and job entries, prompt rendering, DSPy examples.

A :class:`CareerHistory` is what a user hands the program (a dict, JSON or a row of a loader). It is
validated strictly: unknown fields, wrong types, impossible years and empty titles are rejected with a
:class:`HistoryValidationError` (a ``ValueError``) that names the record and the field. Documented
rules apply instead of errors in two places: control characters are stripped from text, and a history
longer than ``max_jobs``/``max_education`` entries keeps only the most recent ones (logged).

Text inside a history is data: :meth:`CareerHistory.to_prompt_text` renders it as one compact block
that DSPy places inside the ``history`` input field, so it cannot change instructions or format.
:func:`coerce_history` is the input rule of every consumer (programs, judges, grounding checks): any
accepted history form becomes prompt text with DSPy field markers neutralized (:func:`neutralize_markers`)
exactly once.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import re
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

logger = logging.getLogger(__name__)

MIN_YEAR = 1900
MAX_TEXT = 200
DEFAULT_MAX_JOBS = 50
DEFAULT_MAX_EDUCATION = 20
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
ONET_CODE = re.compile(r"^\d{2}-\d{4}\.\d{2}$")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MARKER = re.compile(r"\[\[\s*##\s*(\w*)\s*##\s*\]\]")


class HistoryValidationError(ValueError):
    """A career history failed validation; the message names the record and the field."""


class HistoryTypeError(HistoryValidationError, TypeError):
    """A history of an unsupported type (both a ``ValueError``, like every input rejection, and a ``TypeError``)."""


def neutralize_markers(text: str) -> str:
    """Rewrites DSPy field markers (``[[ ## name ## ]]``) inside data as ``[name]``.

    History text is data placed inside the ``history`` input field; a marker in it could otherwise look like a field
    boundary to the LM. Nothing else is changed.
    """
    return _MARKER.sub(lambda m: f"[{m.group(1)}]", text)


def clean_text(value: Any, *, field: str, max_len: int = MAX_TEXT, required: bool = False) -> str | None:
    """Validates one text field: strips control characters and whitespace, enforces a length limit.

    Raises:
        ValueError: For non-strings, empty required values, or text longer than ``max_len``.
    """
    if value is None:
        if required:
            raise ValueError(f"{field} is required")
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{field} is not valid UTF-8 text") from None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {type(value).__name__}")
    if _SURROGATE.search(value):
        raise ValueError(f"{field} is not valid Unicode text (it holds a lone surrogate code point)")
    text = " ".join(_CONTROL.sub(" ", value).split())
    if not text:
        if required:
            raise ValueError(f"{field} must not be empty")
        return None
    if len(text) > max_len:
        raise ValueError(f"{field} is {len(text)} characters long; the limit is {max_len}")
    return text


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.lru_cache(maxsize=1)
def _this_year() -> int:
    return _dt.date.today().year


def _check_year(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) < 10:
            value = int(value.strip())
        else:
            raise ValueError(f"{field} must be a year (integer), got {_short(value)}")
    this_year = _this_year()
    if not MIN_YEAR <= value <= this_year:
        raise ValueError(f"{field}={value} is outside {MIN_YEAR}-{this_year}")
    return value


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start_year: int | None = Field(None, description="First year of the entry.")
    end_year: int | None = Field(None, description="Last year of the entry; None while ongoing.")

    @field_validator("start_year", "end_year", mode="before")
    @classmethod
    def _years(cls, v, info):
        return _check_year(v, info.field_name)

    @model_validator(mode="after")
    def _order(self):
        if self.start_year is not None and self.end_year is not None and self.end_year < self.start_year:
            raise ValueError(f"end_year {self.end_year} is before start_year {self.start_year}")
        return self

    def span(self) -> str:
        """Renders the years as ``2001-2005``, ``2001-present`` or ``""``."""
        if self.start_year is None and self.end_year is None:
            return ""
        start = str(self.start_year) if self.start_year is not None else "?"
        end = str(self.end_year) if self.end_year is not None else "present"
        return start if start == end else f"{start}-{end}"


class Education(_Entry):
    """One education entry (degree level, field, institution, years)."""

    level: str = Field(description="Degree or level, e.g. 'High school diploma', \"Bachelor's degree\".")
    field: str | None = Field(None, description="Field of study.")
    institution: str | None = Field(None, description="School or university.")

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, v):
        return clean_text(v, field="level", required=True)

    @field_validator("field", "institution", mode="before")
    @classmethod
    def _text(cls, v, info):
        return clean_text(v, field=info.field_name)

    def render(self) -> str:
        """One compact line, e.g. ``Bachelor's degree in Economics, State University (2001-2005)``."""
        text = self.level + (f" in {self.field}" if self.field else "")
        text += f", {self.institution}" if self.institution else ""
        return text + (f" ({self.span()})" if self.span() else "")


class Job(_Entry):
    """One job spell. ``title`` is free text; ``onet_code`` the O*NET-SOC 2019 code when known.

    ``onet_candidates`` holds a set of plausible codes when the source coding is coarser than O*NET
    (NLSY79's 1980 Census categories); ``source_code`` keeps the dataset's own code (``occ1980:243``).
    """

    title: str = Field(description="Job title as reported.")
    employer: str | None = Field(None, description="Employer name.")
    onet_code: str | None = Field(None, description="O*NET-SOC 2019 code, NN-NNNN.NN.")
    onet_candidates: tuple[str, ...] = Field((), description="Candidate O*NET codes for coarse source codes.")
    source_code: str | None = Field(None, description="The dataset's own occupation code, prefixed by scheme.")
    age: int | None = Field(None, description="Age at the start of the spell.")

    @field_validator("title", mode="before")
    @classmethod
    def _title(cls, v):
        return clean_text(v, field="title", required=True)

    @field_validator("employer", "source_code", mode="before")
    @classmethod
    def _text(cls, v, info):
        return clean_text(v, field=info.field_name)

    @field_validator("onet_code", mode="before")
    @classmethod
    def _code(cls, v):
        if v is None or v == "":
            return None
        if not isinstance(v, str) or not ONET_CODE.match(v.strip()):
            raise ValueError(f"onet_code must look like 15-1252.00, got {_short(v)}")
        return v.strip()

    @field_validator("onet_candidates", mode="before")
    @classmethod
    def _codes(cls, v):
        if v is None:
            return ()
        if isinstance(v, str) or not isinstance(v, (list, tuple)):
            raise ValueError("onet_candidates must be a list of O*NET-SOC codes")
        for c in v:
            if not isinstance(c, str) or not ONET_CODE.match(c):
                raise ValueError(f"onet_candidates holds {_short(c)}, not an O*NET-SOC code like 15-1252.00")
        return tuple(v)

    @field_validator("age", mode="before")
    @classmethod
    def _age(cls, v):
        if v is None or v == "":
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 10 <= v <= 100:
            raise ValueError(f"age must be an integer between 10 and 100, got {_short(v)}")
        return v

    @property
    def state(self) -> str:
        """The key that identifies the occupation for supervised baselines."""
        return self.source_code or self.onet_code or self.title.lower()

    @property
    def codes(self) -> tuple[str, ...]:
        """The O*NET codes this job stands for (its code, else its candidate set)."""
        return (self.onet_code,) if self.onet_code else self.onet_candidates

    def render(self) -> str:
        """One compact line, e.g. ``2005-2008: Sales Representative at Acme (age 24)``."""
        text = f"{self.span()}: " if self.span() else ""
        text += self.title + (f" at {self.employer}" if self.employer else "")
        return text + (f" (age {self.age})" if self.age is not None else "")


class CareerHistory(BaseModel):
    """A person's education and jobs, oldest first. Build with :meth:`from_dict` for clear errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    person_id: str = Field(description="Stable person identifier (splits are made by person).")
    education: tuple[Education, ...] = Field((), description="Education entries, oldest first.")
    jobs: tuple[Job, ...] = Field((), description="Job spells, oldest first.")
    demographics: dict[str, str | int] | None = Field(None, description="Optional; kept out of prompts by default.")

    @field_validator("person_id", mode="before")
    @classmethod
    def _pid(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        return clean_text(v, field="person_id", max_len=100, required=True)

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.jobs and not self.education:
            raise ValueError("history is empty: give at least one job or education entry")
        return self

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_education: int = DEFAULT_MAX_EDUCATION,
        record: str | None = None,
    ) -> CareerHistory:
        """Validates a dict (or JSON string) into a history.

        Entries are sorted chronologically; exact duplicates are dropped; more than ``max_jobs`` jobs or
        ``max_education`` education entries keep the most recent ones (both logged).

        Args:
            data: A mapping with ``person_id``, ``jobs`` and/or ``education``, or its JSON text.
            max_jobs: Most recent job entries kept.
            max_education: Most recent education entries kept.
            record: A label for error messages (e.g. ``"line 12"``).

        Raises:
            HistoryValidationError: Naming the record and field, e.g. ``jobs[2].end_year``.
        """
        where = f"{record}: " if record else ""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge ints, deep nesting
                raise HistoryValidationError(f"{where}not valid JSON ({type(exc).__name__}: {exc})"[:500]) from None
        if not isinstance(data, dict):
            raise HistoryValidationError(f"{where}a career history must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        for key, limit in (("jobs", max_jobs), ("education", max_education)):
            entries = data.get(key)
            if entries is None:
                continue
            if not isinstance(entries, (list, tuple)):
                raise HistoryValidationError(f"{where}{key} must be a list, got {type(entries).__name__}")
            if len(entries) > limit:
                logger.warning("%s%d %s entries: keeping the most recent %d", where, len(entries), key, limit)
        try:
            history = cls.model_validate(data)
        except ValidationError as exc:
            raise HistoryValidationError(where + _format_errors(exc)) from None
        return history._normalized(max_jobs, max_education)

    def _normalized(self, max_jobs: int, max_education: int) -> CareerHistory:
        def order(e: _Entry):
            return (e.start_year if e.start_year is not None else (e.end_year or 0),
                    e.end_year if e.end_year is not None else 10**4)

        jobs = list(dict.fromkeys(sorted(self.jobs, key=order)))[-max_jobs:]
        edu = list(dict.fromkeys(sorted(self.education, key=order)))[-max_education:]
        if len(jobs) < len(self.jobs) or len(edu) < len(self.education):
            logger.info("person %s: dropped duplicate or old entries", self.person_id)
        return self.model_copy(update={"jobs": tuple(jobs), "education": tuple(edu)})

    # ------------------------------------------------------------------ rendering
    def to_prompt_text(self, include_demographics: bool = False) -> str:
        """Renders the history chronologically and compactly for an LM prompt."""
        lines = []
        if include_demographics and self.demographics:
            lines.append("Person: " + ", ".join(f"{k} {v}" for k, v in sorted(self.demographics.items())))
        lines.append("Education:" if self.education else "Education: none reported")
        lines.extend(f"- {e.render()}" for e in self.education)
        lines.append("Jobs (oldest first):" if self.jobs else "Jobs: none reported")
        lines.extend(f"{i}. {j.render()}" for i, j in enumerate(self.jobs, 1))
        # text is data: a DSPy field marker ([[ ## name ## ]]) inside it is rewritten as [name]
        return neutralize_markers("\n".join(lines))

    def to_json(self) -> str:
        """Compact JSON of the history (round-trips through :meth:`from_dict`)."""
        return self.model_dump_json(exclude_none=True, exclude_defaults=True)

    def prefix(self, n_jobs: int) -> CareerHistory:
        """The history up to (excluding) job ``n_jobs``, with education finished by then."""
        cut = self.jobs[n_jobs].start_year if n_jobs < len(self.jobs) else None
        edu = tuple(e for e in self.education if cut is None or e.start_year is None or e.start_year <= cut)
        return self.model_copy(update={"jobs": self.jobs[:n_jobs], "education": edu})

    def to_example(
        self,
        target: Job | None = None,
        *,
        occupation: str | None = None,
        gold_codes: list[str] | tuple[str, ...] | None = None,
        include_demographics: bool = False,
    ) -> dspy.Example:
        """Converts to a DSPy example with input ``history``.

        Args:
            target: The next job (the label); None for an unlabeled example.
            occupation: Gold official O*NET title (defaults to the target's title).
            gold_codes: The gold candidate set (defaults to the target's codes).
            include_demographics: Whether demographics enter the prompt text.

        Returns:
            ``dspy.Example(history, occupation, onet_code, gold_codes, person_id, states, gold_state,
            career)`` with ``history`` as the only input.
        """
        fields: dict[str, Any] = {
            "person_id": self.person_id,
            "history": self.to_prompt_text(include_demographics),
            "states": [j.state for j in self.jobs],
            "career": json.loads(self.to_json()),
        }
        if target is not None:
            codes = list(gold_codes) if gold_codes is not None else list(target.codes)
            fields.update(
                occupation=occupation or target.title,
                onet_code=target.onet_code or (codes[0] if codes else None),
                gold_codes=codes,
                gold_state=target.state,
            )
        return dspy.Example(**fields).with_inputs("history")


def coerce_history(history: Any) -> tuple[str, CareerHistory | None]:
    """Renders any accepted history form as prompt text (with DSPy field markers neutralized).

    Args:
        history: A :class:`CareerHistory`, a dict, a JSON object string, or already rendered text (any other
            string).

    Returns:
        ``(prompt text, CareerHistory or None)``.

    Raises:
        HistoryValidationError: A dict or JSON history that fails validation, or empty or invalid text.
        HistoryTypeError: For other types (a ``HistoryValidationError`` and a ``TypeError``).
    """
    career = None
    if isinstance(history, CareerHistory):
        career = history
    elif isinstance(history, dict):
        career = CareerHistory.from_dict(history)
    elif isinstance(history, str):
        stripped = history.strip()
        if not stripped:
            raise HistoryValidationError("history is empty")
        if _SURROGATE.search(history):
            raise HistoryValidationError("history is not valid Unicode text (it holds a lone surrogate code point)")
        if stripped.startswith("{"):
            try:
                json.loads(stripped)
            except json.JSONDecodeError:
                return neutralize_markers(history), None  # rendered text that happens to start with a brace
            except (ValueError, RecursionError) as exc:  # huge integers, nesting too deep
                raise HistoryValidationError(f"history is not valid JSON ({type(exc).__name__})") from None
            career = CareerHistory.from_dict(stripped)
        else:
            return neutralize_markers(history), None
    else:
        raise HistoryTypeError(
            f"history must be a CareerHistory, dict, JSON string or rendered text, got {type(history).__name__}"
        )
    return career.to_prompt_text(), career  # to_prompt_text neutralizes the markers


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ""
        for item in err["loc"]:
            item = item if isinstance(item, int) or len(str(item)) <= 60 else str(item)[:57] + "..."
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (allowed: see careers.history schema)"
        parts.append(f"{loc or 'history'}: {msg}")
    return "; ".join(parts)
