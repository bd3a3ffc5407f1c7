"""User data: JSONL and CSV long format, labels, and malformed rows named by file, line and field."""

from __future__ import annotations

import json

import pytest

from careers.user_data import load_user_data


def _jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = [
    {"person_id": "a", "education": [{"level": "Bachelor's degree", "field": "Computer Science", "end_year": 2010}],
     "jobs": [{"title": "Help desk tech", "start_year": 2010, "end_year": 2012, "onet_code": "15-1232.00"},
              {"title": "Junior developer", "start_year": 2012, "end_year": 2016, "onet_code": "15-1252.00"}],
     "next": {"title": "Software Developers", "start_year": 2016}},
    {"person_id": "b", "jobs": [{"title": "Cashier", "start_year": 2001, "end_year": 2003}], "target": "41-2031.00"},
    {"person_id": "c", "jobs": [{"title": "Baker", "start_year": 2001}]},
]


def test_jsonl_one_example_per_transition(tmp_path, taxonomy):
    splits = load_user_data(_jsonl(tmp_path / "u.jsonl", GOOD), taxonomy, fractions=(1.0, 0.0, 0.0))
    exs = splits.train
    assert splits.stats == {"persons": 3, "transitions": 3, "unlabeled_persons": 1, "skipped_unmatched": 0}
    a1, a2, b = exs
    assert a1.onet_code == "15-1252.00" and a1.occupation == "Software Developers"
    assert "Help desk tech" in a1.history and "Junior developer" not in a1.history
    assert a2.onet_code == "15-1252.00" and "Junior developer" in a2.history  # normalized from the title
    assert b.onet_code == "41-2031.00" and b.occupation == taxonomy.title("41-2031.00")
    kept = load_user_data(tmp_path / "u.jsonl", taxonomy, keep_unlabeled=True)
    assert len(kept.all()) == 4 and sum(1 for e in kept.all() if "gold_codes" not in e) == 1


def test_unmatched_gold_skip_or_error(tmp_path, taxonomy):
    rows = [{"person_id": "x", "jobs": [{"title": "Clerk", "start_year": 2000}], "next": {"title": "zqxw vbnm"}}]
    path = _jsonl(tmp_path / "u.jsonl", rows)
    splits = load_user_data(path, taxonomy)
    assert splits.stats["skipped_unmatched"] == 1 and not splits.all()
    with pytest.raises(ValueError, match=r"u\.jsonl:1: next: title 'zqxw vbnm' matches no O\*NET"):
        load_user_data(path, taxonomy, on_unmatched="error")


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ({"person_id": "p", "jobs": [{"title": "Clerk", "start_year": "20x1"}]}, r"u\.jsonl:2: jobs\[0\]\.start_year"),
        ({"person_id": "p", "jobs": [{"title": "Clerk", "start_year": 2005, "end_year": 2001}]},
         r"u\.jsonl:2: jobs\[0\].*end_year 2001 is before start_year 2005"),
        ({"person_id": "p", "jobs": [{"title": "  "}]}, r"u\.jsonl:2: jobs\[0\]\.title"),
        ({"person_id": "p", "jobs": [], "education": []}, r"u\.jsonl:2: .*history is empty"),
        ({"person_id": "p", "jobs": [{"title": "Clerk"}], "salary": 3}, r"u\.jsonl:2: salary: unknown field"),
        ({"person_id": "p", "jobs": [{"title": "Clerk"}], "next": {"title": "X", "onet_code": "15"}},
         r"u\.jsonl:2: next\.onet_code"),
        ('{"person_id": "p", "jobs": [', r"u\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"u\.jsonl:2: each line must be a JSON object"),
        ({"person_id": "a", "jobs": [{"title": "Clerk"}]}, r"u\.jsonl:2: person_id 'a' already used at .*u\.jsonl:1"),
    ],
)
def test_jsonl_errors_name_file_line_and_field(tmp_path, taxonomy, line, pattern):
    path = _jsonl(tmp_path / "u.jsonl", [GOOD[0], line])
    with pytest.raises(ValueError, match=pattern):
        load_user_data(path, taxonomy)


CSV = """person_id,kind,title,level,employer,field,institution,start_year,end_year,onet_code
a,education,,Bachelor's degree,,Economics,State University,2004,2008,
a,job,Sales rep,,Acme,,,2008,2011,41-4012.00
b,job,Cashier,,,,,2001,2003,
a,job,Account manager,,Acme,,,2011,2015,
a,next,Sales Managers,,,,,2015,,
"""


def test_csv_long_format(tmp_path, taxonomy):
    path = tmp_path / "u.csv"
    path.write_text(CSV)
    splits = load_user_data(path, taxonomy, fractions=(1.0, 0.0, 0.0))
    assert splits.stats["persons"] == 2 and splits.stats["unlabeled_persons"] == 1
    first, second = splits.train
    assert "Bachelor's degree in Economics, State University (2004-2008)" in first.history
    assert "Sales rep at Acme" in first.history and first.gold_codes
    assert second.onet_code == "11-2022.00" and second.occupation == "Sales Managers"
    assert "Account manager" in second.history


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("person_id,title\na,Clerk\n", r"u\.csv: missing columns \['kind'\]"),
        ("person_id,kind,title,salary\na,job,Clerk,3\n", r"u\.csv: unknown columns \['salary'\]"),
        ("person_id,kind,title\na,job,Clerk\na,intern,Clerk\n", r"u\.csv:3: kind must be"),
        ("person_id,kind,title,start_year\na,job,Clerk,2001\na,job,Clerk,19x5\n", r"u\.csv:3: start_year"),
        ("person_id,kind,title\na,job,\n", r"u\.csv:2: title"),
        ("person_id,kind,level\n,education,PhD\n", r"u\.csv:2: person_id is required"),
        ("person_id,kind,title\na,next,X\na,next,Y\n", r"u\.csv:3: kind: .*more than one 'next'"),
        ("person_id,kind,title\na,job,Clerk,extra\n", r"u\.csv:2: more cells"),
    ],
)
def test_csv_errors_name_file_line_and_field(tmp_path, taxonomy, text, pattern):
    path = tmp_path / "u.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        load_user_data(path, taxonomy)


def test_bad_format_and_missing_file(tmp_path):
    (tmp_path / "u.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        load_user_data(tmp_path / "u.txt")
    with pytest.raises(FileNotFoundError):
        load_user_data(tmp_path / "nope.jsonl")


def test_csv_year_order_is_reported_on_end_year(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("person_id,kind,title,start_year,end_year\na,job,Clerk,2005,2001\n")
    with pytest.raises(ValueError, match=r"u\.csv:2: end_year: end_year 2001 is before start_year 2005"):
        load_user_data(path)


def test_unknown_gold_code_is_named(tmp_path, taxonomy):
    path = _jsonl(tmp_path / "u.jsonl", [{"person_id": "a", "jobs": [{"title": "Clerk"}], "target": "99-9999.00"}])
    with pytest.raises(ValueError, match=r"u\.jsonl:1: target\.onet_code: '99-9999.00' is not an O\*NET"):
        load_user_data(path, taxonomy)
