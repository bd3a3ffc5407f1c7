"""programs.evaluate (run_evaluation, CLI) and the run-directory utilities of runkit (run_dir, files, config)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from programs.evaluate import EvalConfig, main, results_table, run_evaluation
from runkit.config import ConfigError, load_config
from runkit.files import JsonlWriter, read_jsonl, redact, write_config, write_json
from runkit.run_dir import make_run_dir

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------------- run_evaluation
def test_run_evaluation_injected(tiny_splits, taxonomy, tmp_path):
    results = {}
    for program in ("frequency", "markov", "return_markov"):
        cfg = EvalConfig(dataset="tiny", program=program, output_dir=str(tmp_path), run_name=program, k=3)
        results[program] = res = run_evaluation(cfg, splits=tiny_splits, taxonomy=taxonomy)
        run_dir = Path(res["run_dir"])
        assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.json", "predictions.jsonl",
                                                       "model.json"}
        assert json.loads((run_dir / "metrics.json").read_text())["metrics"]["n"] == 4
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["program"] == program
        preds = read_jsonl(run_dir / "predictions.jsonl")
        assert len(preds) == 4 and {"gold_codes", "onet_code", "ranked", "scores"} <= set(preds[0])
    # dev transitions: A->B, B->C, D->A, A->C. Markov: A->B, B->C, D->A hit; A->C misses: 3/4
    assert results["markov"]["metrics"]["AccEM"] == pytest.approx(75.0)
    # frequency: golds B and C tie at 4; the tie goes to the smaller key (C = 11-3021.00), B after C
    assert results["frequency"]["metrics"]["AccEM"] == pytest.approx(50.0)
    table = results_table(list(results.values()))
    for column in ("AccEM", "AccRM", "Acc@3", "MRR", "SOC-major", "n"):
        assert column in table


def test_config_validation():
    with pytest.raises(ValueError, match="program"):
        EvalConfig(program="lstm")
    with pytest.raises(ValueError, match="split"):
        EvalConfig(split="validation")
    with pytest.raises(ValueError, match="hybrid_options apply to --program hybrid"):
        EvalConfig(program="joint", hybrid_options="{answer_set: candidates}")
    with pytest.raises(ValueError, match="unknown keys"):
        EvalConfig(program="hybrid", hybrid_options="{answers: candidates}")
    with pytest.raises(ValueError, match="hybrid_options must be a mapping"):
        EvalConfig(program="hybrid", hybrid_options="candidates")
    assert EvalConfig(program="hybrid", hybrid_options="{mode: joint}").hybrid_options == {"mode": "joint"}


needs_datasets = pytest.mark.skipif(importlib.util.find_spec("careers.datasets") is None,
                                    reason="careers.datasets is not there yet")


@needs_datasets
def test_cli_on_jsonl_fixture(taxonomy_data_dir, tmp_path, capsys):
    spec = f"jsonl:{FIXTURES / 'tiny_careers.jsonl'}"
    rc = main(["--dataset", spec, "--program", "markov", "--split", "dev", "--data-dir", str(taxonomy_data_dir),
               "--output-dir", str(tmp_path), "--run-name", "cli", "--k", "3", "--log_level", "WARNING"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "AccEM" in out and "Acc@3" in out
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["metrics"]["n"] > 0 and metrics["n_train"] > 0
    assert metrics["dataset"] == spec


def test_cli_config_file_and_errors(tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("program: markov\nsplit: dev\nbogus: 1\n")
    assert main(["--config", str(cfg)]) == 2
    assert "bogus" in capsys.readouterr().err


# ---------------------------------------------------------------------- run_dir
def test_make_run_dir(tmp_path):
    a = make_run_dir(tmp_path, prefix="markov")
    b = make_run_dir(tmp_path, prefix="markov")
    assert a != b and a.name.startswith("markov-") and a.is_dir() and b.is_dir()
    named = make_run_dir(tmp_path / "runs", "exp1")
    assert named == tmp_path / "runs" / "exp1"
    (named / "x").write_text("1")
    with pytest.raises(FileExistsError, match="exp1"):
        make_run_dir(tmp_path / "runs", "exp1")


def test_write_config_redacts_secrets(tmp_path):
    @dataclasses.dataclass
    class Cfg:
        model: str = "gemma"
        api_key: str = "sk-123"
        nested: dict = dataclasses.field(default_factory=lambda: {"hf_token": "hf_x", "Password": "p", "n": 3})
        out: Path = Path("runs")

    path = write_config(tmp_path, Cfg())
    data = yaml.safe_load(path.read_text())
    assert data == {"model": "gemma", "api_key": "***", "nested": {"hf_token": "***", "Password": "***", "n": 3},
                    "out": "runs"}
    assert "sk-123" not in path.read_text()
    assert redact({"secret_name": None}) == {"secret_name": None}


def test_write_json_atomic(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": (1, 2), "p": Path("x")})
    assert json.loads(path.read_text()) == {"a": [1, 2], "p": "x"}
    write_json(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left behind


def test_jsonl_writer_and_truncated_line(tmp_path):
    path = tmp_path / "p.jsonl"
    with JsonlWriter(path) as out:
        out.write({"i": 1})
        out.write({"i": 2})
    with JsonlWriter(path) as out:  # appends
        out.write({"i": 3})
    assert [r["i"] for r in read_jsonl(path)] == [1, 2, 3]
    with open(path, "a") as fh:
        fh.write('{"i": 4, "trunc')
    assert [r["i"] for r in read_jsonl(path)] == [1, 2, 3]
    path.write_text('{"i": 1}\n{bad\n{"i": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)


@dataclasses.dataclass
class _Cfg:
    name: str = dataclasses.field(default="x", metadata={"help": "A name."})
    n: int = dataclasses.field(default=1, metadata={"help": "A count."})
    rate: float = dataclasses.field(default=0.5, metadata={"help": "A rate."})
    flag: bool = dataclasses.field(default=False, metadata={"help": "A flag."})
    limit: int | None = dataclasses.field(default=None, metadata={"help": "Optional limit."})
    tags: list[str] = dataclasses.field(default_factory=list, metadata={"help": "Tags."})


def test_load_config_yaml_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: from_yaml\nn: 5\nrate: 1\ntags: [a, b]\n")
    cfg = load_config(_Cfg, ["--config", str(cfg_file), "--n", "7", "--flag", "true", "--limit", "none"])
    assert cfg == _Cfg(name="from_yaml", n=7, rate=1.0, flag=True, limit=None, tags=["a", "b"])
    assert load_config(_Cfg, ["--limit", "3", "--tags", "x,y"]) == _Cfg(limit=3, tags=["x", "y"])
    assert load_config(_Cfg, []) == _Cfg()


def test_load_config_errors(tmp_path):
    bad_key = tmp_path / "k.yaml"
    bad_key.write_text("nme: typo\n")
    with pytest.raises(ConfigError, match="unknown key 'nme'"):
        load_config(_Cfg, ["--config", str(bad_key)])
    bad_type = tmp_path / "t.yaml"
    bad_type.write_text("n: many\n")
    with pytest.raises(ConfigError, match="n: expected an integer"):
        load_config(_Cfg, ["--config", str(bad_type)])
    with pytest.raises(ConfigError, match="--rate: expected a number"):
        load_config(_Cfg, ["--rate", "fast"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Cfg, ["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(SystemExit):
        load_config(_Cfg, ["--unknown", "1"])

    @dataclasses.dataclass
    class NoHelp:
        x: int = 1

    with pytest.raises(TypeError, match="help"):
        load_config(NoHelp, [])


def test_jsonl_writer_drops_interrupted_line_before_appending(tmp_path):
    from runkit.files import JsonlWriter, read_jsonl

    path = tmp_path / "c.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')  # killed mid-write
    with JsonlWriter(path) as w:
        w.write({"a": 3})
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]
    with JsonlWriter(path, mode="w") as w:
        w.write({"b": 1})
    assert read_jsonl(path) == [{"b": 1}]


@pytest.mark.parametrize("program", ["two_step", "joint", "direct", "hybrid"])
def test_lm_programs_evaluate_with_dummy_lm(tmp_path, taxonomy, program):
    import json

    from dspy.utils.dummies import DummyLM

    from programs.evaluate import EvalConfig, run_evaluation

    answers = {
        "`[[ ## factuality ## ]]`": {"errors": "none", "factuality": "4"},
        "`[[ ## coherence ## ]]`": {"justification": "ok", "coherence": "5"},
        "`[[ ## utility ## ]]`": {"justification": "ok", "utility": "3"},
        "starting with the field `[[ ## occupation ## ]]`": {"occupation": "Cashiers"},
        "starting with the field `[[ ## reason ## ]]`": {"reason": "Stays in retail.", "occupation": "Cashiers"},
    }
    cfg = EvalConfig(dataset=f"jsonl:{FIXTURES / 'tiny_careers.jsonl'}", program=program, split="dev", output_dir=str(tmp_path),
                     run_name="r", threads=2, judge_lm="dummy")
    res = run_evaluation(cfg, taxonomy=taxonomy, lm=DummyLM(answers), judge_lm=DummyLM(answers))
    m = res["metrics"]
    assert m["n"] > 0 and m["errors"] == 0
    rows = [json.loads(x) for x in (tmp_path / "r" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["occupation"] == "Cashiers" and r["onet_code"] == "41-2011.00" for r in rows)
    provenance = json.loads((tmp_path / "r" / "provenance.json").read_text())  # updated at the end of the run
    assert provenance["lm_usage"] == res["lm_usage"] and "loaded" in provenance["lm_head"]
    if program == "direct":
        assert m.get("judge_factuality") is None and rows[0]["reason"] is None
    else:
        assert m["judge_factuality"] == 4 and m["judge_utility"] == 3 and rows[0]["judge"]["coherence"] == 5


def test_hybrid_options_reach_the_hybrid_program(tmp_path, taxonomy):
    from dspy.utils.dummies import DummyLM

    answers = {"starting with the field `[[ ## reason ## ]]`": {"reason": "Stays.", "occupation": "Astronomers"}}
    cfg = EvalConfig(dataset=f"jsonl:{FIXTURES / 'tiny_careers.jsonl'}", program="hybrid", split="dev",
                     output_dir=str(tmp_path), run_name="r", threads=2,
                     hybrid_options="{mode: joint, answer_set: candidates, k_candidates: 2}")
    res = run_evaluation(cfg, taxonomy=taxonomy, lm=DummyLM(answers))
    assert res["metrics"]["n"] > 0 and res["metrics"]["errors"] == 0
    rows = [json.loads(x) for x in (tmp_path / "r" / "predictions.jsonl").read_text().splitlines()]
    # "Astronomers" is no candidate of the fitted baseline: each answer is the baseline's first candidate instead
    assert all(r["occupation"] != "Astronomers" and len(r["ranked"]) <= 2 for r in rows)


def test_synthetic_world_options_evaluate_on_the_compile_runs_world(taxonomy_data_dir, tmp_path):
    from careers.datasets import load_splits

    with pytest.raises(ValueError, match="--dataset synthetic only"):
        EvalConfig(dataset="nlsy79", motives=True)
    with pytest.raises(ValueError, match="synthetic_persons must be >= 10"):
        EvalConfig(synthetic_persons=3)
    rc = main(["--dataset", "synthetic", "--synthetic_persons", "120", "--motives", "true", "--program", "markov",
               "--split", "dev", "--data-dir", str(taxonomy_data_dir), "--output-dir", str(tmp_path),
               "--run-name", "motives", "--log_level", "WARNING"])
    assert rc == 0
    world = load_splits("synthetic", taxonomy_data_dir, 0, synthetic_persons=120, motives=True)
    default = load_splits("synthetic", taxonomy_data_dir, 0)
    preds = read_jsonl(tmp_path / "motives" / "predictions.jsonl")
    assert len(preds) == len(world.dev) != len(default.dev)
    assert [p["person_id"] for p in preds] == [ex.person_id for ex in world.dev]
    assert yaml.safe_load((tmp_path / "motives" / "config.yaml").read_text())["motives"] is True
