"""Loaders for public ESCO-coded career datasets, mapped to O*NET-SOC 2019 candidate sets.

The user supplies a local copy of the dataset (CSV, CSV.GZ or JSONL; parquet is not read: convert it
with ``pandas.read_parquet(...).to_csv(...)``). ESCO occupations are mapped to O*NET-SOC 2019 through
``<data_dir>/esco/esco111_to_onetsoc2019_via_nesta.csv`` (an unvalidated convenience join, see the data
README); an ESCO occupation with several O*NET codes yields all of them as ``Job.onet_candidates``
and as the example's ``gold_codes`` (the first is the representative ``onet_code``).

Formats (column names as published; the assumptions are marked):

* **JobHop** (``aida-ugent/JobHop``, formerly ``jensjorisdecorte/JobHop``; long format, one row per
  experience): ``resume_id`` (or ``person_id``), ``matched_code`` (ESCO code such as ``2512.2``;
  ``unknown`` when unclassified), optional ``matched_label``, ``start_date``/``end_date`` as ``"Q3 1996"``
  (any text holding a year works; ``null``/empty when unknown), optional ``university_level``
  (e.g. ``Bachelor``, ``Master``) which becomes the education entry.
* **Karrierewege** (Senger et al. 2024; long format, one row per experience). *Assumed* columns, the
  first present of each list is used, and ``columns=`` overrides them: person
  ``person_id``/``_id``/``id``/``cv_id``; ESCO URI ``esco_uri``/``ESCO_uri``/``conceptUri``/``uri``;
  label ``esco_label``/``preferredLabel_en``/``preferredLabel``/``ESCO_title``; optional free-text title
  ``job_title``/``title``; order ``experience_order``/``order``; dates ``start_date``/``end_date``.
* **Decorte et al.** anonymous working histories (``TechWolf/anonymous-working-histories``; wide
  format, one row per person): ``identifier`` (else the row number), and per experience ``i = 0, 1, ...``
  ``title_i``, ``description_i``, ``start_i``, ``end_i``, ``ESCO_uri_i``, ``ESCO_title_i``. The free-text
  ``title_i`` is shown in the history (the ESCO title when it is empty).

Per person, experiences are ordered by start year (ties and undated ones keep file order; when some
experiences are dated, undated ones are dropped and counted as ``dropped_undated``), then each
experience after the first ``min_history_jobs`` becomes the gold of those before it. Experiences whose
ESCO occupation is unknown or has no O*NET code stay in histories (rendered with their label) but are
skipped as gold and counted (``stats["skipped_unmapped"]``); experiences with neither an ESCO match nor
a title are dropped (``dropped_unknown``).
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy
from pydantic import ValidationError

from careers.data_dir import data_file, resolve_data_dir
from careers.history import CareerHistory, Education, Job, _format_errors
from careers.splits import DEFAULT_FRACTIONS, DatasetSplits, check_fractions

logger = logging.getLogger(__name__)


def _entry_errors(exc: ValidationError) -> str:
    """Field errors of one job/education entry; entry-level checks (year order) are reported on end_year."""
    return "; ".join("end_year: " + part[len("history: "):] if part.startswith("history: ") else part
                     for part in _format_errors(exc).split("; "))

CROSSWALK_FILE = "esco/esco111_to_onetsoc2019_via_nesta.csv"
CROSSWALK_COLUMNS = ("esco_uri", "esco_code", "esco_label", "onet_soc_2019", "onet_soc_2019_titles")
_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")
_NO_VALUE = {"", "null", "none", "nan", "na", "n/a", "unknown", "present", "current", "now", "ongoing", "today"}

KARRIEREWEGE_COLUMNS = {
    "person": ("person_id", "_id", "id", "cv_id", "resume_id"),
    "uri": ("esco_uri", "ESCO_uri", "conceptUri", "uri", "occupation_uri"),
    "code": ("esco_code", "matched_code"),
    "label": ("esco_label", "preferredLabel_en", "preferredLabel", "ESCO_title", "matched_label"),
    "title": ("job_title", "title"),
    "order": ("experience_order", "order", "position"),
    "start": ("start_date", "start", "from"),
    "end": ("end_date", "end", "to"),
    "education": ("university_level", "education_level"),
}
JOBHOP_COLUMNS = {
    "person": ("resume_id", "person_id"),
    "code": ("matched_code",),
    "label": ("matched_label",),
    "start": ("start_date",),
    "end": ("end_date",),
    "education": ("university_level",),
}


@dataclass(frozen=True)
class EscoOccupation:
    """One ESCO occupation and its O*NET-SOC 2019 candidates (empty when unmapped)."""

    uri: str
    code: str
    label: str
    onet_codes: tuple[str, ...]
    onet_titles: tuple[str, ...]


class EscoCrosswalk:
    """ESCO v1.1.1 -> O*NET-SOC 2019 lookups by URI, ESCO code or preferred label."""

    def __init__(self, occupations: Iterable[EscoOccupation]):
        self.occupations = tuple(occupations)
        self.by_uri = {_uri_key(o.uri): o for o in self.occupations if o.uri}
        self.by_code = {o.code: o for o in self.occupations if o.code}
        self.by_label = {o.label.lower(): o for o in self.occupations if o.label}

    @classmethod
    def load(cls, data_dir: str | os.PathLike | None = None) -> EscoCrosswalk:
        """Reads ``<data_dir>/esco/esco111_to_onetsoc2019_via_nesta.csv`` (cached per directory)."""
        return _load_crosswalk(str(resolve_data_dir(data_dir).resolve()))

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> EscoCrosswalk:
        """Reads a crosswalk file with the columns of the data mirror's ESCO join."""
        path = Path(path)
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CROSSWALK_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing columns {missing}; found {reader.fieldnames}")
            occs = []
            for row in reader:
                codes = tuple(c.strip() for c in (row["onet_soc_2019"] or "").split("|") if c.strip())
                titles = tuple(t.strip() for t in (row["onet_soc_2019_titles"] or "").split("|") if t.strip())
                if len(titles) != len(codes):
                    titles = codes
                occs.append(EscoOccupation((row["esco_uri"] or "").strip(), (row["esco_code"] or "").strip(),
                                           (row["esco_label"] or "").strip(), codes, titles))
        return cls(occs)

    def lookup(self, *, uri: str | None = None, code: str | None = None, label: str | None = None
               ) -> EscoOccupation | None:
        """The occupation with this URI, else this ESCO code, else this preferred label; None if none."""
        if uri and (occ := self.by_uri.get(_uri_key(uri))):
            return occ
        if code and (occ := self.by_code.get(code.strip())):
            return occ
        if label and (occ := self.by_label.get(label.strip().lower())):
            return occ
        return None


def _uri_key(uri: str) -> str:
    return uri.strip().rstrip("/").removeprefix("https://").removeprefix("http://")


@functools.lru_cache(maxsize=4)
def _load_crosswalk(root: str) -> EscoCrosswalk:
    return EscoCrosswalk.from_csv(data_file(root, CROSSWALK_FILE))


def parse_year(value: Any, where: str, field: str) -> int | None:
    """A year from ``2015``, ``"Q3 1996"``, ``"2015-03-01"``, ``"March 2015"``; None for empty/ongoing.

    Raises:
        ValueError: ``"<where>: <field>: ..."`` when the text holds no year.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in _NO_VALUE:
        return None
    m = _YEAR.search(text)
    if not m:
        raise ValueError(f"{where}: {field}: cannot read a year from {value!r}")
    return int(m.group(1))


# ---------------------------------------------------------------------- reading files
def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _rows(path: str | os.PathLike) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """(columns, iterator of (line number, row dict)) of a CSV, CSV.GZ or JSONL file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Dataset file {p} does not exist.")
    name = p.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        fh = _open_text(p)
        first: list[tuple[int, dict[str, Any]]] = []
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{p}:{lineno}: each line must be a JSON object")
                first.append((lineno, obj))
                break
        columns = list(first[0][1]) if first else []

        def more() -> Iterator[tuple[int, dict[str, Any]]]:
            yield from first
            with fh:
                for lineno, line in enumerate(fh, first[0][0] + 1 if first else 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
                    if not isinstance(obj, dict):
                        raise ValueError(f"{p}:{lineno}: each line must be a JSON object")
                    yield lineno, obj

        return columns, more()
    if name.endswith(".csv"):
        fh = _open_text(p)
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])

        def rows() -> Iterator[tuple[int, dict[str, Any]]]:
            with fh:
                for row in reader:
                    if None in row:
                        raise ValueError(f"{p}:{reader.line_num}: more cells than header columns")
                    yield reader.line_num, row

        return columns, rows()
    raise ValueError(f"{p}: unsupported format; use .csv, .csv.gz or .jsonl (convert parquet with pandas)")


def _pick(columns: list[str], options: tuple[str, ...]) -> str | None:
    return next((c for c in options if c in columns), None)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return None if text.lower() in ("", "null", "none", "nan") else text


# ---------------------------------------------------------------------- examples
@dataclass
class _Experience:
    where: str
    order: float
    title: str | None
    occ: EscoOccupation | None
    raw_code: str | None
    start: int | None
    end: int | None


def _to_examples(name: str, persons: dict[str, dict[str, Any]], *, seed: int, fractions: Iterable[float],
                 min_history_jobs: int, stats: dict[str, int]) -> DatasetSplits:
    examples: list[dspy.Example] = []
    for pid, entry in persons.items():
        exps: list[_Experience] = entry["experiences"]
        if any(e.start is not None for e in exps):
            undated = sum(1 for e in exps if e.start is None)
            stats["dropped_undated"] += undated
            exps = [e for e in exps if e.start is not None]
        exps = sorted(exps, key=lambda e: (e.start if e.start is not None else 0, e.order))
        jobs: list[Job] = []
        occs: list[EscoOccupation | None] = []
        for e in exps:
            title = e.title or (e.occ.label if e.occ else None)
            if not title:
                stats["dropped_unknown"] += 1
                continue
            codes = e.occ.onet_codes if e.occ else ()
            code = e.occ.code if e.occ else e.raw_code
            try:
                jobs.append(Job.model_validate({
                    "title": title, "start_year": e.start, "end_year": e.end,
                    "onet_code": codes[0] if len(codes) == 1 else None,
                    "onet_candidates": codes, "source_code": f"esco:{code}" if code else None}))
            except ValidationError as exc:
                raise ValueError(f"{e.where}: {_entry_errors(exc)}") from None
            occs.append(e.occ)
        if not jobs:
            continue
        stats["persons"] += 1
        edu = (Education(level=entry["education"]),) if entry.get("education") else ()
        try:
            history = CareerHistory(person_id=pid, jobs=tuple(jobs), education=edu)
        except ValidationError as exc:
            raise ValueError(f"{name} person {pid}: {_format_errors(exc)}") from None
        for i in range(max(1, min_history_jobs), len(jobs)):
            target = jobs[i]
            if not target.onet_candidates:
                stats["skipped_unmapped"] += 1
                continue
            occ = occs[i]
            title = occ.onet_titles[0] if occ and occ.onet_titles else target.onet_candidates[0]
            ex = history.prefix(i).to_example(target, occupation=title, gold_codes=list(target.onet_candidates))
            ex["source_code"] = target.source_code
            examples.append(ex)
    stats["transitions"] = len(examples)
    if stats["skipped_unmapped"]:
        logger.info("%s: skipped %d transitions whose ESCO occupation has no O*NET code", name,
                    stats["skipped_unmapped"])
    return DatasetSplits.from_examples(examples, seed=seed, fractions=fractions, name=name, stats=stats)


def _new_stats() -> dict[str, int]:
    return {"rows": 0, "persons": 0, "transitions": 0, "unmapped_experiences": 0, "skipped_unmapped": 0,
            "dropped_undated": 0, "dropped_unknown": 0}


def _load_long(name: str, path: str | os.PathLike, defaults: dict[str, tuple[str, ...]],
               columns: dict[str, str] | None, crosswalk: EscoCrosswalk, *, seed: int, fractions: Iterable[float],
               min_history_jobs: int, max_persons: int | None) -> DatasetSplits:
    fr = check_fractions(fractions)
    header, rows = _rows(path)
    col: dict[str, str | None] = {k: _pick(header, v) for k, v in defaults.items()}
    for key, value in (columns or {}).items():
        if key not in defaults:
            raise ValueError(f"columns: unknown key {key!r}; allowed {sorted(defaults)}")
        if value not in header:
            raise ValueError(f"{path}: column {value!r} (given for {key}) is not in the file; found {header}")
        col[key] = value
    if col["person"] is None:
        raise ValueError(f"{path}: missing the person column (one of {list(defaults['person'])}); found {header}")
    occ_cols = [k for k in ("uri", "code", "label") if col.get(k)]
    if not occ_cols:
        wanted = [c for k in ("uri", "code", "label") for c in defaults.get(k, ())]
        raise ValueError(f"{path}: missing the ESCO occupation column (one of {wanted}); found {header}")
    stats = _new_stats()
    persons: dict[str, dict[str, Any]] = {}
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        stats["rows"] += 1
        pid = _text(row.get(col["person"]))
        if pid is None:
            raise ValueError(f"{where}: {col['person']}: person id is empty")
        if pid not in persons:
            if max_persons is not None and len(persons) >= max_persons:
                continue
            persons[pid] = {"experiences": [], "education": None}
        entry = persons[pid]
        uri = _text(row.get(col["uri"])) if col.get("uri") else None
        code = _text(row.get(col["code"])) if col.get("code") else None
        label = _text(row.get(col["label"])) if col.get("label") else None
        occ = crosswalk.lookup(uri=uri, code=code, label=label)
        if occ is None or not occ.onet_codes:
            stats["unmapped_experiences"] += 1
        order = len(entry["experiences"])
        if col.get("order"):
            raw = _text(row.get(col["order"]))
            try:
                order = float(raw) if raw is not None else order
            except ValueError:
                raise ValueError(f"{where}: {col['order']}: not a number ({raw!r})") from None
        start = parse_year(row.get(col["start"]), where, col["start"]) if col.get("start") else None
        end = parse_year(row.get(col["end"]), where, col["end"]) if col.get("end") else None
        title = (_text(row.get(col["title"])) if col.get("title") else None) or label
        entry["experiences"].append(_Experience(where, order, title, occ, code or uri, start, end))
        if col.get("education") and not entry["education"]:
            entry["education"] = _text(row.get(col["education"]))
    if stats["rows"] == 0:
        raise ValueError(f"{path}: no data rows")
    return _to_examples(name, persons, seed=seed, fractions=fr, min_history_jobs=min_history_jobs, stats=stats)


def load_jobhop(path: str | os.PathLike, data_dir: str | os.PathLike | None = None, seed: int = 0, *,
                fractions: Iterable[float] = DEFAULT_FRACTIONS, min_history_jobs: int = 1,
                max_persons: int | None = None, columns: dict[str, str] | None = None,
                crosswalk: EscoCrosswalk | None = None) -> DatasetSplits:
    """Loads a local JobHop file (module doc) into examples split by person."""
    return _load_long("jobhop", path, JOBHOP_COLUMNS, columns, crosswalk or EscoCrosswalk.load(data_dir), seed=seed,
                      fractions=fractions, min_history_jobs=min_history_jobs, max_persons=max_persons)


def load_karrierewege(path: str | os.PathLike, data_dir: str | os.PathLike | None = None, seed: int = 0, *,
                      fractions: Iterable[float] = DEFAULT_FRACTIONS, min_history_jobs: int = 1,
                      max_persons: int | None = None, columns: dict[str, str] | None = None,
                      crosswalk: EscoCrosswalk | None = None) -> DatasetSplits:
    """Loads a local Karrierewege file (long format, assumed columns in the module doc; ``columns`` overrides)."""
    return _load_long("karrierewege", path, KARRIEREWEGE_COLUMNS, columns,
                      crosswalk or EscoCrosswalk.load(data_dir), seed=seed, fractions=fractions,
                      min_history_jobs=min_history_jobs, max_persons=max_persons)


_WIDE = re.compile(r"^(title|description|start|end|ESCO_uri|ESCO_title)_(\d+)$")


def load_decorte(path: str | os.PathLike, data_dir: str | os.PathLike | None = None, seed: int = 0, *,
                 fractions: Iterable[float] = DEFAULT_FRACTIONS, min_history_jobs: int = 1,
                 max_persons: int | None = None, crosswalk: EscoCrosswalk | None = None) -> DatasetSplits:
    """Loads the Decorte et al. anonymous working histories (wide format, module doc) split by person."""
    fr = check_fractions(fractions)
    cw = crosswalk or EscoCrosswalk.load(data_dir)
    header, rows = _rows(path)
    slots = sorted({int(m.group(2)) for c in header if (m := _WIDE.match(c))})
    if not slots or not any(f"ESCO_uri_{i}" in header or f"ESCO_title_{i}" in header for i in slots):
        raise ValueError(f"{path}: expected wide columns title_0, start_0, end_0, ESCO_uri_0, ESCO_title_0, ...; "
                         f"found {header}")
    stats = _new_stats()
    persons: dict[str, dict[str, Any]] = {}
    for n, (lineno, row) in enumerate(rows):
        where = f"{path}:{lineno}"
        stats["rows"] += 1
        if max_persons is not None and len(persons) >= max_persons:
            break
        pid = _text(row.get("identifier")) or f"row{n}"
        if pid in persons:
            raise ValueError(f"{where}: identifier {pid!r} appears twice")
        exps = []
        for i in slots:
            uri, label = _text(row.get(f"ESCO_uri_{i}")), _text(row.get(f"ESCO_title_{i}"))
            title = _text(row.get(f"title_{i}"))
            if not (uri or label or title):
                continue
            occ = cw.lookup(uri=uri, label=label)
            if occ is None or not occ.onet_codes:
                stats["unmapped_experiences"] += 1
            exps.append(_Experience(f"{where} (experience {i})", i, title or label, occ, uri,
                                    parse_year(row.get(f"start_{i}"), where, f"start_{i}"),
                                    parse_year(row.get(f"end_{i}"), where, f"end_{i}")))
        persons[pid] = {"experiences": exps, "education": None}
    if stats["rows"] == 0:
        raise ValueError(f"{path}: no data rows")
    return _to_examples("decorte", persons, seed=seed, fractions=fr, min_history_jobs=min_history_jobs, stats=stats)
