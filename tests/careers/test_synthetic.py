"""Synthetic careers: determinism, exact next distributions and their convergence."""

from __future__ import annotations

import numpy as np
import pytest

from careers.synthetic import SyntheticCareerGenerator, bayes_optimal_accuracy
from careers.synthetic_dataset import load_synthetic


@pytest.fixture(scope="module")
def gen(taxonomy):
    return SyntheticCareerGenerator(taxonomy, seed=0)


def _tv(counts: dict[str, int], dist: dict[str, float]) -> float:
    n = sum(counts.values())
    keys = set(counts) | set(dist)
    return 0.5 * sum(abs(counts.get(k, 0) / n - dist.get(k, 0.0)) for k in keys)


def test_next_distribution_is_a_law_with_stay_and_return(gen, taxonomy):
    cur = "15-1252.00"
    d1 = gen.next_distribution([cur])
    assert sum(d1.values()) == pytest.approx(1.0)
    assert d1[cur] == pytest.approx(gen.p_stay)
    assert set(d1) - {cur} <= {r.code for r in taxonomy.related(cur)}
    prev = "43-9061.00"
    d2 = gen.next_distribution([prev, cur])
    assert sum(d2.values()) == pytest.approx(1.0)
    assert d2[prev] >= gen.p_return
    assert gen.next_distribution([cur, cur]) == d1  # a stay gives no return option
    # tiers: a Primary-Short neighbour in the same zone outweighs a Supplemental one in the same zone
    rel = taxonomy.related(cur)
    same = [r for r in rel if taxonomy.job_zone(r.code) == taxonomy.job_zone(cur)]
    short = [r for r in same if r.tier == "Primary-Short"]
    supp = [r for r in same if r.tier == "Supplemental"]
    if short and supp:
        assert d1[short[0].code] == pytest.approx(4 * d1[supp[0].code])
    with pytest.raises(ValueError, match="no jobs"):
        gen.next_distribution([])
    with pytest.raises(ValueError, match="state space"):
        gen.next_distribution(["99-9999.00"])


def test_generation_is_seeded(taxonomy, gen):
    again = SyntheticCareerGenerator(taxonomy, seed=0)
    assert gen.generate_person(5) == again.generate_person(5)
    other = SyntheticCareerGenerator(taxonomy, seed=1)
    assert [other.generate_person(i).jobs for i in range(5)] != [gen.generate_person(i).jobs for i in range(5)]


def test_examples_carry_their_exact_distribution(gen, taxonomy):
    person = gen.generate_person(3)
    exs = gen.examples(person)
    assert len(exs) == len(person.jobs) - 1
    for i, ex in enumerate(exs, 1):
        assert ex.next_distribution == gen.next_distribution(person.prefix(i))
        assert ex.next_distribution == gen.next_distribution(ex)
        assert ex.onet_code == person.jobs[i].onet_code and ex.gold_codes == [ex.onet_code]
        assert ex.occupation == taxonomy.title(ex.onet_code)
        assert ex.onet_code in ex.next_distribution


def test_careers_are_plausible(gen, taxonomy):
    official = noisy = 0
    for i in range(60):
        p = gen.generate_person(i)
        assert gen.min_jobs <= len(p.jobs) <= gen.max_jobs and p.education
        edu_end = max(e.end_year for e in p.education)
        assert p.jobs[0].start_year >= edu_end and p.jobs[0].age >= 16
        for a, b in zip(p.jobs, p.jobs[1:], strict=False):
            assert a.start_year <= a.end_year <= b.start_year <= a.end_year + 1
            assert 1 <= a.end_year - a.start_year + 1 <= 8
        for j in p.jobs:
            if j.title == taxonomy.title(j.onet_code):
                official += 1
            else:
                noisy += 1
    assert noisy > official > 0  # titles are mostly reported/alternate titles


def test_empirical_frequencies_converge_to_next_distribution(gen):
    rng = np.random.default_rng(123)
    n = 4000
    for prefix in (["15-1252.00"], ["43-9061.00", "15-1252.00"]):
        counts: dict[str, int] = {}
        for _ in range(n):
            nxt = gen.sample_codes(len(prefix) + 1, rng, prefix)[-1]
            counts[nxt] = counts.get(nxt, 0) + 1
        dist = gen.next_distribution(prefix)
        assert _tv(counts, dist) < 0.05
        # chi-square over outcomes with expected count >= 5: statistic near its degrees of freedom
        keys = [k for k, p in dist.items() if p * n >= 5]
        chi2 = sum((counts.get(k, 0) - n * dist[k]) ** 2 / (n * dist[k]) for k in keys)
        assert chi2 < len(keys) - 1 + 5 * np.sqrt(2 * (len(keys) - 1))


def test_bayes_optimal_accuracy():
    import dspy

    exs = [dspy.Example(next_distribution={"a": 0.7, "b": 0.3}), dspy.Example(next_distribution={"a": 0.2, "c": 0.8})]
    assert bayes_optimal_accuracy(exs) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="next_distribution"):
        bayes_optimal_accuracy([dspy.Example(x=1)])
    with pytest.raises(ValueError, match="no examples"):
        bayes_optimal_accuracy([])


def test_load_synthetic_splits_by_person(taxonomy):
    splits = load_synthetic(n_persons=150, seed=2, taxonomy=taxonomy)
    assert splits.name == "synthetic" and splits.summary()["total"]["persons"] == 150
    assert not splits.persons("train") & (splits.persons("dev") | splits.persons("test"))
    acc = splits.stats["bayes_optimal_accuracy"]
    assert 0.05 < acc < 0.5 and acc == pytest.approx(bayes_optimal_accuracy(splits.all()), abs=1e-4)
    with pytest.raises(ValueError, match="n_persons"):
        load_synthetic(n_persons=0, taxonomy=taxonomy)
