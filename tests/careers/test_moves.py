"""careers.moves: each rule on chosen O*NET codes, and agreement with the motive world's laws."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from careers.motives import MotiveCareerGenerator
from careers.moves import KINDS, last_move_sentence, move_kind, move_kinds
from careers.synthetic import SyntheticCareerGenerator


def _pick(taxonomy, want):
    """The first (a, b) of rated O*NET codes for which ``want(a, b)`` holds."""
    codes = sorted(c for c in taxonomy.occupations if taxonomy.job_zone(c) is not None)
    for a in codes:
        for rel in taxonomy.related(a):
            if taxonomy.job_zone(rel.code) is not None and want(a, rel.code):
                return a, rel.code
    raise AssertionError("no such pair of codes")


def test_each_rule(taxonomy):
    zone = taxonomy.job_zone
    minor = lambda c: taxonomy.soc_group(c, "minor")  # noqa: E731
    up1 = _pick(taxonomy, lambda a, b: zone(b) == zone(a) + 1)
    up2 = _pick(taxonomy, lambda a, b: zone(b) >= zone(a) + 2)
    pivot = _pick(taxonomy, lambda a, b: zone(b) == zone(a) and minor(b) != minor(a))
    down = _pick(taxonomy, lambda a, b: zone(b) < zone(a))
    assert move_kind(taxonomy, list(up1), 1) == "climb"
    assert move_kind(taxonomy, list(up2), 1) == "climb2"
    assert move_kind(taxonomy, list(pivot), 1) == "pivot"
    assert move_kind(taxonomy, list(down), 1) == "down"
    a, b = pivot
    assert move_kinds(taxonomy, [a, a, b, a]) == ["stay", "pivot", "return"]
    assert move_kind(taxonomy, [a, None], 1) == "move"
    assert set(move_kinds(taxonomy, [*up1, *up2, *pivot])) <= set(KINDS)
    with pytest.raises(ValueError, match="names no move"):
        move_kind(taxonomy, [a, b], 2)


def test_kinds_follow_the_motive_worlds_laws(taxonomy):
    """Moves a motive's own law drew are classified as that motive's kind of move (>= 80% per motive)."""
    gen = MotiveCareerGenerator(taxonomy, seed=3)
    rng = np.random.default_rng(0)
    fits = {"stay": {"stay"}, "return": {"return"}, "climb": {"climb", "climb2", "return"},
            "educate": {"climb2", "return"}, "pivot": {"pivot", "climb", "climb2", "return"}}
    counts: dict[str, Counter] = defaultdict(Counter)
    for _ in range(300):
        codes, motives = gen.sample_path(6, rng)
        for t in range(1, len(codes)):
            law = gen.motive_law(motives[t - 1], codes[:t])
            if law == SyntheticCareerGenerator.next_distribution(gen, codes[:t]):
                continue  # the motive had no law of its own here: the move came from the base chain
            counts[motives[t - 1]][move_kind(taxonomy, codes, t)] += 1
    for motive, kinds in counts.items():
        n = sum(kinds.values())
        assert n >= 30, (motive, n)
        assert sum(kinds[k] for k in fits[motive]) / n >= 0.8, (motive, dict(kinds))


def test_last_move_sentence():
    assert last_move_sentence(["Cook"], []) == ""
    assert last_move_sentence(["Cook", "Chef", "Head Chef"], ["climb", "climb"]) == (
        "Their last move, from Chef to Head Chef, was a climb to a higher job zone, like the move before it.")
    assert last_move_sentence(["Cook", "Line Cook"], ["stay"]) == (
        "Their last move, to Line Cook, was staying in the same occupation.")
    with pytest.raises(ValueError, match="one fewer kind"):
        last_move_sentence(["Cook", "Chef"], ["stay", "stay"])
