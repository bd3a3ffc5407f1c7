"""NLSY79 loader: a tiny panel in the mirror's format, malformed files, and the real mirror when present."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from careers.nlsy79 import education_level, load_nlsy79
from careers.splits import person_split

NAN = float("nan")
# person 1: code 23 (1983-1986, a missing year inside), 337 (1987-1988), 4 (1989), 746 (1990, no O*NET candidate)
ROWS = [
    # person_id, survey_year, age, hgc, occ1980, occ_title
    (1, 1982, 21, NAN, NAN, None),
    (1, 1983, 22, 12, 23, "Accountants and auditors"),
    (1, 1984, 23, 12, 23, "Accountants and auditors"),
    (1, 1985, 24, NAN, NAN, None),
    (1, 1986, 25, 13, 23, "Accountants and auditors"),
    (1, 1987, 26, 14, 337, "Bookkeepers and accounting and auditing clerks"),
    (1, 1988, 27, 16, 337, "Bookkeepers and accounting and auditing clerks"),
    (1, 1989, 28, 16, 4, "Chief executives and public administrators"),
    (1, 1990, 29, 16, 746, None),
    (2, 1983, 19, 11, 337, "Bookkeepers and accounting and auditing clerks"),
    (2, 1984, 20, 11, 337, "Bookkeepers and accounting and auditing clerks"),
    (3, 1983, 19, 12, NAN, None),
]
CROSSWALK = """occ1980,occ1990,occ1990_title,method,census2010,census2010_title,soc2010,onetsoc2019,onetsoc2019_title,n_onet_candidates
0,999,N/A and unknown,ipums_occ1990_to_acs2010,,,,,,0
4,4,Chief executives,ipums_occ1990_to_acs2010,10,Chief executives,11-1011,11-1011.00,Chief Executives,2
4,4,Chief executives,ipums_occ1990_to_acs2010,10,Chief executives,11-1011,11-1011.03,Chief Sustainability Officers,2
23,23,Accountants and auditors,ipums_occ1990_to_acs2010,800,Accountants,13-2011,13-2011.00,Accountants and Auditors,2
23,23,Accountants and auditors,ipums_occ1990_to_acs2010,800,Accountants,13-2011,13-2011.00,Accountants and Auditors,2
23,23,Accountants and auditors,ipums_occ1990_to_acs2010,,,,,,2
23,23,Accountants and auditors,ipums_occ1990_to_acs2010,850,Appraisers,13-2081,13-2081.00,Tax Examiners,2
337,337,Bookkeepers,ipums_occ1990_to_acs2010,5120,Bookkeeping,43-3031,43-3031.00,"Bookkeeping, Accounting, and Auditing Clerks",1
"""


def _panel(rows=ROWS, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["person_id", "survey_year", "age_at_survey_year", "hgc", "occ1980", "occ_title"])
    df = df.assign(birth_year=1961, birth_month=5, sex=2, race_cohort=1, sample_id=1, occ1980_raw=-4,
                   occ1990=df["occ1980"], n_onet_candidates=1)
    return df.drop(columns=list(drop))


def _write(root: Path, df: pd.DataFrame, crosswalk: str = CROSSWALK) -> Path:
    (root / "nlsy79").mkdir(parents=True)
    df.to_csv(root / "nlsy79" / "nlsy79_person_year_occ1980.csv.gz", index=False)
    (root / "nlsy79" / "occ1980_to_onetsoc2019_candidates.csv").write_text(crosswalk)
    return root


def test_tiny_panel_spells_gold_and_education(tmp_path):
    root = _write(tmp_path, _panel())
    splits = load_nlsy79(root, fractions=(1.0, 0.0, 0.0))
    assert splits.stats["transitions"] == 2
    assert splits.stats["skipped_no_candidates"] == 1  # 4 -> 746 has no O*NET candidate
    assert splits.stats["persons_with_occupation"] == 2 and splits.stats["persons_with_examples"] == 1
    first, second = splits.train
    assert first.person_id == "1"
    assert first.states == ["occ1980:23"]
    assert first.gold_codes == ["43-3031.00"] and first.onet_code == "43-3031.00"
    assert first.occupation == "Bookkeeping, Accounting, and Auditing Clerks"
    assert first.gold_state == "occ1980:337" and first.source_code == "occ1980:337" and first.year == 1987
    assert "1983-1986: Accountants and auditors (age 22)" in first.history
    assert "Some college" in first.history  # hgc 13 at the end of the 1983-1986 spell
    job = first.career["jobs"][0]
    assert job["onet_candidates"] == ["13-2011.00", "13-2081.00"]  # NaN row dropped, duplicate removed
    assert second.gold_codes == ["11-1011.00", "11-1011.03"] and second.onet_code == "11-1011.00"
    assert second.occupation == "Chief Executives"
    assert second.states == ["occ1980:23", "occ1980:337"]
    assert "Bachelor's degree" in second.history  # hgc 16 by 1988
    assert "female" not in second.history and "demographics" not in second.career


def test_demographics_only_on_request(tmp_path):
    root = _write(tmp_path, _panel())
    ex = load_nlsy79(root, fractions=(1.0, 0.0, 0.0), include_demographics=True).train[0]
    assert "sex female" in ex.history and "race_ethnicity Hispanic" in ex.history


def test_min_history_jobs_and_max_persons(tmp_path):
    root = _write(tmp_path, _panel())
    assert [e.occupation for e in load_nlsy79(root, min_history_jobs=2).all()] == ["Chief Executives"]
    assert load_nlsy79(root, max_persons=1).stats["persons_with_occupation"] == 1
    with pytest.raises(ValueError, match="min_history_jobs"):
        load_nlsy79(root, min_history_jobs=0)


def test_education_levels():
    assert [education_level(g) for g in (8, 12, 14, 16, 17, 19)] == [
        "Less than high school", "High school diploma", "Some college", "Bachelor's degree",
        "Some graduate school", "Graduate degree"]


def test_missing_columns_are_named(tmp_path):
    root = _write(tmp_path, _panel(drop=("hgc", "occ_title")))
    with pytest.raises(ValueError, match=r"nlsy79_person_year_occ1980\.csv\.gz.*missing columns \['hgc', 'occ_title'\]"):
        load_nlsy79(root)


def test_crosswalk_missing_columns(tmp_path):
    root = _write(tmp_path / "a", _panel(), crosswalk="occ1980,foo\n1,2\n")
    with pytest.raises(ValueError, match=r"occ1980_to_onetsoc2019_candidates\.csv.*onetsoc2019"):
        load_nlsy79(root)


def test_bad_values_name_line_and_field(tmp_path):
    rows = list(ROWS)
    rows[3] = ("x7", 1985, 24, NAN, NAN, None)
    root = _write(tmp_path, _panel(rows))
    with pytest.raises(ValueError, match=r"line 5: person_id must be an integer"):
        load_nlsy79(root)


def test_missing_file(tmp_path):
    (tmp_path / "nlsy79").mkdir()
    with pytest.raises(FileNotFoundError, match="nlsy79_person_year_occ1980"):
        load_nlsy79(tmp_path)


def test_real_mirror_subset(mirror, taxonomy):
    splits = load_nlsy79(mirror, max_persons=1500)
    assert splits.stats["persons_with_occupation"] == 1500
    assert 1200 <= splits.summary()["total"]["persons"] <= 1500
    assert not splits.persons("train") & (splits.persons("dev") | splits.persons("test"))
    for ex in splits.all()[:300]:
        assert ex.onet_code in ex.gold_codes and ex.occupation == taxonomy.title(ex.onet_code)
        assert all(c in taxonomy.occupations for c in ex.gold_codes)
        assert "(age " in ex.history and "sex" not in ex.history


@pytest.mark.integration
def test_real_mirror_counts_are_plausible(mirror, taxonomy):
    t0 = time.perf_counter()
    splits = load_nlsy79(mirror)
    seconds = time.perf_counter() - t0
    summary = splits.summary()
    print("NLSY79", summary, f"{seconds:.1f}s")
    total = summary["total"]
    assert 8000 <= total["persons"] <= 11000
    assert 40000 <= total["examples"] <= 100000
    assert splits.stats["skipped_no_candidates"] < 0.02 * total["examples"]
    for name in ("train", "dev", "test"):
        share = summary[name]["persons"] / total["persons"]
        assert share == pytest.approx({"train": 0.8, "dev": 0.1, "test": 0.1}[name], abs=0.03)
    assert not splits.persons("train") & splits.persons("test")
    assert not splits.persons("dev") & (splits.persons("train") | splits.persons("test"))
    for ex in splits.dev[:500] + splits.test[:500]:
        assert ex.onet_code in ex.gold_codes and ex.occupation == taxonomy.title(ex.onet_code)
    assert all(person_split(ex.person_id, 0) == "dev" for ex in splits.dev)
