"""The latent-motive world: exact laws, their posterior, sampling agreement and the two Bayes ceilings."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from careers.motives import MOTIVES, MotiveCareerGenerator, bayes_ceilings
from careers.synthetic import SyntheticCareerGenerator
from careers.synthetic_dataset import load_synthetic


@pytest.fixture(scope="module")
def gen(taxonomy):
    return MotiveCareerGenerator(taxonomy, seed=3)


@pytest.fixture(scope="module")
def world(taxonomy):
    return load_synthetic(n_persons=150, seed=1, taxonomy=taxonomy, motives=True)


def _chi2_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty upper quantile of chi-square (z=3.09: p = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_every_law_sums_to_one_and_the_posterior_is_a_distribution(gen, world):
    for ex in world.all()[:200]:
        codes = [j["onet_code"] for j in ex.career["jobs"]]
        assert sum(ex.next_distribution.values()) == pytest.approx(1.0, abs=1e-9)
        assert sum(ex.next_distribution_given_motive.values()) == pytest.approx(1.0, abs=1e-9)
        for m in MOTIVES:
            assert sum(gen.motive_law(m, codes).values()) == pytest.approx(1.0, abs=1e-9)
        assert sum(ex.motive_posterior.values()) == pytest.approx(1.0, abs=1e-5)
        assert ex.motive in MOTIVES


def test_next_distribution_matches_sampled_frequencies_chi_square(gen):
    """Paths from a fixed first job, kept when the second job repeats it: the third job follows the exact law."""
    first = "41-2031.00"  # Retail Salespersons
    rng = np.random.default_rng(7)
    counts: Counter = Counter()
    for _ in range(12000):
        codes, _ = gen.sample_path(3, rng, first=first)
        if codes[1] == first:
            counts[codes[2]] += 1
    n = sum(counts.values())
    assert n > 1500
    law = gen.next_distribution([first, first])
    big = [c for c, p in law.items() if p * n >= 5]
    observed = [counts.get(c, 0) for c in big] + [n - sum(counts.get(c, 0) for c in big)]
    expected = [law[c] * n for c in big] + [n * (1 - sum(law[c] for c in big))]
    cells = [(o, e) for o, e in zip(observed, expected, strict=True) if e > 0]
    stat = sum((o - e) ** 2 / e for o, e in cells)
    assert stat < _chi2_critical(len(cells) - 1), (stat, len(cells))
    # the motive-free marginal law of the parent chain is a different law: the same test rejects it
    base = SyntheticCareerGenerator.next_distribution(gen, [first, first])
    stat_base = sum((counts.get(c, 0) - base.get(c, 1e-9) * n) ** 2 / (base.get(c, 1e-9) * n) for c in big)
    assert stat_base > _chi2_critical(len(big))


def test_history_only_ceiling_never_exceeds_the_perfect_reason_ceiling(gen, world):
    for ex in world.all():
        codes = [j["onet_code"] for j in ex.career["jobs"]]
        post = gen.motive_posterior(codes)
        expected_perfect = sum(p * max(gen.motive_law(m, codes).values()) for m, p in zip(MOTIVES, post, strict=True))
        assert max(ex.next_distribution.values()) <= expected_perfect + 1e-12
    ceilings = bayes_ceilings(world.all())
    assert ceilings["history_only"] < ceilings["perfect_reason"]
    assert world.stats["perfect_reason_accuracy"] == pytest.approx(ceilings["perfect_reason"], abs=1e-4)


def test_motive_never_enters_the_prompt(world):
    for ex in world.all()[:100]:
        assert set(ex.inputs().keys()) == {"history"}
        assert "motive" not in ex.history.lower() and "motive" not in str(ex.career).lower()


def test_motives_false_keeps_the_second_order_chain(taxonomy):
    old = load_synthetic(n_persons=20, seed=2, taxonomy=taxonomy)
    assert "motive" not in old.all()[0] and not old.stats["motives"]
    gen = SyntheticCareerGenerator(taxonomy, seed=2)
    ex = old.all()[0]
    assert ex.next_distribution == gen.next_distribution(ex)
