"""NLSY79 career sequences as next-occupation examples, with O*NET candidate sets as gold.

Reads ``<data_dir>/nlsy79/nlsy79_person_year_occ1980.csv.gz`` (one row per person and survey year) and
``<data_dir>/nlsy79/occ1980_to_onetsoc2019_candidates.csv`` (1980 Census code -> O*NET-SOC 2019 codes).

Construction, per person:

* rows are sorted by survey year and rows without an occupation code are dropped;
* consecutive rows with the same 1980 Census code are merged into one *spell* (start = first survey
  year, end = last survey year of the run; a gap of missing years inside a run does not split it);
* a job is rendered with the ``occ_title`` column, which holds the IPUMS OCC1990 harmonised title of
  the 1980 code (it equals ``occ1990_title`` of the crosswalk); codes without a title are rendered as
  ``"1980 Census occupation <code>"``. ``Job.age`` is ``age_at_survey_year`` at the spell start,
  ``Job.source_code`` is ``"occ1980:<code>"`` and ``Job.onet_candidates`` the O*NET candidates;
* education is one entry derived from ``hgc`` (highest grade completed) known at the end of the last
  history spell (the maximum reported up to that survey year; when none is reported by then, the first
  later report): <12 less than high school, 12 high school diploma, 13-15 some college, 16 bachelor's
  degree, 17 some graduate school, 18+ graduate degree;
* one example per transition: the history is the spells before spell ``i`` (at least
  ``min_history_jobs``), the gold is spell ``i``. ``gold_codes`` are the O*NET-SOC 2019 candidates of its
  1980 code (crosswalk order, duplicates removed); ``onet_code`` is the *first* candidate (the
  documented representative) and ``occupation`` its official O*NET title. Transitions whose gold code
  has no O*NET candidate are skipped and counted (``stats["skipped_no_candidates"]``).

Sex, race/ethnicity and birth year enter the history (and the prompt) only with
``include_demographics=True``.

Attribution: Bureau of Labor Statistics, U.S. Department of Labor. National Longitudinal Survey of
Youth 1979 cohort, 1979-2014 (rounds 1-26). Produced and distributed by the Center for Human Resource
Research (CHRR), The Ohio State University. The OCC1990 step uses the IPUMS USA occupation crosswalk.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from careers.data_dir import data_file, resolve_data_dir
from careers.history import CareerHistory, Education, Job
from careers.splits import DEFAULT_FRACTIONS, DatasetSplits, check_fractions

logger = logging.getLogger(__name__)

PANEL_FILE = "nlsy79/nlsy79_person_year_occ1980.csv.gz"
CROSSWALK_FILE = "nlsy79/occ1980_to_onetsoc2019_candidates.csv"
PANEL_COLUMNS = ("person_id", "survey_year", "age_at_survey_year", "birth_year", "sex", "race_cohort", "hgc",
                 "occ1980", "occ_title")
CROSSWALK_COLUMNS = ("occ1980", "onetsoc2019", "onetsoc2019_title")
SEX = {1: "male", 2: "female"}
RACE = {1: "Hispanic", 2: "Black", 3: "non-Black, non-Hispanic"}


def education_level(hgc: float | int) -> str:
    """The education level of an NLSY79 highest-grade-completed value."""
    g = int(hgc)
    if g < 12:
        return "Less than high school"
    if g == 12:
        return "High school diploma"
    if g <= 15:
        return "Some college"
    if g == 16:
        return "Bachelor's degree"
    if g == 17:
        return "Some graduate school"
    return "Graduate degree"


@dataclass(frozen=True)
class Spell:
    """A run of survey years with the same 1980 Census occupation."""

    code: int
    title: str
    start_year: int
    end_year: int
    age: int | None


@dataclass(frozen=True)
class PersonRecord:
    """The parsed panel of one person."""

    person_id: str
    spells: tuple[Spell, ...]
    hgc_years: tuple[int, ...]  # survey years with a known hgc, ascending
    hgc_values: tuple[int, ...]  # running maximum of hgc at those years
    demographics: tuple[tuple[str, str | int], ...]


@dataclass(frozen=True)
class Nlsy79Panel:
    """The parsed NLSY79 panel and crosswalk (cached per data directory)."""

    persons: tuple[PersonRecord, ...]
    candidates: dict[int, tuple[str, ...]]
    onet_titles: dict[str, str]
    n_rows: int


def _require(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; found {list(df.columns)}. "
                         "Expected the NLSY79 files described in the data README.")


def _read_crosswalk(path: Path) -> tuple[dict[int, tuple[str, ...]], dict[str, str]]:
    cw = pd.read_csv(path, dtype={"onetsoc2019": "string", "onetsoc2019_title": "string"})
    _require(cw, CROSSWALK_COLUMNS, path)
    codes = pd.to_numeric(cw["occ1980"], errors="coerce")
    if codes.isna().any():
        line = int(np.flatnonzero(codes.isna().to_numpy())[0]) + 2
        raise ValueError(f"{path}: line {line}: occ1980 is not an integer code ({cw['occ1980'].iloc[line - 2]!r}).")
    cw = cw.assign(occ1980=codes.astype(int)).dropna(subset=["onetsoc2019"])
    cands: dict[int, tuple[str, ...]] = {}
    for code, group in cw.groupby("occ1980", sort=False)["onetsoc2019"]:
        cands[int(code)] = tuple(dict.fromkeys(s.strip() for s in group))
    titles = dict(zip(cw["onetsoc2019"].str.strip(), cw["onetsoc2019_title"].fillna("").str.strip(), strict=True))
    return cands, titles


@functools.lru_cache(maxsize=4)
def _parse(root: str) -> Nlsy79Panel:
    panel_path = data_file(root, PANEL_FILE)
    cands, titles = _read_crosswalk(data_file(root, CROSSWALK_FILE))
    df = pd.read_csv(panel_path, dtype={"occ_title": "string"})
    _require(df, PANEL_COLUMNS, panel_path)
    for col in ("person_id", "survey_year", "age_at_survey_year"):
        bad = pd.to_numeric(df[col], errors="coerce").isna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise ValueError(f"{panel_path}: line {line}: {col} must be an integer, got {df[col].iloc[line - 2]!r}.")
    occ = pd.to_numeric(df["occ1980"], errors="coerce")
    hgc = pd.to_numeric(df["hgc"], errors="coerce")
    df = df.assign(occ1980=occ, hgc=hgc).sort_values(["person_id", "survey_year"], kind="stable")

    pid = df["person_id"].to_numpy()
    year = df["survey_year"].to_numpy().astype(int)
    age = df["age_at_survey_year"].to_numpy().astype(int)
    occv = df["occ1980"].to_numpy(dtype=float)
    hgcv = df["hgc"].to_numpy(dtype=float)
    title = df["occ_title"].fillna("").to_numpy(dtype=object)
    sex = df["sex"].to_numpy()
    race = df["race_cohort"].to_numpy()
    birth = df["birth_year"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1], True])

    persons = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx = np.arange(a, b)
        has = idx[~np.isnan(occv[idx])]
        if len(has) == 0:
            continue
        codes = occv[has].astype(int)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], len(codes)] - 1
        spells = []
        for s, e in zip(starts, ends, strict=True):
            code = int(codes[s])
            t = str(title[has[s]]).strip() or f"1980 Census occupation {code}"
            a_ = int(age[has[s]])
            spells.append(Spell(code, t, int(year[has[s]]), int(year[has[e]]), a_ if 10 <= a_ <= 100 else None))
        known = idx[~np.isnan(hgcv[idx])]
        demo = []
        if sex[a] in SEX:
            demo.append(("sex", SEX[sex[a]]))
        if race[a] in RACE:
            demo.append(("race_ethnicity", RACE[race[a]]))
        if not pd.isna(birth[a]):
            demo.append(("birth_year", int(birth[a])))
        persons.append(PersonRecord(
            person_id=str(int(pid[a])),
            spells=tuple(spells),
            hgc_years=tuple(int(y) for y in year[known]),
            hgc_values=tuple(int(v) for v in np.maximum.accumulate(hgcv[known])) if len(known) else (),
            demographics=tuple(demo),
        ))
    return Nlsy79Panel(tuple(persons), cands, titles, len(df))


def _hgc_at(person: PersonRecord, year: int) -> int | None:
    if not person.hgc_years:
        return None
    pos = int(np.searchsorted(person.hgc_years, year, side="right")) - 1
    return person.hgc_values[max(pos, 0)]


def load_nlsy79(
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    include_demographics: bool = False,
    min_history_jobs: int = 1,
    max_persons: int | None = None,
) -> DatasetSplits:
    """Loads NLSY79 next-occupation examples split by person.

    Args:
        data_dir: Data directory holding ``nlsy79/`` (see :mod:`careers.data_dir`).
        seed: Split seed (:func:`careers.splits.person_split`).
        fractions: Train/dev/test shares of persons.
        include_demographics: Put sex, race/ethnicity and birth year into the history and prompt.
        min_history_jobs: Fewest spells before a transition for it to become an example (>= 1).
        max_persons: Keep only the first persons by id (for quick runs); None keeps all.

    Returns:
        :class:`DatasetSplits` named ``"nlsy79"``; its ``stats`` hold the counts. Each example has the
        fields of :meth:`CareerHistory.to_example` plus ``source_code`` (``occ1980:<code>`` of the gold)
        and ``year`` (the gold spell's first survey year).

    Raises:
        FileNotFoundError: A data file is missing. ValueError: a file lacks columns or holds bad values.
    """
    fr = check_fractions(fractions)
    if min_history_jobs < 1:
        raise ValueError(f"min_history_jobs must be >= 1, got {min_history_jobs}")
    if max_persons is not None and max_persons < 1:
        raise ValueError(f"max_persons must be positive or None, got {max_persons}")
    t0 = time.perf_counter()
    panel = _parse(str(resolve_data_dir(data_dir).resolve()))
    persons = panel.persons[:max_persons] if max_persons else panel.persons
    examples = []
    skipped = 0
    levels: dict[int, tuple[Education, ...]] = {}
    for person in persons:
        jobs = [Job(title=s.title, start_year=s.start_year, end_year=s.end_year, age=s.age,
                    source_code=f"occ1980:{s.code}", onet_candidates=panel.candidates.get(s.code, ()))
                for s in person.spells]
        demo = dict(person.demographics) if include_demographics and person.demographics else None
        for i in range(min_history_jobs, len(jobs)):
            gold = panel.candidates.get(person.spells[i].code, ())
            if not gold:
                skipped += 1
                continue
            hgc = _hgc_at(person, person.spells[i - 1].end_year)
            if hgc is not None and hgc not in levels:
                levels[hgc] = (Education(level=education_level(hgc)),)
            edu = levels[hgc] if hgc is not None else ()
            history = CareerHistory(person_id=person.person_id, jobs=tuple(jobs[:i]), education=edu,
                                    demographics=demo)
            ex = history.to_example(jobs[i], occupation=panel.onet_titles.get(gold[0]) or gold[0],
                                    gold_codes=list(gold), include_demographics=include_demographics)
            ex["source_code"] = jobs[i].source_code
            ex["year"] = person.spells[i].start_year
            examples.append(ex)
    if skipped:
        logger.info("NLSY79: skipped %d transitions whose gold 1980 code has no O*NET candidate", skipped)
    stats = {
        "rows": panel.n_rows,
        "persons_with_occupation": len(persons),
        "persons_with_examples": len({ex.person_id for ex in examples}),
        "spells": sum(len(p.spells) for p in persons),
        "transitions": len(examples),
        "skipped_no_candidates": skipped,
        "load_seconds": round(time.perf_counter() - t0, 2),
    }
    return DatasetSplits.from_examples(examples, seed=seed, fractions=fr, name="nlsy79", stats=stats)
