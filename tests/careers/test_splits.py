"""Person-level splits."""

from __future__ import annotations

import dspy
import pytest

from careers.splits import DatasetSplits, person_split, person_unit


def test_person_split_is_deterministic_and_seeded():
    ids = [f"p{i}" for i in range(2000)]
    a = [person_split(i, seed=0) for i in ids]
    assert a == [person_split(i, seed=0) for i in ids]
    b = [person_split(i, seed=1) for i in ids]
    assert a != b
    assert set(a) == {"train", "dev", "test"}
    assert person_split(7, 3) == person_split("7", 3)
    # the hash is fixed across runs and machines (sha256), not Python's salted hash()
    assert person_unit("p0", 0) == pytest.approx(person_unit("p0", 0))


def test_person_split_fractions():
    ids = [str(i) for i in range(10000)]
    counts = {s: 0 for s in ("train", "dev", "test")}
    for i in ids:
        counts[person_split(i, 0, (0.6, 0.3, 0.1))] += 1
    assert counts["train"] / 10000 == pytest.approx(0.6, abs=0.02)
    assert counts["dev"] / 10000 == pytest.approx(0.3, abs=0.02)
    assert all(person_split(i, 0, (1.0, 0.0, 0.0)) == "train" for i in ids[:200])


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.5, 0.6, 0.1), (-0.1, 0.6, 0.5), (float("nan"), 0.5, 0.5)])
def test_person_split_rejects_bad_fractions(bad):
    with pytest.raises(ValueError, match="fractions"):
        person_split("x", 0, bad)


def _examples():
    return [dspy.Example(person_id=f"p{i % 50}", history=f"h{i}").with_inputs("history") for i in range(300)]


def test_dataset_splits_keep_persons_together():
    splits = DatasetSplits.from_examples(_examples(), seed=4, name="toy")
    persons = [splits.persons(s) for s in ("train", "dev", "test")]
    assert not (persons[0] & persons[1]) and not (persons[0] & persons[2]) and not (persons[1] & persons[2])
    summary = splits.summary()
    assert summary["total"] == {"examples": 300, "persons": 50}
    assert len(splits.all()) == 300
    assert splits.get("dev") is splits.dev and splits["test"] is splits.test
    again = DatasetSplits.from_examples(_examples(), seed=4)
    assert [e.history for e in again.train] == [e.history for e in splits.train]


def test_dataset_splits_errors():
    splits = DatasetSplits.from_examples(_examples())
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        splits.get("validation")
    with pytest.raises(ValueError, match="person_id"):
        DatasetSplits.from_examples([dspy.Example(history="x")])
