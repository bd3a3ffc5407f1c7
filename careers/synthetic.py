"""Seeded synthetic careers grounded in O*NET, with the exact next-occupation distribution.

The generator is a second-order Markov chain over O*NET-SOC 2019 occupations. Its state space is
the occupations that have a Related Occupations list (923 in O*NET 29.3). Exactly:

* **First occupation**: uniform over the state space (:meth:`SyntheticCareerGenerator.first_distribution`).
* **Next occupation** given the history's current occupation ``cur`` (last job) and previous
  occupation ``prev`` (the job before it, when there is one):

  - ``p_stay`` (default 0.10): ``cur`` again (a new job in the same occupation);
  - ``p_return`` (default 0.05): ``prev``, only when ``prev`` exists and differs from ``cur``;
    otherwise this mass is not used (the remaining mass below grows accordingly);
  - the rest, ``1 - p_stay - p_return_used``, spread over the related occupations of ``cur`` that are
    in the state space, proportional to ``tier_weights[tier] * zone_weight(zone(rel) - zone(cur))``
    with tier weights Primary-Short 4, Primary-Long 2, Supplemental 1 and zone weights
    same zone 1.0, +1 0.8, -1 0.3, +2 0.15, any other difference 0.05. Probabilities of the same code
    reached by two routes add up (e.g. ``prev`` is also related to ``cur``).

  :meth:`SyntheticCareerGenerator.next_distribution` returns this dict for any history, and careers
  are sampled from that very function, so every example's ``next_distribution`` field is the exact law
  of its gold. :func:`bayes_optimal_accuracy` is the expected exact-match accuracy of predicting the
  argmax, i.e. the mean of ``max(next_distribution)``.
* **Education**: a level drawn from O*NET's Required Level of Education distribution (scale RL,
  categories 1-12) of the *first* occupation; the field of study is the SOC major group of that
  occupation (e.g. "Computer and Mathematical"); a high-school entry precedes post-secondary ones.
* **Titles**: free text drawn from the occupation's Reported and Alternate titles (the official
  title with probability ``p_official_title``), so titles are noisy while the gold is the official title.
* **Years**: 2-6 jobs (``min_jobs``-``max_jobs``), tenures 1-8 years (1 + Poisson(2), capped), gaps of
  0 or 1 year; the first job starts 0-1 year after education ends (age 16 without a diploma, 18 after
  high school, plus the years of the degree); the career ends between 2008 and 2024. Each person uses
  its own generator ``numpy.random.default_rng([seed, index])`` so persons are reproducible one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import dspy
import numpy as np

from careers.history import CareerHistory, Education, Job
from careers.onet import OnetTaxonomy

logger = logging.getLogger(__name__)

TIER_WEIGHTS = {"Primary-Short": 4.0, "Primary-Long": 2.0, "Supplemental": 1.0}
ZONE_WEIGHTS = {0: 1.0, 1: 0.8, -1: 0.3, 2: 0.15}
OTHER_ZONE_WEIGHT = 0.05
#: O*NET RL category -> (education level, years of schooling after high school).
RL_LEVELS = {
    1: ("Less than high school", 0),
    2: ("High school diploma", 0),
    3: ("Post-secondary certificate", 1),
    4: ("Some college", 2),
    5: ("Associate's degree", 2),
    6: ("Bachelor's degree", 4),
    7: ("Post-baccalaureate certificate", 5),
    8: ("Master's degree", 6),
    9: ("Post-master's certificate", 7),
    10: ("First professional degree", 7),
    11: ("Doctoral degree", 9),
    12: ("Post-doctoral training", 11),
}
DEFAULT_RL = {2: 50.0, 6: 50.0}
_PLACES = ("Riverside", "Lakeview", "Northfield", "Westbrook", "Fairmont", "Cedar Hill", "Oakdale", "Summit",
           "Harbor", "Greenville", "Maple Ridge", "Eastport")
_EMPLOYER_SUFFIX = ("Group", "Inc.", "Services", "Partners", "Holdings", "Company", "LLC", "Associates",
                    "Industries", "Solutions")


def _codes_of(history: Any) -> list[str]:
    """The occupation codes of a history given as CareerHistory, dspy.Example, dict or a code sequence."""
    if isinstance(history, CareerHistory):
        jobs = [j.onet_code for j in history.jobs]
    elif isinstance(history, dspy.Example) or (isinstance(history, dict) and "career" in history):
        career = history["career"]
        jobs = [j.get("onet_code") for j in career.get("jobs", [])]
    elif isinstance(history, dict):
        jobs = [j.get("onet_code") for j in history.get("jobs", [])]
    elif isinstance(history, Sequence) and not isinstance(history, str):
        jobs = list(history)
    else:
        raise TypeError(f"expected a CareerHistory, dspy.Example or a list of codes, got {type(history).__name__}")
    if not jobs:
        raise ValueError("the history has no jobs: the next-occupation distribution needs a current occupation")
    if any(c is None for c in jobs):
        raise ValueError("every job of a synthetic history needs its onet_code to compute next_distribution")
    return jobs


class SyntheticCareerGenerator:
    """Seeded O*NET-grounded career generator with exact next-occupation distributions (see module doc)."""

    def __init__(
        self,
        taxonomy: OnetTaxonomy,
        seed: int = 0,
        *,
        p_stay: float = 0.10,
        p_return: float = 0.05,
        tier_weights: dict[str, float] | None = None,
        zone_weights: dict[int, float] | None = None,
        p_official_title: float = 0.2,
        min_jobs: int = 2,
        max_jobs: int = 6,
    ):
        if not 0 <= p_stay < 1 or not 0 <= p_return < 1 or p_stay + p_return >= 1:
            raise ValueError(f"need 0 <= p_stay, p_return and p_stay + p_return < 1; got {p_stay}, {p_return}")
        if not 2 <= min_jobs <= max_jobs:
            raise ValueError(f"need 2 <= min_jobs <= max_jobs, got {min_jobs}, {max_jobs}")
        self.taxonomy = taxonomy
        self.seed = int(seed)
        self.p_stay = p_stay
        self.p_return = p_return
        self.tier_weights = dict(tier_weights or TIER_WEIGHTS)
        self.zone_weights = dict(zone_weights or ZONE_WEIGHTS)
        self.p_official_title = p_official_title
        self.min_jobs, self.max_jobs = min_jobs, max_jobs
        self.states: tuple[str, ...] = tuple(sorted(c for c in taxonomy.occupations if taxonomy.related(c)))
        if not self.states:
            raise ValueError("the taxonomy has no Related Occupations lists; the generator needs them")
        state_set = set(self.states)
        self._moves: dict[str, dict[str, float]] = {}
        for code in self.states:
            weights: dict[str, float] = {}
            for rel in taxonomy.related(code):
                if rel.code in state_set and rel.code != code:
                    w = self.tier_weights.get(rel.tier, 1.0) * self._zone_weight(code, rel.code)
                    weights[rel.code] = weights.get(rel.code, 0.0) + w
            total = sum(weights.values())
            self._moves[code] = {c: w / total for c, w in weights.items()} if total > 0 else {}
        self._titles: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ the law
    def _zone_weight(self, cur: str, nxt: str) -> float:
        a, b = self.taxonomy.job_zone(cur), self.taxonomy.job_zone(nxt)
        if a is None or b is None:
            return OTHER_ZONE_WEIGHT
        return self.zone_weights.get(b - a, OTHER_ZONE_WEIGHT)

    def first_distribution(self) -> dict[str, float]:
        """The law of the first occupation (uniform over the state space)."""
        p = 1.0 / len(self.states)
        return dict.fromkeys(self.states, p)

    def next_distribution(self, history: Any) -> dict[str, float]:
        """The exact distribution of the next occupation given a history (module doc gives the formula).

        Args:
            history: A :class:`CareerHistory` whose jobs carry ``onet_code``, a ``dspy.Example`` made by this
                module (its ``career`` field), or the sequence of occupation codes so far (oldest first).

        Returns:
            ``{code: probability}`` summing to 1.

        Raises:
            ValueError: Empty history, a job without code, or a current occupation outside the state space.
        """
        codes = _codes_of(history)
        cur = codes[-1]
        moves = self._moves.get(cur)
        if moves is None:
            raise ValueError(f"occupation {cur!r} is not in the generator's state space (O*NET codes with a "
                             "Related Occupations list)")
        prev = codes[-2] if len(codes) >= 2 else None
        p_ret = self.p_return if prev is not None and prev != cur and prev in self._moves else 0.0
        dist: dict[str, float] = {cur: self.p_stay}
        if p_ret:
            dist[prev] = dist.get(prev, 0.0) + p_ret
        rest = 1.0 - self.p_stay - p_ret
        if not moves:
            dist[cur] += rest
        for code, p in moves.items():
            dist[code] = dist.get(code, 0.0) + rest * p
        return dist

    @staticmethod
    def _draw(dist: dict[str, float], rng: np.random.Generator) -> str:
        codes = list(dist)
        p = np.fromiter(dist.values(), dtype=float, count=len(codes))
        return codes[int(rng.choice(len(codes), p=p / p.sum()))]

    def sample_codes(self, n_jobs: int, rng: np.random.Generator, prefix: Sequence[str] | str | None = None
                     ) -> list[str]:
        """Samples ``n_jobs`` occupation codes from the chain, continuing ``prefix`` (a first code or codes)."""
        codes = [prefix] if isinstance(prefix, str) else list(prefix or ())
        for code in codes:
            if code not in self._moves:
                raise ValueError(f"occupation {code!r} is not in the generator's state space")
        if not codes:
            codes = [self.states[int(rng.integers(len(self.states)))]]
        while len(codes) < n_jobs:
            codes.append(self._draw(self.next_distribution(codes), rng))
        return codes

    # ------------------------------------------------------------------ persons
    def _title_pool(self, code: str) -> tuple[str, ...]:
        pool = self._titles.get(code)
        if pool is None:
            names = self.taxonomy.reported.get(code, []) + self.taxonomy.alternate.get(code, [])
            pool = tuple(dict.fromkeys(n for n in names if 2 <= len(n) <= 80))
            self._titles[code] = pool
        return pool

    def _title(self, code: str, rng: np.random.Generator) -> str:
        pool = self._title_pool(code)
        if not pool or rng.random() < self.p_official_title:
            return self.taxonomy.title(code)
        return pool[int(rng.integers(len(pool)))]

    def _education_category(self, code: str, rng: np.random.Generator) -> int:
        dist = self.taxonomy.education.get(code) or DEFAULT_RL
        cats = sorted(c for c in dist if c in RL_LEVELS and dist[c] > 0) or sorted(DEFAULT_RL)
        p = np.array([dist.get(c, DEFAULT_RL.get(c, 0.0)) for c in cats], dtype=float)
        return cats[int(rng.choice(len(cats), p=p / p.sum()))]

    def _field(self, code: str) -> str | None:
        try:
            group = self.taxonomy.group_titles.get(self.taxonomy.soc_group(code, "major"), "")
        except (KeyError, ValueError):
            return None
        return group.removesuffix(" Occupations").strip() or None

    def generate_person(self, index: int) -> CareerHistory:
        """The ``index``-th synthetic person (deterministic given the generator seed)."""
        rng = np.random.default_rng([self.seed, int(index)])
        n_jobs = int(rng.integers(self.min_jobs, self.max_jobs + 1))
        codes = self.sample_codes(n_jobs, rng)
        cat = self._education_category(codes[0], rng)
        level, years = RL_LEVELS[cat]
        # offsets in years from birth
        school_end = 16 if cat == 1 else 18 + years
        tenures = [min(8, 1 + int(rng.poisson(2.0))) for _ in codes]
        gaps = [int(rng.random() < 0.4) for _ in codes]
        starts, ends = [], []
        t = school_end + int(rng.integers(0, 2))
        for tenure, gap in zip(tenures, gaps, strict=True):
            starts.append(t)
            ends.append(t + tenure - 1)
            t = ends[-1] + gap
        career_end = int(rng.integers(2008, 2025))
        birth = career_end - ends[-1]
        place = _PLACES[int(rng.integers(len(_PLACES)))]
        education = []
        if cat == 1:
            education.append(Education(level=level, end_year=birth + 16))
        else:
            education.append(Education(level="High school diploma", institution=f"{place} High School",
                                       start_year=birth + 14, end_year=birth + 18))
            if cat >= 3:
                kind = ("Technical Institute" if cat == 3 else "Community College" if cat in (4, 5)
                        else "State University")
                education.append(Education(level=level, field=self._field(codes[0]),
                                           institution=f"{place} {kind}", start_year=birth + 18,
                                           end_year=birth + school_end))
        jobs = []
        for code, s, e in zip(codes, starts, ends, strict=True):
            employer = (f"{_PLACES[int(rng.integers(len(_PLACES)))]} "
                        f"{_EMPLOYER_SUFFIX[int(rng.integers(len(_EMPLOYER_SUFFIX)))]}")
            jobs.append(Job(title=self._title(code, rng), employer=employer, start_year=birth + s,
                            end_year=birth + e, onet_code=code, age=s))
        return CareerHistory(person_id=f"syn{self.seed}-{index:06d}", education=tuple(education), jobs=tuple(jobs))

    def examples(self, history: CareerHistory, min_history_jobs: int = 1) -> list[dspy.Example]:
        """One example per transition of a generated history, each with its ``next_distribution``."""
        out = []
        for i in range(max(1, min_history_jobs), len(history.jobs)):
            target = history.jobs[i]
            ex = history.prefix(i).to_example(target, occupation=self.taxonomy.title(target.onet_code),
                                              gold_codes=[target.onet_code])
            ex["next_distribution"] = self.next_distribution([j.onet_code for j in history.jobs[:i]])
            out.append(ex)
        return out

    def generate(self, n_persons: int, min_history_jobs: int = 1) -> list[dspy.Example]:
        """Examples of persons ``0 .. n_persons-1``."""
        out: list[dspy.Example] = []
        for i in range(n_persons):
            out.extend(self.examples(self.generate_person(i), min_history_jobs))
        return out


def bayes_optimal_accuracy(examples: Iterable[Any]) -> float:
    """Expected exact-match accuracy of predicting the argmax of each example's true next distribution.

    Equals the mean over examples of ``max(next_distribution.values())``: no predictor that sees only the
    history can do better in expectation.

    Raises:
        ValueError: No examples, or an example without ``next_distribution``.
    """
    total, n = 0.0, 0
    for ex in examples:
        dist = ex.get("next_distribution") if hasattr(ex, "get") else None
        if not dist:
            raise ValueError("every example needs a next_distribution field (synthetic examples only)")
        total += max(dist.values())
        n += 1
    if n == 0:
        raise ValueError("no examples")
    return total / n
