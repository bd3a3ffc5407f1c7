"""``python -m programs.predict``: unlabeled histories in, predictions.jsonl out (resumable, bad lines reported)."""

from __future__ import annotations

import json

import pytest

from programs import predict

JOBS = [("Cashier", "41-2011.00"), ("Stock Clerk", "53-7065.00"), ("Retail Salesperson", "41-2031.00")]


def _person(i: int, n_jobs: int = 2) -> dict:
    return {"person_id": f"p{i}", "jobs": [{"title": JOBS[(i + j) % 3][0], "onet_code": JOBS[(i + j) % 3][1],
                                            "start_year": 2000 + 2 * j} for j in range(n_jobs)]}


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(_person(i, 3)) + "\n" for i in range(30)))
    return path


@pytest.fixture
def input_file(tmp_path):
    lines = [json.dumps(_person(i)) for i in range(6)]
    lines.insert(2, "{not json")
    lines.insert(4, json.dumps({"person_id": "bad", "jobs": [{"start_year": 2001}]}))  # a job without title
    lines.append(json.dumps(_person(0)))  # duplicate id
    path = tmp_path / "people.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _args(tmp_path, input_file, train_file, *extra):
    return ["--program", "markov", "--dataset", f"jsonl:{train_file}", "--input", str(input_file),
            "--output_dir", str(tmp_path / "runs"), "--run_name", "r", "--threads", "1", *extra]


def test_skip_reports_bad_lines_and_predicts_the_rest(tmp_path, input_file, train_file, taxonomy_data_dir, capsys):
    assert predict.main(_args(tmp_path, input_file, train_file, "--on_bad_lines", "skip")) == 0
    run = tmp_path / "runs" / "r"
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"p{i}" for i in range(6)]
    first = records[0]
    assert first["onet_code"] and first["url"] == f"https://www.onetonline.org/link/summary/{first['onet_code']}"
    assert first["ranked"][0]["title"] == first["occupation"] and first["ranked"][0]["url"].endswith(first["onet_code"])
    assert first["ranking"] == "baseline_probability" and first["record"].endswith("people.jsonl:1")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["predicted"], summary["skipped_bad_lines"], summary["failed"]) == (6, 3, 0)
    where = [b["where"].rsplit(":", 1)[1] for b in summary["bad_lines"]]
    assert where == ["3", "5", "9"]
    assert "not valid JSON" in summary["bad_lines"][0]["reason"] and "title" in summary["bad_lines"][1]["reason"]
    assert "duplicate person_id 'p0'" in summary["bad_lines"][2]["reason"]
    err = capsys.readouterr().err
    assert "people.jsonl:3" in err and "people.jsonl:5" in err
    assert {"config.yaml", "provenance.json", "summary.json", "predictions.jsonl"} <= {p.name for p in run.iterdir()}


def test_error_mode_stops_at_the_first_bad_line(tmp_path, input_file, train_file, taxonomy_data_dir, capsys):
    assert predict.main(_args(tmp_path, input_file, train_file)) == 1
    assert "people.jsonl:3: not valid JSON" in capsys.readouterr().err


def test_rerun_resumes_by_record_id(tmp_path, input_file, train_file, taxonomy_data_dir):
    args = _args(tmp_path, input_file, train_file, "--on_bad_lines", "skip")
    assert predict.main(args) == 0
    out = tmp_path / "runs" / "r" / "predictions.jsonl"
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # killed while writing the third record
    assert predict.main(args) == 0
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [f"p{i}" for i in range(6)] and len(ids) == 6
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert (summary["already_predicted"], summary["predicted"]) == (2, 4)


def test_csv_input_and_lm_program_from_a_saved_run(tmp_path, taxonomy):
    import dspy

    from programs.next_occupation import NextOccupation

    csv_file = tmp_path / "people.csv"
    csv_file.write_text("person_id,kind,title,start_year\n1,job,Cashier,2010\n1,job,Stock Clerk,2012\n"
                        "2,job,Nurse Aide,2011\n2,hobby,Chess,2012\n3,education,,2001\n")
    saved = tmp_path / "saved"
    NextOccupation(mode="direct", taxonomy=taxonomy).save(saved)
    lm = dspy.utils.DummyLM([{"occupation": "Registered Nurses"}] * 3)
    config = predict.PredictConfig(program=str(saved), input=str(csv_file), output_dir=str(tmp_path / "runs"),
                                   on_bad_lines="skip", threads=1)
    with dspy.context(lm=lm):
        summary = predict.run_predict(config)
    assert (summary["predicted"], summary["skipped_bad_lines"]) == (1, 2), summary  # person 2 is skipped whole
    assert summary["bad_lines"][0]["where"].endswith("people.csv:5") and "kind" in summary["bad_lines"][0]["reason"]
    assert summary["bad_lines"][1]["where"].endswith("people.csv:6")  # person 3: an education row without level
    assert summary["ranking"] == {"text": 1}
    out = next((tmp_path / "runs").glob("predict-*/predictions.jsonl"))
    record = json.loads(out.read_text().splitlines()[0])
    assert record["occupation"] == "Registered Nurses" and record["onet_code"] == "29-1141.00"


def test_config_validation():
    with pytest.raises(ValueError, match="input"):
        predict.PredictConfig()
    with pytest.raises(ValueError, match="on_bad_lines"):
        predict.PredictConfig(input="x.jsonl", on_bad_lines="warn")


def test_a_saved_hybrid_run_predicts_with_its_baseline(tmp_path, taxonomy):
    import dspy

    from careers.history import CareerHistory
    from programs.factory import build_baseline
    from programs.hybrid import HybridNextOccupation

    people = tmp_path / "people.jsonl"
    people.write_text(json.dumps({"person_id": "1", "jobs": [
        {"title": "Cashier", "onet_code": "41-2011.00", "start_year": 2008},
        {"title": "Nursing Assistant", "onet_code": "31-1131.00", "start_year": 2011}]}) + "\n")
    train = []
    for i in range(4):
        career = CareerHistory.from_dict({"person_id": str(i), "jobs": [
            {"title": "Nursing Assistant", "onet_code": "31-1131.00", "start_year": 2000},
            {"title": "Registered Nurse", "onet_code": "29-1141.00", "start_year": 2004}]})
        train.append(career.prefix(1).to_example(career.jobs[1], occupation="Registered Nurses"))
    baseline = build_baseline("return_markov", taxonomy=taxonomy, trainset=train)
    saved = tmp_path / "hybrid"
    HybridNextOccupation(baseline, mode="joint", taxonomy=taxonomy, answer_set="candidates").save(saved)
    lm = dspy.utils.DummyLM([{"reason": "Care work.", "occupation": "Astronomers"}])
    config = predict.PredictConfig(program=str(saved), input=str(people), output_dir=str(tmp_path / "runs"), threads=1)
    with dspy.context(lm=lm):
        summary = predict.run_predict(config)
    assert summary["predicted"] == 1
    record = json.loads(next((tmp_path / "runs").glob("predict-*/predictions.jsonl")).read_text().splitlines()[0])
    # the loaded program is the hybrid (baseline candidates, answer set kept): the answer is the top candidate
    assert record["occupation"] == "Registered Nurses"
