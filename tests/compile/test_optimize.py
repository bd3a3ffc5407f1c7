import json
import os

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from compile.candidates import example_id
from compile.config import OptimizeConfig
from compile.export import live_request
from compile.optimize import main, run_optimize
from programs.next_occupation import NextOccupation

DATA = os.environ.get("NEXTOCC_DATA_DIR", os.path.join(os.path.dirname(__file__), "../../../shared/data"))


def scripted_lm(reason="Moved from stocking shelves to the register and stayed in retail."):
    answers = {
        "`[[ ## factuality ## ]]`": {"errors": "none", "factuality": "5"},
        "`[[ ## coherence ## ]]`": {"justification": "ordered", "coherence": "4"},
        "`[[ ## utility ## ]]`": {"justification": "supports it", "utility": "4"},
        "starting with the field `[[ ## occupation ## ]]`": {"occupation": "Cashiers"},
        "starting with the field `[[ ## reason ## ]]`": {"reason": reason, "occupation": "Cashiers"},
    }
    return DummyLM(answers)


def config(tmp_path, **kw):
    base = dict(dataset="synthetic", data_dir=DATA, synthetic_persons=60, n_train=3, n_dev=2, n_test=2,
                candidates_per_person=2, optimizer="bootstrap", max_bootstrapped_demos=1, max_labeled_demos=1,
                threads=1, output_dir=str(tmp_path), run_name="t", teacher_lm="dummy", judge_lm="dummy")
    base.update(kw)
    return OptimizeConfig(**base)


@pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")
def test_run_writes_every_artifact_and_resumes(tmp_path):
    cfg = config(tmp_path, mode="joint")
    res = run_optimize(cfg, teacher_lm=scripted_lm(), judge_lm=scripted_lm())
    run = tmp_path / "t"
    for name in ("candidates.jsonl", "program.json", "metrics.json", "sft_joint.jsonl", "sft_reason.jsonl",
                 "sft_predict.jsonl", "sft_direct.jsonl", "dpo_reason.jsonl", "data_card.md", "report.md", "config.yaml", "log.txt"):
        assert (run / name).exists(), name
    assert res["candidates"]["generated"] == 6 and res["oracles"] == 3
    assert res["exports"]["sft_joint.jsonl"] == 9  # reason + predict + joint rows
    assert {"zero_shot/dev", "optimized/test"} <= set(res["evaluation"])
    assert res["evaluation"]["zero_shot/dev"]["judge_factuality"] == 5
    # resume: nothing regenerated
    res2 = run_optimize(cfg, teacher_lm=scripted_lm(), judge_lm=scripted_lm())
    assert res2["candidates"]["generated"] == 0 and res2["candidates"]["skipped"] == 6
    assert len((run / "candidates.jsonl").read_text().splitlines()) == 6
    # the run directory loads as the optimized program; provenance.json records the code and machine
    from programs.next_occupation import NextOccupation

    loaded = NextOccupation.load(run, lm=scripted_lm())
    assert loaded.mode == "joint"
    assert [len(p.demos) for _, p in loaded.named_predictors()] == \
        [len(p["demos"]) for p in json.loads((run / "program.json").read_text()).values() if "demos" in p]
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["packages"]["dspy"] and prov["machine"]["cpu"]["model"] and "dirty" in prov["git"]


@pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")
def test_export_is_byte_equal_to_the_programs_live_request(tmp_path):
    cfg = config(tmp_path, optimizer="none", n_dev=0, n_test=0)
    run_optimize(cfg, teacher_lm=scripted_lm(), judge_lm=scripted_lm())
    cands = [json.loads(x) for x in (tmp_path / "t" / "candidates.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (tmp_path / "t" / "sft_reason.jsonl").read_text().splitlines()]
    prog = NextOccupation(mode="two_step", lm=scripted_lm())
    history = cands[0]["history"]
    live_reason = live_request(prog.reasoner, {"history": history})
    assert any(json.dumps(r["prompt"]) == json.dumps(live_reason) for r in rows)
    pred_rows = [json.loads(x) for x in (tmp_path / "t" / "sft_predict.jsonl").read_text().splitlines()]
    reason = cands[0]["reason"]
    live = live_request(prog.predictor, {"history": history, "reason": reason})
    assert any(json.dumps(r["prompt"]) == json.dumps(live) for r in pred_rows)
    # the live request is what the LM actually receives
    lm = scripted_lm()
    with dspy.context(lm=lm):
        prog.reasoner(history=history)
    sent = lm.history[-1]["messages"]
    assert [m["content"] for m in sent] == [m["content"] for m in live_reason]


@pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")
def test_failing_teacher_is_recorded_and_max_errors_stops(tmp_path):
    from runkit.run_dir import RunFailed
    from tests.helpers.faulty_engine import faulty_lm

    teacher = faulty_lm(scripted_lm(), fail=1.0)
    with pytest.raises(RunFailed, match="no usable candidate: 0 of 6"):
        run_optimize(config(tmp_path, optimizer="none", n_dev=0, n_test=0, retries=0, max_errors=10),
                     teacher_lm=teacher, judge_lm=scripted_lm())
    failed = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["candidates"]["errors"] == 6
    assert failed["lm_usage"]["teacher"]["errors"] == 6 and "injected" in failed["lm_usage"]["teacher"]["last_error"]
    assert "failed" in (tmp_path / "t" / "report.md").read_text()
    from compile.candidates import TooManyErrors

    with pytest.raises(TooManyErrors, match="max_errors=1"):
        run_optimize(config(tmp_path, optimizer="none", run_name="u", retries=0, max_errors=1),
                     teacher_lm=faulty_lm(scripted_lm(), fail=1.0), judge_lm=scripted_lm())


def test_cli_rejects_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: synthetic\noptimizer: simulated_annealing\n")
    assert main(["--config", str(bad)]) == 2
    assert "optimizer" in capsys.readouterr().err
    bad.write_text("datset: synthetic\n")
    assert main(["--config", str(bad)]) == 2
    assert "datset" in capsys.readouterr().err
    bad.write_text("dataset: synthetic\nmetric_threshold: 1.5\n")
    assert main(["--config", str(bad)]) == 2
    assert "metric_threshold" in capsys.readouterr().err
    bad.write_text("dataset: synthetic\njudge_lm: {model: openai/gpt-4.1-mini, api_key: sk-123}\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "judge_lm" in err and "api_key_env" in err and "sk-123" not in err
    assert main(["--teacher_lm", "{model: hosted_vllm/t, api_base: http://h:8000/v1, temprature: 0.7}"]) == 2
    assert "temprature" in capsys.readouterr().err


def test_per_role_lm_specs_from_yaml_and_flags(tmp_path):
    from compile.config import OptimizeConfig
    from lms.resolve import lm_spec
    from runkit.config import load_config

    def _lm_spec(spec, cfg, role="lm"):  # how compile.optimize applies the run's defaults to a role's spec
        return lm_spec(spec, role=role, api_base=cfg.api_base, max_tokens=cfg.max_tokens)

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("teacher_lm: {model: hosted_vllm/qwen, api_base: 'http://gpu:8000/v1', temperature: 0.8}\n"
                        "api_base: http://default:1/v1\n")
    cfg = load_config(OptimizeConfig, ["--config", str(cfg_file), "--judge_lm",
                                       "{model: openai/gpt-4.1-mini, api_key_env: OPENAI_API_KEY, num_retries: 5}"])
    teacher = _lm_spec(cfg.teacher_lm, cfg, "teacher_lm")
    judge = _lm_spec(cfg.judge_lm, cfg, "judge_lm")
    assert teacher == {"model": "hosted_vllm/qwen", "api_base": "http://gpu:8000/v1", "temperature": 0.8,
                       "max_tokens": cfg.max_tokens}
    assert judge == {"model": "openai/gpt-4.1-mini", "api_key_env": "OPENAI_API_KEY", "num_retries": 5,
                     "api_base": "http://default:1/v1", "max_tokens": cfg.max_tokens}
    # a local model takes the run's per-call budget too (the demo's 64 tokens), never remote-only keys
    assert _lm_spec("local:gemma-3-270m", cfg) == {"model": "local:gemma-3-270m", "max_tokens": cfg.max_tokens}
    assert _lm_spec("{model: local:gemma-3-270m, max_tokens: 32}", cfg)["max_tokens"] == 32


def test_study_takes_lm_flags(tmp_path):
    from compile.study import CompileStudyConfig, base_compile_config
    from runkit.config import load_config

    study = load_config(CompileStudyConfig, ["--teacher_lm", "{model: hosted_vllm/t, api_base: http://h:8000/v1}",
                                             "--judge_lm", "openai/gpt-4.1-mini"])
    base = base_compile_config(study)
    assert base["teacher_lm"] == {"model": "hosted_vllm/t", "api_base": "http://h:8000/v1"}
    assert base["judge_lm"] == "openai/gpt-4.1-mini"


def test_example_ids_used_for_resume_are_per_transition():
    a = dspy.Example(person_id="1", history="x").with_inputs("history")
    b = dspy.Example(person_id="1", history="y").with_inputs("history")
    assert example_id(a) != example_id(b)


@pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")
def test_failed_candidates_are_retried_on_resume(tmp_path):
    from runkit.run_dir import RunFailed
    from tests.helpers.faulty_engine import faulty_lm

    cfg = config(tmp_path, optimizer="none", n_dev=0, n_test=0, retries=0, max_errors=10)
    with pytest.raises(RunFailed):
        run_optimize(cfg, teacher_lm=faulty_lm(scripted_lm(), fail=1.0), judge_lm=scripted_lm())
    second = run_optimize(cfg, teacher_lm=scripted_lm(), judge_lm=scripted_lm())
    assert second["candidates"]["generated"] == 6 and second["oracles"] == 3
    assert second["selection"]["candidates"] == 6 and second["selection"]["generation_errors"] == 0
    third = run_optimize(cfg, teacher_lm=scripted_lm(), judge_lm=scripted_lm())
    assert third["candidates"]["generated"] == 0
