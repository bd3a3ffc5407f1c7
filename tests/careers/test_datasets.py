"""load_dataset: one entry point for every loader."""

from __future__ import annotations

import json

import pytest

from careers.datasets import SPECS, load_dataset


def test_dispatch_to_file_loaders(tmp_path, fixtures, taxonomy_data_dir):
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"person_id": "a", "jobs": [{"title": "Clerk", "start_year": 2001}],
                                "target": "43-9061.00"}) + "\n")
    assert load_dataset(f"jsonl:{path}", data_dir=taxonomy_data_dir).summary()["total"]["examples"] == 1
    csv_path = tmp_path / "u.csv"
    csv_path.write_text("person_id,kind,title,onet_code\na,job,Clerk,43-9061.00\na,next,Cashier,41-2011.00\n")
    assert load_dataset(f"csv:{csv_path}", data_dir=taxonomy_data_dir).stats["transitions"] == 1
    jobhop = load_dataset(f"jobhop:{fixtures / 'jobhop_tiny.csv'}", data_dir=taxonomy_data_dir)
    assert jobhop.name == "jobhop" and jobhop.stats["transitions"] >= 1
    assert load_dataset(f"decorte:{fixtures / 'decorte_tiny.csv'}", data_dir=taxonomy_data_dir).name == "decorte"
    kw = load_dataset(f"karrierewege:{fixtures / 'karrierewege_tiny.jsonl'}", data_dir=taxonomy_data_dir)
    assert kw.name == "karrierewege"


def test_synthetic_spec(taxonomy_data_dir):
    splits = load_dataset("synthetic", data_dir=taxonomy_data_dir, seed=1, n_persons=20)
    assert splits.name == "synthetic" and splits.summary()["total"]["persons"] == 20


@pytest.mark.parametrize("spec", ["nlsy", "parquet:x.parquet", "", "jsonl:", "synthetic:foo"])
def test_bad_specs(spec):
    with pytest.raises(ValueError, match="valid specs|needs a file path"):
        load_dataset(spec)


def test_unknown_spec_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        load_dataset("nlsy")
    assert all(s in str(err.value) for s in SPECS)
