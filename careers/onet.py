"""The O*NET-SOC 2019 taxonomy: occupations, related occupations, titles, job zones and SOC groups.

``OnetTaxonomy.load(data_dir)`` reads the O*NET 29.3 text release and the SOC structure from a data
directory (see :mod:`careers.data_dir`) and offers the lookups the rest of the project needs:
the label space (1,016 official titles), ranked Related Occupations (Index 1-20 with tier) for AccRM,
alternate and reported titles for the normalizer and the synthetic generator, Job Zones, required
education distributions and the SOC major/minor/broad hierarchy for group-level accuracy.

This product includes information from the O*NET 29.3 Database by the U.S. Department of Labor,
Employment and Training Administration (USDOL/ETA). Used under the CC BY 4.0 license. O*NET® is a
trademark of USDOL/ETA.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from rapidfuzz import fuzz, process

from careers.data_dir import data_file, resolve_data_dir

logger = logging.getLogger(__name__)

CODE_RE = re.compile(r"^\d{2}-\d{4}\.\d{2}$")
SOC_LEVELS = ("major", "minor", "broad", "detailed")


@dataclass(frozen=True)
class Occupation:
    """One O*NET-SOC 2019 occupation."""

    code: str
    title: str
    description: str = ""
    job_zone: int | None = None


@dataclass(frozen=True)
class Related:
    """One entry of an occupation's ranked Related Occupations list."""

    code: str
    title: str
    index: int
    tier: str


@dataclass(frozen=True)
class Match:
    """The result of normalizing a free-text title to an official O*NET title.

    Attributes:
        code: O*NET-SOC code, or None when nothing is close.
        title: Official O*NET title, or None when nothing is close.
        score: Similarity in [0, 100] (100 for exact and alias matches).
        method: ``"exact"``, ``"alternate"``, ``"reported"``, ``"fuzzy"`` or ``"none"``.
        query: The text that was normalized.
    """

    code: str | None
    title: str | None
    score: float
    method: str
    query: str = ""

    @property
    def matched(self) -> bool:
        """True when the text was mapped to an official title."""
        return self.code is not None


def canonical(text: str) -> str:
    """Canonical key for title comparison: NFKC, lower case, punctuation collapsed to spaces."""
    text = unicodedata.normalize("NFKC", str(text)).lower().replace("&", " and ")
    text = re.sub(r"[^\w]+", " ", text)
    return " ".join(text.split())


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _require_columns(rows: list[dict[str, str]], columns: tuple[str, ...], path: Path) -> None:
    if not rows:
        raise ValueError(f"{path} has no data rows; expected the O*NET release file with columns {list(columns)}.")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; found {list(rows[0])}. Use the O*NET 29.3 text release.")


@dataclass
class OnetTaxonomy:
    """The O*NET-SOC 2019 label space with its relations. Build it with :meth:`load`."""

    occupations: dict[str, Occupation]
    related_lists: dict[str, list[Related]] = field(default_factory=dict)
    alternate: dict[str, list[str]] = field(default_factory=dict)
    reported: dict[str, list[str]] = field(default_factory=dict)
    education: dict[str, dict[int, float]] = field(default_factory=dict)
    soc_parents: dict[str, dict[str, str]] = field(default_factory=dict)
    group_titles: dict[str, str] = field(default_factory=dict)
    fuzzy_cutoff: float = 75.0

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, data_dir: str | os.PathLike | None = None) -> OnetTaxonomy:
        """Loads the taxonomy from ``<data_dir>/onet`` and ``<data_dir>/soc`` (cached per directory).

        Args:
            data_dir: Data directory; None uses ``NEXTOCC_DATA_DIR`` or the user cache dir.

        Raises:
            FileNotFoundError: A required file is missing (the message names it and its source).
            ValueError: A file does not have the expected columns.
        """
        return _load_cached(str(resolve_data_dir(data_dir).resolve()))

    @classmethod
    def _build(cls, root: Path) -> OnetTaxonomy:
        occ_path = data_file(root, "onet/Occupation Data.txt")
        rows = _read_tsv(occ_path)
        _require_columns(rows, ("O*NET-SOC Code", "Title", "Description"), occ_path)
        zones: dict[str, int] = {}
        zpath = root / "onet" / "Job Zones.txt"
        if zpath.is_file():
            for r in _read_tsv(zpath):
                if r.get("Job Zone", "").strip().isdigit():
                    zones[r["O*NET-SOC Code"]] = int(r["Job Zone"])
        occupations = {}
        for r in rows:
            code = r["O*NET-SOC Code"].strip()
            if not CODE_RE.match(code):
                raise ValueError(f"{occ_path}: bad O*NET-SOC code {code!r} (expected NN-NNNN.NN).")
            occupations[code] = Occupation(code, r["Title"].strip(), r["Description"].strip(), zones.get(code))
        tax = cls(occupations=occupations)

        rel_path = data_file(root, "onet/Related Occupations.txt")
        rel_rows = _read_tsv(rel_path)
        _require_columns(rel_rows, ("O*NET-SOC Code", "Related O*NET-SOC Code", "Relatedness Tier", "Index"), rel_path)
        for r in rel_rows:
            src, dst = r["O*NET-SOC Code"], r["Related O*NET-SOC Code"]
            if src in occupations and dst in occupations:
                tax.related_lists.setdefault(src, []).append(
                    Related(dst, occupations[dst].title, int(r["Index"]), r["Relatedness Tier"])
                )
        for lst in tax.related_lists.values():
            lst.sort(key=lambda x: x.index)

        for fname, col, target in (
            ("onet/Alternate Titles.tsv", "Alternate Title", tax.alternate),
            ("onet/Sample of Reported Titles.txt", "Reported Job Title", tax.reported),
        ):
            path = root / fname
            if not path.is_file():
                logger.warning("Optional O*NET file %s is missing: alias matching uses fewer titles.", path)
                continue
            for r in _read_tsv(path):
                code, title = r.get("O*NET-SOC Code", ""), (r.get(col) or "").strip()
                if code in occupations and title and title.lower() != "n/a":
                    target.setdefault(code, []).append(title)

        edu_path = root / "onet" / "Education, Training, and Experience.tsv"
        if edu_path.is_file():
            for r in _read_tsv(edu_path):
                if r.get("Scale ID") == "RL" and r["O*NET-SOC Code"] in occupations:
                    tax.education.setdefault(r["O*NET-SOC Code"], {})[int(r["Category"])] = float(r["Data Value"])

        soc_path = data_file(root, "soc/SOC_Structure.csv")
        tax._load_soc(soc_path)
        logger.info("Loaded O*NET taxonomy: %d occupations, %d with related lists", len(occupations),
                    len(tax.related_lists))
        return tax

    def _load_soc(self, path: Path) -> None:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        cols = ("Major Group", "Minor Group", "Broad Occupation", "Detailed Occupation", "Detailed O*NET-SOC")
        _require_columns(rows, cols, path)
        current: dict[str, str] = {}
        detailed_parents: dict[str, dict[str, str]] = {}
        for r in rows:
            title = r.get("SOC or O*NET-SOC 2019 Title", "").strip()
            for level, col in zip(SOC_LEVELS, cols[:4], strict=True):
                if r[col].strip():
                    current[level] = r[col].strip()
                    # a new group resets the levels below it
                    for lower in SOC_LEVELS[SOC_LEVELS.index(level) + 1:]:
                        current.pop(lower, None)
                    self.group_titles[current[level]] = title
                    if level == "detailed":
                        detailed_parents[current[level]] = dict(current)
        for code in self.occupations:
            parents = detailed_parents.get(code[:7])
            if parents is None:
                parents = {"major": code[:2] + "-0000", "detailed": code[:7]}
            self.soc_parents[code] = {lvl: parents.get(lvl, "") for lvl in SOC_LEVELS}

    # ------------------------------------------------------------------ lookups
    @property
    def titles(self) -> list[str]:
        """The official titles, in code order (the label space)."""
        return [o.title for o in self.occupations.values()]

    @functools.cached_property
    def _title_index(self) -> dict[str, str]:
        return {canonical(o.title): o.code for o in self.occupations.values()}

    def code_for_title(self, title: str) -> str | None:
        """The code of an official title (case/punctuation-insensitive), or None."""
        return self._title_index.get(canonical(title))

    def title(self, code: str) -> str:
        """The official title of a code.

        Raises:
            KeyError: With a clear message for an unknown code.
        """
        try:
            return self.occupations[code].title
        except KeyError:
            raise KeyError(f"Unknown O*NET-SOC 2019 code {code!r}.") from None

    def related(self, code: str) -> list[Related]:
        """The ranked Related Occupations of ``code`` (Index 1-20); empty when O*NET lists none."""
        return self.related_lists.get(code, [])

    def related_rank(self, gold_code: str, pred_code: str) -> int | None:
        """Index k (1-20) of ``pred_code`` in the related list of ``gold_code``, or None."""
        for rel in self.related_lists.get(gold_code, ()):
            if rel.code == pred_code:
                return rel.index
        return None

    def soc_group(self, code: str, level: str = "major") -> str:
        """The SOC group code of an O*NET code at ``level`` (major, minor, broad or detailed)."""
        if level not in SOC_LEVELS:
            raise ValueError(f"level must be one of {SOC_LEVELS}, got {level!r}.")
        parents = self.soc_parents.get(code)
        if parents is None:
            if not CODE_RE.match(str(code)):
                raise KeyError(f"Unknown O*NET-SOC 2019 code {code!r}.")
            return code[:2] + "-0000" if level == "major" else code[:7]
        return parents[level] or parents["detailed"]

    def typical_education(self, code: str) -> int | None:
        """The O*NET Required Level of Education category (scale RL, 1-12) most workers of ``code`` hold, or None."""
        dist = self.education.get(code)
        if not dist:
            return None
        return max(sorted(dist), key=lambda c: dist[c])

    def job_zone(self, code: str) -> int | None:
        """The Job Zone (1-5) of an occupation, when O*NET rates it."""
        occ = self.occupations.get(code)
        return occ.job_zone if occ else None

    # ------------------------------------------------------------------ normalizer
    @functools.cached_property
    def _alias_index(self) -> tuple[dict[str, list[tuple[str, str]]], list[str], list[list[str]]]:
        exact: dict[str, list[tuple[str, str]]] = {}
        for method, table in (("alternate", self.alternate), ("reported", self.reported)):
            for code, names in table.items():
                for name in names:
                    entry = exact.setdefault(canonical(name), [])
                    if all(c != code for c, _ in entry):
                        entry.append((code, method))
        position: dict[str, int] = {}
        choices: list[str] = []
        codes: list[list[str]] = []
        for key, pairs in [(canonical(o.title), [(o.code, "exact")]) for o in self.occupations.values()] + list(
            exact.items()
        ):
            if key not in position:
                position[key] = len(choices)
                choices.append(key)
                codes.append([])
            bucket = codes[position[key]]
            bucket.extend(c for c, _ in pairs if c not in bucket)
        return exact, choices, codes

    def _best_code(self, key: str, options: list[str]) -> str:
        """Among several occupations sharing an alias, the one whose official title is closest to ``key``."""
        if len(options) == 1:
            return options[0]
        return max(options, key=lambda c: fuzz.token_sort_ratio(key, canonical(self.title(c))))

    def candidates(self, text: str, k: int = 5) -> list[Match]:
        """Ranked O*NET matches for a free-text title: exact title, then alias, then fuzzy.

        Alternate and reported titles shared by several occupations resolve to the occupation whose
        official title is closest to the text. Fuzzy matching uses rapidfuzz's ``token_sort_ratio``
        over official, alternate and reported titles.

        Args:
            text: A job title as written by a person or an LM.
            k: Number of distinct occupations to return.

        Returns:
            Up to ``k`` matches, best first; an empty list when nothing scores above ``fuzzy_cutoff``.
        """
        if not isinstance(text, str):
            raise TypeError(f"title must be a string, got {type(text).__name__}.")
        key = canonical(text)
        if not key:
            return []
        out: list[Match] = []
        code = self._title_index.get(key)
        if code:
            out.append(Match(code, self.title(code), 100.0, "exact", text))
        exact, choices, codes = self._alias_index
        if key in exact and not out:
            pairs = exact[key]
            best = self._best_code(key, [c for c, _ in pairs])
            method = next(m for c, m in pairs if c == best)
            out.append(Match(best, self.title(best), 100.0, method, text))
        if len(out) < k:
            hits = process.extract(key, choices, scorer=fuzz.token_sort_ratio, limit=max(4 * k, 20),
                                   score_cutoff=self.fuzzy_cutoff, processor=None)
            have = {m.code for m in out}
            for _, score, idx in hits:
                c = self._best_code(key, codes[idx])
                if c not in have:
                    have.add(c)
                    out.append(Match(c, self.title(c), float(score), "fuzzy", text))
                if len(out) >= k:
                    break
        return out[:k]

    def normalize(self, text: str) -> Match:
        """Maps a free-text title to the best official O*NET title.

        Returns:
            The best :class:`Match`; ``method == "none"`` and ``code is None`` when nothing is close.
        """
        found = self.candidates(text, k=1)
        return found[0] if found else Match(None, None, 0.0, "none", text)


@functools.lru_cache(maxsize=4)
def _load_cached(root: str) -> OnetTaxonomy:
    return OnetTaxonomy._build(Path(root))
