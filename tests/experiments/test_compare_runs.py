"""experiments.compare_runs: paired comparison of programs.evaluate run directories (and programs.evaluate.read_run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.compare_runs import CompareConfig, compare_runs, main
from programs.evaluate import EvalConfig, read_run, run_evaluation


@pytest.fixture
def runs(taxonomy, tiny_splits, tmp_path):
    """frequency and markov runs on the same dev examples (A->B, B->C, D->A, A->C; markov 3/4, frequency 2/4)."""
    out = {}
    for program in ("frequency", "markov"):
        cfg = EvalConfig(dataset="tiny", program=program, output_dir=str(tmp_path), run_name=program, k=3)
        out[program] = run_evaluation(cfg, splits=tiny_splits, taxonomy=taxonomy)["run_dir"]
    return out


def test_paired_difference_against_the_reference(runs, tmp_path):
    res = compare_runs(CompareConfig(runs=[runs["frequency"], runs["markov"]], metrics=["AccEM", "MRR"], n_boot=200))
    assert res["n"] == 4 and res["split"] == "dev" and [r["program"] for r in res["runs"]] == ["frequency", "markov"]
    ref, other = res["runs"]
    assert ref["scores"]["AccEM"]["mean"] == pytest.approx(0.5) and "vs_reference" not in ref
    assert other["scores"]["AccEM"]["mean"] == pytest.approx(0.75)
    diff = other["vs_reference"]["AccEM"]
    assert diff["mean"] == pytest.approx(0.25) and diff["low"] <= diff["mean"] <= diff["high"]
    assert "reference" in res["table"] and "+" not in res["table"].split("\n")[0]
    assert "| markov (markov) | 75.0 [" in res["table"]
    json.dumps(res)  # plain data, no Interval objects


def test_cli_writes_table_and_json(runs, tmp_path, capsys):
    out = tmp_path / "cmp" / "table.md"
    assert main(["--runs", f"{runs['markov']},{runs['frequency']}", "--metrics", "AccEM", "--n_boot", "200",
                 "--output", str(out)]) == 0
    assert "Δ AccEM" in capsys.readouterr().out
    assert "-25.0" in out.read_text() and json.loads(out.with_suffix(".json").read_text())["n"] == 4


def test_mismatched_examples_and_bad_inputs_are_errors(runs, tmp_path, capsys):
    other = tmp_path / "cut"
    other.mkdir()
    src = Path(runs["markov"])
    (other / "metrics.json").write_text((src / "metrics.json").read_text())
    lines = (src / "predictions.jsonl").read_text().splitlines()
    (other / "predictions.jsonl").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(ValueError, match="1 of it missing.*same --split"):
        compare_runs(CompareConfig(runs=[runs["markov"], str(other)], n_boot=200))
    with pytest.raises(ValueError, match="no per-example score"):
        compare_runs(CompareConfig(runs=[runs["markov"], runs["frequency"]], metrics=["Acc@9"], n_boot=200))
    metrics = json.loads((src / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "split": "test"}))
    (other / "predictions.jsonl").write_text((src / "predictions.jsonl").read_text())
    with pytest.raises(ValueError, match="split 'test' differs"):
        compare_runs(CompareConfig(runs=[runs["markov"], str(other)], n_boot=200))
    (other / "predictions.jsonl").write_text('{"person_id": "x"}\n')
    with pytest.raises(ValueError, match="record 1: missing"):
        read_run(other)
    with pytest.raises(FileNotFoundError, match="programs.evaluate"):
        read_run(tmp_path / "nowhere")
    assert main(["--runs", runs["markov"]]) == 2  # one run: nothing to compare
    assert "at least two" in capsys.readouterr().err
    assert main(["--runs", f"{runs['markov']},{tmp_path / 'nowhere'}"]) == 1
