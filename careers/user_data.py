"""Loader for user-supplied career data (JSONL or CSV) into next-occupation examples.

**JSONL** (``.jsonl``/``.json``, one JSON object per line, blank lines ignored): each object is a
career history as accepted by :meth:`careers.history.CareerHistory.from_dict` (``person_id``,
``jobs``, ``education``, optional ``demographics``) plus, optionally, one label:

* ``"next"``: the next job, a job dict (``title`` required; ``onet_code``/``onet_candidates`` optional);
* ``"target"``: the next occupation as a string, an O*NET-SOC code (``15-1252.00``) or a title.

**CSV** (long format, header row, one row per entry; rows of a person need not be adjacent):

============  =============================================================================
column        meaning
============  =============================================================================
person_id     required on every row
kind          ``job``, ``education`` or ``next`` (the label job; at most one per person)
title         job title (``job``/``next`` rows)
level         degree or level (``education`` rows)
employer      optional, job rows
field         optional, education rows (field of study)
institution   optional, education rows
start_year    optional year
end_year      optional year (empty while ongoing)
onet_code     optional O*NET-SOC 2019 code of a job
============  =============================================================================

Only ``person_id`` and ``kind`` must be present as columns; unknown columns are an error.

**Examples.** One example per transition: every job after the first (``min_history_jobs``) is the
gold of the jobs before it, and ``next``/``target`` is the gold of the whole history. The gold code is
the job's ``onet_code``, else its ``onet_candidates`` (first one is the representative), else its title
normalized with ``taxonomy.normalize`` (loaded from ``data_dir`` when not given). A gold that matches
no O*NET title is skipped and counted (``stats["skipped_unmatched"]``) with ``on_unmatched="skip"``
(default) or raises a ``ValueError`` naming file, line and field with ``on_unmatched="error"``.
Persons without any labeled transition are counted in ``stats["unlabeled_persons"]`` and, with
``keep_unlabeled=True``, yield one unlabeled example (for inference).

Every malformed row raises a ``ValueError`` naming the file, the line number and the field.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dspy
from pydantic import ValidationError

from careers.history import ONET_CODE, CareerHistory, Education, HistoryValidationError, Job, _format_errors
from careers.onet import OnetTaxonomy
from careers.splits import DEFAULT_FRACTIONS, DatasetSplits, check_fractions

logger = logging.getLogger(__name__)


def _entry_errors(exc: ValidationError) -> str:
    """Field errors of one job/education entry; entry-level checks (year order) are reported on end_year."""
    return "; ".join("end_year: " + part[len("history: "):] if part.startswith("history: ") else part
                     for part in _format_errors(exc).split("; "))

def _short(value, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters so an error never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


CSV_COLUMNS = ("person_id", "kind", "title", "level", "employer", "field", "institution", "start_year", "end_year",
               "onet_code")
CSV_REQUIRED = ("person_id", "kind")
JOB_FIELDS = ("title", "employer", "start_year", "end_year", "onet_code")
EDU_FIELDS = ("level", "field", "institution", "start_year", "end_year")


class _Gold:
    """Resolves gold labels to O*NET codes, loading the taxonomy only when a title must be normalized."""

    def __init__(self, taxonomy: OnetTaxonomy | None, data_dir: Any, on_unmatched: str):
        if on_unmatched not in ("skip", "error"):
            raise ValueError(f"on_unmatched must be 'skip' or 'error', got {on_unmatched!r}")
        self._tax = taxonomy
        self._data_dir = data_dir
        self.on_unmatched = on_unmatched
        self.skipped = 0

    @property
    def taxonomy(self) -> OnetTaxonomy:
        if self._tax is None:
            try:
                self._tax = OnetTaxonomy.load(self._data_dir)
            except (FileNotFoundError, ValueError) as exc:
                raise ValueError(f"a gold job has no onet_code, so its title must be normalized with the O*NET "
                                 f"taxonomy, which could not be loaded: {exc}") from exc
        return self._tax

    def resolve(self, job: Job, where: str, field: str) -> tuple[str, list[str], str] | None:
        """(representative code, gold codes, official title) of a gold job, or None when skipped."""
        codes = list(job.codes)
        unknown = [c for c in codes if self._tax is not None and c not in self._tax.occupations]
        if unknown:
            raise ValueError(f"{where}: {field}.onet_code: {unknown[0]!r} is not an O*NET-SOC 2019 occupation code")
        if not codes:
            match = self.taxonomy.normalize(job.title)
            if not match.matched:
                if self.on_unmatched == "error":
                    raise ValueError(f"{where}: {field}: title {job.title!r} matches no O*NET occupation; "
                                     "give onet_code or use on_unmatched='skip'")
                self.skipped += 1
                logger.info("%s: %s %r matches no O*NET occupation; transition skipped", where, field, job.title)
                return None
            codes = [match.code]
        title = None
        tax = self._tax
        if tax is not None and codes[0] in tax.occupations:
            title = tax.title(codes[0])
        return codes[0], codes, title or job.title


def _examples(history: CareerHistory, final: Job | None, final_field: str, gold: _Gold, where: str,
              min_history_jobs: int, keep_unlabeled: bool, stats: dict[str, int]) -> list[dspy.Example]:
    out = []
    targets = [(i, history.jobs[i], f"jobs[{i}]") for i in range(max(1, min_history_jobs), len(history.jobs))]
    if final is not None and len(history.jobs) >= min_history_jobs:
        targets.append((len(history.jobs), final, final_field))
    for i, job, field in targets:
        resolved = gold.resolve(job, where, field)
        if resolved is None:
            continue
        code, codes, title = resolved
        prefix = history.prefix(i) if i < len(history.jobs) else history
        ex = prefix.to_example(job, occupation=title, gold_codes=codes)
        ex["onet_code"] = code
        out.append(ex)
    if not out:
        stats["unlabeled_persons"] += 1
        if keep_unlabeled:
            out.append(history.to_example())
    return out


def _job_from(value: Any, where: str, field: str) -> Job:
    if isinstance(value, str):
        text = value.strip()
        data = {"title": text, "onet_code": text} if ONET_CODE.match(text) else {"title": text}
    elif isinstance(value, dict):
        data = value
    else:
        raise ValueError(f"{where}: {field} must be a job object or a string, got {type(value).__name__}")
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{where}: {field}.{_entry_errors(exc)}") from None


def _read_jsonl(path: Path) -> Iterable[tuple[str, CareerHistory, Job | None, str]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{where}: not valid UTF-8 text (byte {exc.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            except (ValueError, RecursionError) as exc:  # e.g. integers over 4300 digits, nesting too deep
                raise ValueError(f"{where}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
            if not isinstance(data, dict):
                raise ValueError(f"{where}: each line must be a JSON object, got {type(data).__name__}")
            if "next" in data and "target" in data:
                raise ValueError(f"{where}: give either 'next' or 'target', not both")
            final, final_field = None, "next"
            for key in ("next", "target"):
                if key in data:
                    value = data.pop(key)
                    if value is not None:
                        final, final_field = _job_from(value, where, key), key
            history = CareerHistory.from_dict(data, record=where)
            yield where, history, final, final_field


def _cell(row: dict[str, str | None], key: str) -> str | None:
    value = row.get(key)
    value = value.strip() if isinstance(value, str) else value
    return value or None


def _csv_rows(reader: csv.DictReader, path: Path) -> Iterable[dict[str, str | None]]:
    """The reader's rows; a csv.Error (NUL bytes, a field over the size limit) becomes a ValueError naming the line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV row ({exc})") from None
        yield row


def _read_csv(path: Path) -> Iterable[tuple[str, CareerHistory, Job | None, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in CSV_REQUIRED if c not in header]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; the CSV needs a header with {list(CSV_REQUIRED)} "
                             f"and optional {list(CSV_COLUMNS[2:])}, found {header}")
        unknown = [c for c in header if c not in CSV_COLUMNS]
        if unknown:
            raise ValueError(f"{path}: unknown columns {unknown}; allowed: {list(CSV_COLUMNS)}")
        persons: dict[str, dict[str, Any]] = {}
        for row in _csv_rows(reader, path):
            lineno = reader.line_num
            where = f"{path}:{lineno}"
            if None in row:
                raise ValueError(f"{where}: more cells than header columns")
            pid = _cell(row, "person_id")
            if pid is None:
                raise ValueError(f"{where}: person_id is required")
            kind = (_cell(row, "kind") or "").lower()
            entry = persons.setdefault(pid, {"line": lineno, "jobs": [], "education": [], "next": None})
            try:
                if kind in ("job", "next"):
                    job = Job.model_validate({k: _cell(row, k) for k in JOB_FIELDS})
                    if kind == "job":
                        entry["jobs"].append(job)
                    elif entry["next"] is not None:
                        raise ValueError(f"{where}: kind: person {_short(pid)} has more than one 'next' row")
                    else:
                        entry["next"] = job
                elif kind == "education":
                    entry["education"].append(Education.model_validate({k: _cell(row, k) for k in EDU_FIELDS}))
                else:
                    raise ValueError(f"{where}: kind must be 'job', 'education' or 'next', got {_short(row.get('kind'))}")
            except ValidationError as exc:
                raise ValueError(f"{where}: {_entry_errors(exc)}") from None
    for pid, entry in persons.items():
        where = f"{path}:{entry['line']}"
        history = CareerHistory.from_dict({"person_id": pid, "jobs": entry["jobs"], "education": entry["education"]},
                                          record=f"{where} (person {pid})")
        yield where, history, entry["next"], "next"


def read_user_histories(path: str | os.PathLike, fmt: str | None = None
                        ) -> list[tuple[str, CareerHistory, Job | None, str]]:
    """Parses a user file into ``(record, history, next_job_or_None, label_field)`` tuples.

    Args:
        path: The file.
        fmt: ``"jsonl"`` or ``"csv"``; None decides by extension (.jsonl/.json/.ndjson or .csv).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"User data file {p} does not exist.")
    if fmt is None:
        suffix = p.suffix.lower()
        fmt = "jsonl" if suffix in (".jsonl", ".json", ".ndjson") else "csv" if suffix == ".csv" else suffix
    if fmt == "jsonl":
        return list(_read_jsonl(p))
    if fmt == "csv":
        try:
            return list(_read_csv(p))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{p}: not valid UTF-8 text (byte offset {exc.start} of the file)") from None
        except csv.Error as exc:  # e.g. in the header row
            raise ValueError(f"{p}: malformed CSV ({exc})") from None
    raise ValueError(f"{p}: unknown format {fmt!r}; use .jsonl (one history per line) or .csv (long format)")


def load_user_data(
    path: str | os.PathLike,
    taxonomy: OnetTaxonomy | None = None,
    seed: int = 0,
    *,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    data_dir: str | os.PathLike | None = None,
    min_history_jobs: int = 1,
    on_unmatched: str = "skip",
    keep_unlabeled: bool = False,
    fmt: str | None = None,
) -> DatasetSplits:
    """Loads user histories from JSONL or CSV (module doc) into examples split by person.

    Args:
        path: A ``.jsonl`` or ``.csv`` file.
        taxonomy: Used to normalize gold titles without code; loaded from ``data_dir`` when needed.
        seed: Split seed.
        fractions: Train/dev/test shares of persons.
        data_dir: Data directory for the taxonomy when ``taxonomy`` is None.
        min_history_jobs: Fewest jobs before a transition for it to become an example.
        on_unmatched: ``"skip"`` (count) or ``"error"`` for gold titles that match no O*NET occupation.
        keep_unlabeled: Give persons without any labeled transition one unlabeled example.
        fmt: ``"jsonl"`` or ``"csv"``; None decides by the file extension.

    Raises:
        ValueError: A malformed row (message: ``path:line: field: problem``) or an unmatched gold with
            ``on_unmatched="error"``.
    """
    fr = check_fractions(fractions)
    gold = _Gold(taxonomy, data_dir, on_unmatched)
    stats = {"persons": 0, "transitions": 0, "unlabeled_persons": 0, "skipped_unmatched": 0}
    examples: list[dspy.Example] = []
    seen: dict[str, str] = {}
    try:
        records = read_user_histories(path, fmt)
    except HistoryValidationError as exc:
        raise ValueError(str(exc)) from None
    for where, history, final, final_field in records:
        if history.person_id in seen:
            raise ValueError(f"{where}: person_id {_short(history.person_id)} already used at {seen[history.person_id]}")
        seen[history.person_id] = where
        stats["persons"] += 1
        examples.extend(_examples(history, final, final_field, gold, where, min_history_jobs, keep_unlabeled, stats))
    stats["skipped_unmatched"] = gold.skipped
    stats["transitions"] = sum(1 for ex in examples if ex.get("gold_codes"))
    if gold.skipped:
        logger.warning("%s: skipped %d gold jobs that match no O*NET occupation", path, gold.skipped)
    return DatasetSplits.from_examples(examples, seed=seed, fractions=fr, name=f"user:{Path(path).name}",
                                       stats=stats)
