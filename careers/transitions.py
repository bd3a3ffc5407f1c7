"""Transition statistics of a training split: how often people in occupation X moved next to occupation Y.

:class:`TransitionStats` is fitted on labeled training examples only (``TransitionStats.fit(splits.train)``):
every example contributes its one transition, from the state of its last history job (``example.states[-1]``,
see :attr:`careers.history.Job.state`) to its gold state (``example.gold_state``). Alongside the counts it keeps,
per state, the job title most often written for it in the training histories and the O*NET codes it stands for
(a job's ``onet_code`` or its ``onet_candidates``; for a gold state, the example's ``gold_codes``), so a sentence
such as "of 1,234 recorded moves from Cashier, 18% went next to Stock Clerk" can be written by a teacher and checked
by a judge against the same numbers.

Dev and test persons never enter the statistics: :meth:`TransitionStats.fit` sees only what it is given.
Statistics are saved as JSON (:meth:`save` / :meth:`load`), never pickled.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from careers.onet import canonical

logger = logging.getLogger(__name__)

FORMAT = "nextocc-transitions/1"


def _get(obj: Any, key: str, default: Any = None) -> Any:
    try:
        value = obj.get(key, default) if hasattr(obj, "get") else getattr(obj, key, default)
    except (KeyError, TypeError, AttributeError):
        return default
    return default if value is None else value


def job_state(job: Mapping[str, Any]) -> str | None:
    """The state key of a job dict (``source_code``, else ``onet_code``, else the lower-cased title)."""
    key = job.get("source_code") or job.get("onet_code") or (job.get("title") or "").lower()
    return key or None


def job_codes(job: Mapping[str, Any]) -> tuple[str, ...]:
    """The O*NET codes a job dict stands for (its code, else its candidate set)."""
    code = job.get("onet_code")
    return (code,) if code else tuple(job.get("onet_candidates") or ())


@dataclass
class TransitionStats:
    """Counts of (current state -> next state) over a training split, with state titles and O*NET codes.

    Build with :meth:`fit`. ``counts[state][next_state]`` is the number of training transitions; ``titles`` the most
    frequent history title of a state; ``codes`` the O*NET codes of a state.
    """

    counts: dict[str, Counter] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    persons: int = 0

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, examples: Iterable[Any]) -> TransitionStats:
        """Counts the transitions of labeled examples (``career`` or ``states``, and ``gold_state``).

        Raises:
            ValueError: When no example carries a transition (nothing to count).
        """
        counts: dict[str, Counter] = defaultdict(Counter)
        title_votes: dict[str, Counter] = defaultdict(Counter)
        code_sets: dict[str, dict[str, None]] = defaultdict(dict)
        persons: set[str] = set()
        for ex in examples:
            career = _get(ex, "career") or {}
            jobs = list(career.get("jobs") or []) if isinstance(career, Mapping) else []
            states = [job_state(j) for j in jobs] if jobs else list(_get(ex, "states", []) or [])
            gold = _get(ex, "gold_state")
            if not states or not gold or states[-1] is None:
                continue
            for job in jobs:
                state = job_state(job)
                if state:
                    title_votes[state][str(job.get("title") or state)] += 1
                    for code in job_codes(job):
                        code_sets[state].setdefault(code, None)
            for code in _get(ex, "gold_codes", []) or []:
                code_sets[gold].setdefault(code, None)
            if gold not in title_votes and _get(ex, "occupation"):
                title_votes[gold][str(ex.get("occupation"))] += 0  # a fallback title, outvoted by any history title
            counts[states[-1]][gold] += 1
            persons.add(str(_get(ex, "person_id", len(persons))))
        if not counts:
            raise ValueError("TransitionStats.fit: no example has a history state and a gold_state to count.")
        titles = {s: max(v.items(), key=lambda kv: (kv[1], -len(kv[0])))[0] for s, v in title_votes.items()}
        stats = cls(counts=dict(counts), titles=titles, codes={s: tuple(c) for s, c in code_sets.items()},
                    persons=len(persons))
        logger.info("Transition statistics: %d transitions from %d states, %d persons", stats.transitions,
                    len(stats.counts), stats.persons)
        return stats

    # ------------------------------------------------------------------ lookups
    @property
    def transitions(self) -> int:
        """Total transitions counted."""
        return sum(sum(c.values()) for c in self.counts.values())

    def total(self, state: str) -> int:
        """Transitions out of ``state`` (0 for a state never seen as a current job)."""
        return sum(self.counts.get(state, Counter()).values())

    def count(self, state: str, next_state: str) -> int:
        """Transitions from ``state`` to ``next_state``."""
        return int(self.counts.get(state, Counter()).get(next_state, 0))

    def share(self, state: str, next_state: str) -> float:
        """The share of moves out of ``state`` that went to ``next_state`` (0.0 for an unseen state)."""
        total = self.total(state)
        return self.count(state, next_state) / total if total else 0.0

    def top_next(self, state: str, k: int = 3, *, exclude: Iterable[str] = ()) -> list[tuple[str, int, float]]:
        """The ``k`` most frequent next states of ``state``: ``(next_state, count, share)``, ties by state key."""
        total = self.total(state)
        skip = set(exclude)
        items = sorted(((n, c) for n, c in self.counts.get(state, Counter()).items() if n not in skip),
                       key=lambda kv: (-kv[1], kv[0]))
        return [(n, c, c / total) for n, c in items[:k]]

    def title(self, state: str) -> str:
        """The title most often written for a state in the training histories (the state key when unseen)."""
        return self.titles.get(state, state)

    def state_codes(self, state: str) -> tuple[str, ...]:
        """The O*NET codes a state stands for (empty when unknown)."""
        return self.codes.get(state, ())

    @property
    def title_index(self) -> dict[str, tuple[str, ...]]:
        """``canonical(title) -> states`` with that title (several source codes may share one title)."""
        index = getattr(self, "_title_index", None)
        if index is None:
            index = {}
            for state, title in sorted(self.titles.items()):
                index.setdefault(canonical(title), []).append(state)
            index = {k: tuple(v) for k, v in index.items()}
            self._title_index = index
        return index

    def states_for_title(self, title: str) -> tuple[str, ...]:
        """The states whose title is ``title`` (case and punctuation insensitive); empty when none."""
        return self.title_index.get(canonical(title), ())

    def state_for_title(self, title: str) -> str | None:
        """The first state whose title is ``title``, or None."""
        states = self.states_for_title(title)
        return states[0] if states else None

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_dict`)."""
        return {"format": FORMAT, "persons": self.persons, "titles": self.titles,
                "codes": {s: list(c) for s, c in self.codes.items()},
                "counts": {s: dict(sorted(c.items())) for s, c in sorted(self.counts.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransitionStats:
        """Rebuilds statistics written by :meth:`to_dict`.

        Raises:
            ValueError: For another format or malformed counts.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format={data.get('format') if isinstance(data, Mapping) else None!r})")
        counts = {}
        for state, row in (data.get("counts") or {}).items():
            if not isinstance(row, Mapping) or any(not isinstance(v, int) or v < 0 for v in row.values()):
                raise ValueError(f"transition counts of {state!r} must map next states to non-negative integers")
            counts[str(state)] = Counter({str(k): int(v) for k, v in row.items()})
        return cls(counts=counts, titles={str(k): str(v) for k, v in (data.get("titles") or {}).items()},
                   codes={str(k): tuple(v) for k, v in (data.get("codes") or {}).items()},
                   persons=int(data.get("persons") or 0))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the statistics as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TransitionStats:
        """Reads statistics written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
