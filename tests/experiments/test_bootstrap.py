import numpy as np
import pytest

from experiments.bootstrap import bootstrap_ci, paired_bootstrap_diff


def test_bernoulli_ci_covers_truth_at_nominal_rate():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        x = rng.random(300) < 0.3
        ci = bootstrap_ci(x, n_boot=400, seed=trial)
        covered += ci.low <= 0.3 <= ci.high
    assert 0.90 <= covered / 200 <= 0.99


def test_ci_width_matches_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, size=1000)
    ci = bootstrap_ci(x, n_boot=3000)
    expected = 2 * 1.96 * 2.0 / np.sqrt(1000)
    assert ci.high - ci.low == pytest.approx(expected, rel=0.15)
    assert ci.low < 5.0 < ci.high


def test_cluster_bootstrap_is_wider_for_correlated_persons():
    rng = np.random.default_rng(2)
    person = np.repeat(np.arange(100), 5)
    x = np.repeat(rng.random(100) < 0.5, 5).astype(float)  # identical outcomes within a person
    naive = bootstrap_ci(x, n_boot=2000)
    clustered = bootstrap_ci(x, groups=[str(p) for p in person], n_boot=2000)
    assert (clustered.high - clustered.low) > 1.8 * (naive.high - naive.low)


def test_paired_difference_detects_shift_and_not_noise():
    rng = np.random.default_rng(3)
    base = (rng.random(500) < 0.4).astype(float)
    better = np.where(rng.random(500) < 0.2, 1.0, base)
    diff, p = paired_bootstrap_diff(better, base)
    assert diff.low > 0 and p < 0.01
    diff0, p0 = paired_bootstrap_diff(base, base.copy())
    assert diff0.mean == 0 and diff0.low == 0 and diff0.high == 0


def test_errors_and_empty():
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap_diff([1, 0], [1])
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci([1, 0], groups=["a"])
    assert bootstrap_ci([]).n == 0
