"""ESCO-coded datasets (JobHop, Karrierewege, Decorte et al.) mapped to O*NET candidate sets."""

from __future__ import annotations

import pytest

from careers.esco import EscoCrosswalk, load_decorte, load_jobhop, load_karrierewege, parse_year

ALL_TRAIN = (1.0, 0.0, 0.0)


def test_crosswalk_lookups(tiny_crosswalk):
    occ = tiny_crosswalk.lookup(code="2512.2")
    assert occ.onet_codes == ("15-1252.00", "15-1253.00")
    assert occ.onet_titles == ("Software Developers", "Software Quality Assurance Analysts and Testers")
    assert tiny_crosswalk.lookup(uri="https://data.europa.eu/esco/occupation/test-2512-2/") is occ
    assert tiny_crosswalk.lookup(label="Software Analyst") is occ
    assert tiny_crosswalk.lookup(code="0110.10").onet_codes == ()
    assert tiny_crosswalk.lookup(code="9999.9") is None


def test_real_crosswalk(taxonomy_data_dir, taxonomy):
    cw = EscoCrosswalk.load(taxonomy_data_dir)
    assert len(cw.occupations) == 3007
    assert sum(1 for o in cw.occupations if o.onet_codes) == 2922
    assert sum(1 for o in cw.occupations if len(o.onet_codes) > 1) == 85
    assert all(c in taxonomy.occupations for o in cw.occupations for c in o.onet_codes)
    assert cw.lookup(code="2512.2").onet_codes[0] == "15-1252.00"


def test_parse_year():
    assert parse_year("Q3 1996", "f:1", "start_date") == 1996
    assert parse_year("2015-03-01", "f:1", "x") == 2015
    assert parse_year("March 2015", "f:1", "x") == 2015
    assert parse_year(2001, "f:1", "x") == 2001
    for empty in (None, "", "null", "Present", float("nan")):
        assert parse_year(empty, "f:1", "x") is None
    with pytest.raises(ValueError, match="f:3: end_date: cannot read a year"):
        parse_year("sometime", "f:3", "end_date")


def test_jobhop(fixtures, tiny_crosswalk):
    splits = load_jobhop(fixtures / "jobhop_tiny.csv", crosswalk=tiny_crosswalk, fractions=ALL_TRAIN)
    s = splits.stats
    assert (s["rows"], s["persons"], s["transitions"]) == (10, 3, 4)
    assert (s["skipped_unmapped"], s["dropped_undated"], s["dropped_unknown"]) == (1, 1, 1)
    assert s["unmapped_experiences"] == 2  # lieutenant (no O*NET code) and "unknown"
    exs = {(e.person_id, len(e.states)): e for e in splits.train}
    first = exs[("0", 1)]
    assert first.gold_codes == ["15-1252.00", "15-1253.00"] and first.onet_code == "15-1252.00"
    assert first.occupation == "Software Developers" and first.source_code == "esco:2512.2"
    assert "2000-2002: ICT help desk agent" in first.history and "Master" in first.history
    assert first.career["jobs"][0]["onet_code"] == "15-1232.00"
    # lieutenant stays in the history (no candidates) but is never a gold
    last = exs[("0", 4)]
    assert last.occupation == "Transportation, Storage, and Distribution Managers"
    assert "lieutenant" in last.history and last.states[-1] == "esco:0110.10"
    assert exs[("1", 1)].onet_code == "13-2011.00"


def test_karrierewege(fixtures, tiny_crosswalk):
    splits = load_karrierewege(fixtures / "karrierewege_tiny.jsonl", crosswalk=tiny_crosswalk, fractions=ALL_TRAIN)
    assert splits.stats["transitions"] == 3 and splits.stats["skipped_unmapped"] == 1
    k1 = [e for e in splits.train if e.person_id == "k1"]
    assert [e.occupation for e in k1] == ["Software Developers", "Computer Systems Analysts"]
    assert "2012-2015: ICT help desk agent" in k1[0].history
    k2 = [e for e in splits.train if e.person_id == "k2"]
    assert len(k2) == 1 and "astronaut" in k2[0].history and k2[0].onet_code == "13-2011.00"


def test_karrierewege_column_override(tmp_path, tiny_crosswalk):
    path = tmp_path / "k.csv"
    path.write_text("cv,occ,from\n1,accountant,2001\n1,move manager,2005\n")
    splits = load_karrierewege(path, crosswalk=tiny_crosswalk, columns={"person": "cv", "label": "occ", "start": "from"},
                               fractions=ALL_TRAIN)
    assert [e.onet_code for e in splits.train] == ["11-3071.00"]
    with pytest.raises(ValueError, match="column 'nope'"):
        load_karrierewege(path, crosswalk=tiny_crosswalk, columns={"person": "nope"})


def test_decorte(fixtures, tiny_crosswalk):
    splits = load_decorte(fixtures / "decorte_tiny.csv", crosswalk=tiny_crosswalk, fractions=ALL_TRAIN)
    assert splits.stats["persons"] == 2 and splits.stats["transitions"] == 3
    d1 = [e for e in splits.train if e.person_id == "d1"]
    assert "Helpdesk Agent L1" in d1[1].history and "Junior Developer" in d1[1].history  # free-text titles
    assert d1[1].occupation == "Computer Systems Analysts"
    assert d1[1].career["jobs"][1]["end_year"] == 2016
    d2 = [e for e in splits.train if e.person_id == "d2"]
    assert d2[0].onet_code == "11-3071.00"


@pytest.mark.parametrize(
    ("loader", "name", "text", "pattern"),
    [
        (load_jobhop, "j.csv", "resume_id,start_date\n1,Q1 2000\n", r"j\.csv: missing the ESCO occupation column"),
        (load_jobhop, "j.csv", "matched_code\n2411.1\n", r"j\.csv: missing the person column"),
        (load_jobhop, "j.csv", "resume_id,matched_code,start_date\n1,2411.1,Q1 2000\n1,2411.1,soon\n",
         r"j\.csv:3: start_date: cannot read a year from 'soon'"),
        (load_jobhop, "j.csv", "resume_id,matched_code,start_date,end_date\n1,2411.1,2005,2001\n1,2411.1,2006,\n",
         r"j\.csv:2: end_year: end_year 2001 is before start_year 2005"),
        (load_jobhop, "j.csv", "resume_id,matched_code\n", r"j\.csv: no data rows"),
        (load_jobhop, "j.csv", "resume_id,matched_code\n,2411.1\n", r"j\.csv:2: resume_id: person id is empty"),
        (load_jobhop, "j.parquet", "x", r"j\.parquet: unsupported format"),
        (load_karrierewege, "k.jsonl", '{"_id": 1, "ESCO_uri": "x"}\n{"_id": 1,\n', r"k\.jsonl:2: not valid JSON"),
        (load_decorte, "d.csv", "identifier,title\n1,x\n", r"d\.csv: expected wide columns"),
        (load_decorte, "d.csv", "identifier,title_0,ESCO_title_0,start_0\n1,Clerk,accountant,whenever\n",
         r"d\.csv:2: start_0: cannot read a year"),
    ],
)
def test_malformed_files(tmp_path, tiny_crosswalk, loader, name, text, pattern):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        loader(path, crosswalk=tiny_crosswalk)
