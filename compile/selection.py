"""Oracle-reason selection and preference pairing from judged candidate reasons.

Each judged candidate is a dict as written to ``candidates.jsonl`` by :mod:`compile.candidates`:
``example_id``, ``person_id``, ``candidate`` (index), ``reason``, the three judge scores
(``factuality``, ``coherence``, ``utility``; None when the judge failed), ``oracle_score`` and an
``error`` field (None unless generation failed).

Selection rule (documented and configurable through :class:`SelectionRule`):

1. A candidate is *eligible* when it has no error, all three scores are present and each score is at
   least its per-criterion threshold.
2. Among eligible candidates of one example, the one with the highest oracle score is the oracle
   reason; ties go to the higher utility, then to the lower candidate index (deterministic).
3. An example with no eligible candidate has no oracle reason; it is counted and reported.

For DPO, the *chosen* reason is the oracle reason and the *rejected* one is the candidate with the
lowest oracle score among the judged candidates of the same example (failed judgements excluded),
kept only when the score gap is at least ``min_dpo_gap``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

CRITERIA = ("factuality", "coherence", "utility")


@dataclass
class SelectionRule:
    """Per-criterion thresholds (1-5 scale) and the DPO score gap."""

    thresholds: dict[str, float] = field(
        default_factory=lambda: {"factuality": 3, "coherence": 3, "utility": 3},
        metadata={"help": "Minimum judge score per criterion for a reason to be eligible as oracle."},
    )
    min_dpo_gap: float = field(
        default=0.25, metadata={"help": "Minimum oracle-score gap (oracle scores are in [0, 1]) between chosen and rejected DPO reasons."}
    )

    def __post_init__(self):
        unknown = set(self.thresholds) - set(CRITERIA)
        if unknown:
            raise ValueError(f"selection thresholds: unknown criteria {sorted(unknown)}; use {list(CRITERIA)}.")
        for name, value in self.thresholds.items():
            if not isinstance(value, (int, float)) or not 0 <= value <= 5:
                raise ValueError(f"selection thresholds.{name} must be a number in [0, 5], got {value!r}.")
        if self.min_dpo_gap < 0:
            raise ValueError(f"min_dpo_gap must be >= 0, got {self.min_dpo_gap}.")

    def judged(self, cand: dict) -> bool:
        """True when the candidate was generated and all three judge scores are present."""
        return not cand.get("error") and all(isinstance(cand.get(c), (int, float)) for c in CRITERIA)

    def eligible(self, cand: dict) -> bool:
        """True when the candidate is judged and passes every per-criterion threshold."""
        return self.judged(cand) and all(cand[c] >= self.thresholds.get(c, 0) for c in CRITERIA)


def _rank_key(cand: dict) -> tuple:
    return (-(cand.get("oracle_score") or 0.0), -(cand.get("utility") or 0), cand.get("candidate", 0))


def group_by_example(candidates: Iterable[dict]) -> dict[str, list[dict]]:
    """Groups candidate records by ``example_id``, keeping the last record of a repeated candidate."""
    groups: dict[str, dict[int, dict]] = defaultdict(dict)
    for cand in candidates:
        groups[cand["example_id"]][cand.get("candidate", 0)] = cand
    return {k: [v[i] for i in sorted(v)] for k, v in groups.items()}


def select_oracles(candidates: Iterable[dict], rule: SelectionRule) -> tuple[dict[str, dict], list[str]]:
    """Picks the oracle reason of every example.

    Returns:
        ``(oracles, missing)``: example_id → chosen candidate record, and the example ids without any
        eligible candidate.
    """
    oracles, missing = {}, []
    for example_id, group in group_by_example(candidates).items():
        eligible = sorted((c for c in group if rule.eligible(c)), key=_rank_key)
        if eligible:
            oracles[example_id] = eligible[0]
        else:
            missing.append(example_id)
    logger.info("Oracle selection: %d examples with an oracle reason, %d without", len(oracles), len(missing))
    return oracles, missing


def dpo_pairs(candidates: Iterable[dict], rule: SelectionRule) -> list[tuple[dict, dict]]:
    """(chosen, rejected) candidate pairs: the oracle reason vs. the worst judged reason of the same example."""
    pairs = []
    for group in group_by_example(candidates).values():
        eligible = sorted((c for c in group if rule.eligible(c)), key=_rank_key)
        judged = sorted((c for c in group if rule.judged(c)), key=_rank_key)
        if not eligible or len(judged) < 2:
            continue
        chosen, rejected = eligible[0], judged[-1]
        if chosen is rejected or chosen["reason"] == rejected["reason"]:
            continue
        if (chosen.get("oracle_score") or 0) - (rejected.get("oracle_score") or 0) >= rule.min_dpo_gap:
            pairs.append((chosen, rejected))
    return pairs


def latest_records(candidates: Iterable[dict]) -> list[dict]:
    """One record per ``(example_id, candidate)``: the last one written (a retried failure supersedes its error)."""
    return [c for group in group_by_example(candidates).values() for c in group]


def score_summary(candidates: list[dict], rule: SelectionRule) -> dict:
    """Counts, pass rates and score distributions (over the latest record of each candidate)."""
    candidates = latest_records(candidates)
    total = len(candidates)
    judged = [c for c in candidates if rule.judged(c)]
    summary: dict = {
        "candidates": total,
        "generation_errors": sum(1 for c in candidates if c.get("error")),
        "judge_failures": sum(1 for c in candidates if not c.get("error") and not rule.judged(c)),
        "judged": len(judged),
        "eligible": sum(1 for c in judged if rule.eligible(c)),
    }
    for crit in CRITERIA:
        values = [c[crit] for c in judged]
        hist = {str(s): sum(1 for v in values if round(v) == s) for s in range(1, 6)}
        passed = sum(1 for v in values if v >= rule.thresholds.get(crit, 0))
        summary[crit] = {
            "mean": round(sum(values) / len(values), 3) if values else None,
            "histogram": hist,
            "pass_rate": round(passed / len(values), 3) if values else None,
        }
    scores = [c.get("oracle_score") or 0.0 for c in judged]
    summary["oracle_score_mean"] = round(sum(scores) / len(scores), 3) if scores else None
    summary["pass_rate"] = round(summary["eligible"] / len(judged), 3) if judged else None
    return summary
