"""Input: every malformed career history gives a clear error naming the record and the field, or the
documented rule (control characters stripped, most recent N entries kept, duplicates dropped), logged.

Each case runs through the three entry points: ``CareerHistory.from_dict`` (dicts), the JSONL and CSV user-data
loaders (``careers.user_data``, files on disk) and the program (``NextOccupation(...)(history=dict)``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from rel_helpers import scripted_lm

from careers.history import CareerHistory, HistoryTypeError, HistoryValidationError
from careers.user_data import load_user_data, read_user_histories
from programs.next_occupation import NextOccupation

NEXT_YEAR = dt.date.today().year + 1
BIG = "x" * 100_000


def job(**kw):
    return {"title": "Cashier", "start_year": 2015, "end_year": 2018, **kw}


def hist(*jobs, **kw):
    return {"person_id": "p1", "jobs": list(jobs), **kw}


# (case id, history dict, field named in the error, words of the message)
BAD = [
    ("title_wrong_type", hist(job(title=123)), "jobs[0].title", "must be a string"),
    ("year_wrong_type", hist(job(start_year="soon")), "jobs[0].start_year", "must be a year"),
    ("year_float", hist(job(start_year=2015.5)), "jobs[0].start_year", "must be a year"),
    ("year_negative", hist(job(start_year=-5)), "jobs[0].start_year", "outside"),
    ("year_huge", hist(job(end_year=10**30)), "jobs[0].end_year", "outside"),
    ("year_bool", hist(job(start_year=True)), "jobs[0].start_year", "must be a year"),
    ("jobs_not_list", {"person_id": "p1", "jobs": "Cashier"}, "jobs", "must be a list"),
    ("job_not_object", hist("Cashier"), "jobs[0]", "valid dictionary"),
    ("missing_title", hist({"start_year": 2015}), "jobs[0].title", "required"),
    ("empty_title", hist(job(title=" \t ")), "jobs[0].title", "must not be empty"),
    ("missing_person_id", {"jobs": [job()]}, "person_id", "required"),
    ("missing_level", {"person_id": "p1", "education": [{"field": "Math"}]}, "education[0].level", "required"),
    ("end_before_start", hist(job(), job(title="Clerk", start_year=2019, end_year=2017)), "jobs[1]",
     "end_year 2017 is before start_year 2019"),
    ("future_year", hist(job(start_year=NEXT_YEAR, end_year=None)), "jobs[0].start_year", f"{NEXT_YEAR} is outside"),
    ("before_1900", hist(job(start_year=1850)), "jobs[0].start_year", "outside"),
    ("empty_history", {"person_id": "p1", "jobs": [], "education": []}, "history", "history is empty"),
    ("no_entries", {"person_id": "p1"}, "history", "history is empty"),
    ("title_100k", hist(job(title=BIG)), "jobs[0].title", "100000 characters long; the limit is 200"),
    ("non_utf8_bytes", hist(job(title=b"Cash\xffier")), "jobs[0].title", "not valid UTF-8"),
    ("lone_surrogate", hist(job(title="Cash\ud800ier")), "jobs[0].title", "lone surrogate"),
    ("unknown_field", hist(job(salary=5)), "jobs[0].salary", "unknown field"),
    ("huge_unknown_field", hist(job(**{"k" * 100_000: 1})), "jobs[0].kkkk", "unknown field"),
    ("year_huge_text", hist(job(start_year="9" * 100_000)), "jobs[0].start_year", "must be a year"),
    ("bad_onet_code", hist(job(onet_code="cashier")), "jobs[0].onet_code", "15-1252.00"),
    ("bad_age", hist(job(age=300)), "jobs[0].age", "between 10 and 100"),
    ("demographics_nested", hist(job(), demographics={"a": {"b": 1}}), "demographics.a", "valid"),
]
BAD_IDS = [c[0] for c in BAD]


@pytest.mark.parametrize(("case", "data", "field", "words"), BAD, ids=BAD_IDS)
def test_from_dict_rejects_with_record_and_field(case, data, field, words):
    with pytest.raises(HistoryValidationError) as info:
        CareerHistory.from_dict(data, record="user 7")
    msg = str(info.value)
    assert msg.startswith("user 7: "), msg
    assert field in msg and words in msg, msg
    assert len(msg) < 1000, "the error must not echo a 100,000-character value"


@pytest.mark.parametrize(("case", "data", "field", "words"), BAD, ids=BAD_IDS)
def test_program_rejects_the_same_dicts(case, data, field, words, taxonomy):
    lm = scripted_lm()
    prog = NextOccupation(lm=lm, taxonomy=taxonomy)
    with pytest.raises(HistoryValidationError) as info:
        prog(history=data)
    assert field in str(info.value) and words in str(info.value)
    assert lm.history == [], "a rejected history must not reach the LM"


def test_program_rejects_other_types_as_value_errors(taxonomy):
    prog = NextOccupation(lm=scripted_lm(), taxonomy=taxonomy)
    for bad in (42, None, ["Cashier"], b"\xff\xfe", 3.5, object()):
        with pytest.raises(ValueError) as info:
            prog(history=bad)
        assert str(info.value)
    with pytest.raises(HistoryTypeError):  # still a TypeError for callers that catch that
        prog(history=42)
    for bad in ("   ", "Cashier \ud800", '{"person_id": "1", "jobs": [' * 50_000, '{"a": ' + "9" * 5000 + "}"):
        with pytest.raises(HistoryValidationError):
            prog(history=bad)


def test_json_text_errors_are_validation_errors():
    for text in ("[" * 100_000, '{"person_id": ' + "9" * 5000 + "}", b"\xff\xfe{}", "{", "[1, 2]", "null"):
        with pytest.raises(HistoryValidationError) as info:
            CareerHistory.from_dict(text, record="line 3")
        assert str(info.value).startswith("line 3: ")


# ---------------------------------------------------------------------------------------------- documented rules
def test_control_characters_are_stripped():
    h = CareerHistory.from_dict(hist(job(title="Cash\x00ier\x1b[31m\u202e", employer="Ac\u200bme\x7f Inc")))
    assert h.jobs[0].title == "Cash ier [31m"
    assert h.jobs[0].employer == "Ac me Inc"
    text = h.to_prompt_text()
    assert not any(ch in text for ch in "\x00\x1b\u202e\u200b\x7f")


def test_more_than_max_jobs_keeps_the_most_recent_and_logs(caplog):
    jobs = [job(title=f"Job {i}", start_year=1960 + i, end_year=1960 + i) for i in range(30)]
    with caplog.at_level(logging.INFO, logger="careers.history"):
        h = CareerHistory.from_dict(hist(*reversed(jobs)), max_jobs=5, record="line 9")
    assert [j.title for j in h.jobs] == [f"Job {i}" for i in range(25, 30)]
    assert "line 9: 30 jobs entries: keeping the most recent 5" in caplog.text


def test_max_education_is_configurable_too(caplog):
    edu = [{"level": f"Course {i}", "start_year": 1990 + i, "end_year": 1990 + i} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="careers.history"):
        h = CareerHistory.from_dict({"person_id": "p", "education": edu}, max_education=2)
    assert [e.level for e in h.education] == ["Course 2", "Course 3"]
    assert "keeping the most recent 2" in caplog.text


def test_duplicates_are_dropped_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="careers.history"):
        h = CareerHistory.from_dict(hist(job(), job(), job(title="Clerk", start_year=2019, end_year=None), job()))
    assert [j.title for j in h.jobs] == ["Cashier", "Clerk"]
    assert "dropped duplicate" in caplog.text


def test_program_applies_the_rules_before_the_lm(taxonomy):
    lm = scripted_lm()
    prog = NextOccupation(lm=lm, taxonomy=taxonomy)
    jobs = [job(title=f"Job\x07 {i}", start_year=1950 + i, end_year=1950 + i) for i in range(60)]
    pred = prog(history=hist(*jobs, jobs[-1]))
    assert pred.occupation == "Cashiers"
    prompt = lm.history[0]["messages"][-1]["content"]
    assert "Job 59" in prompt and "Job 9 " not in prompt and "\x07" not in prompt
    assert prompt.count("Job 59") == 1  # the duplicate was dropped; 50 (DEFAULT_MAX_JOBS) kept


# ---------------------------------------------------------------------------------------------- JSONL files
def _jsonl(tmp_path, bad_line: str, name="users.jsonl"):
    good = json.dumps({"person_id": "ok", "jobs": [job()], "next": {"title": "Clerk", "onet_code": "41-2011.00"}})
    path = tmp_path / name
    path.write_bytes((good + "\n" + bad_line + "\n").encode("utf-8", "surrogatepass")
                     if isinstance(bad_line, str) else (good + "\n").encode() + bad_line + b"\n")
    return path


@pytest.mark.parametrize(("case", "data", "field", "words"),
                         [c for c in BAD if c[0] != "non_utf8_bytes"], ids=[i for i in BAD_IDS if i != "non_utf8_bytes"])
def test_jsonl_loader_names_file_line_and_field(case, data, field, words, tmp_path):
    path = _jsonl(tmp_path, json.dumps(data, ensure_ascii=False) if case != "lone_surrogate"
                  else json.dumps(data))  # json escapes the surrogate as \ud800
    with pytest.raises(ValueError) as info:
        read_user_histories(path)
    msg = str(info.value)
    assert f"{path}:2: " in msg and field in msg and words in msg, msg


@pytest.mark.parametrize(("bad", "words"), [
    (b'{"person_id": "p", "jobs": [{"title": "Cash\xffier"}]}', "not valid UTF-8"),
    (b'{"person_id": "p", "jobs": [', "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"person_id": "p", "jobs": [{"title": "a", "start_year": ' + b"9" * 5000 + b"}]}", "not valid JSON"),
    (b'["not", "an", "object"]', "must be a JSON object"),
    (b'{"person_id": "p", "jobs": [{"title": "a"}], "next": 5}', "next must be a job object"),
    (b'{"person_id": "p", "jobs": [{"title": "a"}], "next": {"title": ""}}', "next.title"),
    (b'{"person_id": "p", "jobs": [{"title": "a"}], "next": "x", "target": "y"}', "not both"),
])
def test_jsonl_loader_rejects_broken_lines(bad, words, tmp_path):
    path = _jsonl(tmp_path, bad)
    with pytest.raises(ValueError) as info:
        read_user_histories(path)
    assert f"{path}:2: " in str(info.value) and words in str(info.value), str(info.value)


def test_jsonl_loader_applies_rules_and_rejects_duplicate_persons(tmp_path, taxonomy, caplog):
    many = [job(title=f"Job\x00{i}", start_year=1950 + i, end_year=1950 + i, onet_code="41-2011.00")
            for i in range(60)]
    lines = [json.dumps({"person_id": "a", "jobs": many + [many[0]]})]
    path = tmp_path / "rules.jsonl"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    with caplog.at_level(logging.INFO):
        ((where, h, _, _),) = read_user_histories(path)
    assert len(h.jobs) == 50 and h.jobs[-1].title == "Job 59" and where == f"{path}:1"
    assert "keeping the most recent 50" in caplog.text
    splits = load_user_data(path, taxonomy)
    assert splits.stats["persons"] == 1
    path.write_text(lines[0] + "\n" + lines[0] + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r":2: person_id 'a' already used"):
        load_user_data(path, taxonomy)


# ---------------------------------------------------------------------------------------------- CSV files
HEADER = "person_id,kind,title,level,start_year,end_year,onet_code\n"


@pytest.mark.parametrize(("row", "field", "words"), [
    ("p2,job,,,2015,2016,", "title", "required"),
    ("p2,job,Cashier,,soon,,", "start_year", "must be a year"),
    ("p2,job,Cashier,,2015.5,,", "start_year", "must be a year"),
    ("p2,job,Cashier,,-3,,", "start_year", "must be a year"),
    ("p2,job,Cashier,,2019,2017,", "end_year", "end_year 2017 is before start_year 2019"),
    (f"p2,job,Cashier,,{NEXT_YEAR},,", "start_year", "outside"),
    ("p2,job," + BIG + ",,2015,,", "title", "100000 characters long"),
    ("p2,job,Cashier,,2015,,cashier", "onet_code", "15-1252.00"),
    ("p2,education,,,2010,2014,", "level", "required"),
    ("p2,pet,Rex,,,,", "kind", "must be 'job', 'education' or 'next'"),
    (",job,Cashier,,,,", "person_id", "required"),
    ("p2,job,Cashier,,2015,,,extra", "more cells", "header"),
])
def test_csv_loader_names_file_line_and_field(row, field, words, tmp_path):
    path = tmp_path / "users.csv"
    path.write_text(HEADER + "p1,job,Cashier,,2015,2016,\n" + row + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_user_histories(path)
    msg = str(info.value)
    assert f"{path}:3: " in msg and field in msg and words in msg, msg
    assert len(msg) < 1000


@pytest.mark.parametrize(("content", "words"), [
    (HEADER.encode() + b"p1,job,Cash\xffier,,2015,,\n", "not valid UTF-8"),
    (HEADER.encode() + b"p1,job," + b"y" * 200_000 + b",,2015,,\n", "malformed CSV"),
    (b"name,job\nx,y\n", "missing columns"),
    (b"person_id,kind,salary\np,job,5\n", "unknown columns"),
    (b"", "missing columns"),
    (HEADER.encode() + b"p1,next,Clerk,,,,\np1,next,Cook,,,,\n", "more than one 'next'"),
    (HEADER.encode() + b"p1,next,Clerk,,,,\n", "history is empty"),
])
def test_csv_loader_rejects_broken_files(content, words, tmp_path):
    path = tmp_path / "users.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_user_histories(path)
    assert str(path) in str(info.value) and words in str(info.value), str(info.value)


def test_csv_loader_applies_rules(tmp_path, caplog):
    rows = [f"p1,job,Job\x07\x00 {i},,{1950 + i},{1950 + i},\n" for i in range(60)]  # NUL, BEL: stripped
    path = tmp_path / "users.csv"
    path.write_text(HEADER + "".join(rows) + rows[-1], encoding="utf-8")
    with caplog.at_level(logging.INFO):
        ((_, h, _, _),) = read_user_histories(path)
    assert len(h.jobs) == 50 and h.jobs[-1].title == "Job 59" and h.jobs[0].title == "Job 10"
    assert "keeping the most recent 50" in caplog.text


def test_user_data_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_user_histories(tmp_path / "nope.jsonl")
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="unknown format"):
        read_user_histories(tmp_path / "x.xml")
