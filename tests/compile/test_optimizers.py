"""Every optimizer flag reaches the optimizer or is rejected; a compile that changes nothing says so."""

from __future__ import annotations

import json
import logging
import os

import dspy
import pytest

from compile.config import OPTIMIZER_FLAGS, OptimizeConfig
from compile.optimizers import build_optimizer, compile_program, describe_changes
from lms import usage
from tests.compile.test_optimize import DATA, config, scripted_lm
from tests.helpers.faulty_engine import faulty_lm


def _metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
    return 1.0


@pytest.mark.parametrize("name", ["bootstrap", "random_search", "mipro", "gepa"])
def test_every_flag_of_the_chosen_optimizer_reaches_it(name):
    flags = {"max_bootstrapped_demos": 3, "max_labeled_demos": 5, "num_candidate_programs": 2,
             "gepa_max_metric_calls": 7}
    cfg = OptimizeConfig(optimizer=name, **{k: v for k, v in flags.items() if name in OPTIMIZER_FLAGS[k]})
    opt = build_optimizer(cfg, _metric, teacher_lm=scripted_lm())
    seen = {
        "max_bootstrapped_demos": getattr(opt, "max_bootstrapped_demos", getattr(opt, "max_num_samples", None)),
        "max_labeled_demos": getattr(opt, "max_labeled_demos", None),
        "num_candidate_programs": getattr(opt, "num_candidate_sets", getattr(opt, "num_candidates", None)),
        "gepa_max_metric_calls": getattr(opt, "max_metric_calls", None),
    }
    for flag, users in OPTIMIZER_FLAGS.items():
        if name in users:
            assert seen[flag] == flags[flag], f"{flag} did not reach {name}"
    if name == "mipro":
        assert opt.auto is None  # auto="light" would override num_candidates and num_trials


def test_mipro_runs_num_candidate_programs_trials(monkeypatch):
    seen = {}
    monkeypatch.setattr(dspy.MIPROv2, "compile", lambda self, student, **kw: seen.update(kw) or student)
    cfg = OptimizeConfig(optimizer="mipro", num_candidate_programs=2)
    prog = dspy.Predict("history -> reason")
    compile_program(build_optimizer(cfg, _metric, teacher_lm=scripted_lm()), prog, [], [], cfg)
    assert seen["num_trials"] == 2


@pytest.mark.parametrize("flag,value,optimizer", [("gepa_max_metric_calls", 10, "bootstrap"),
                                                  ("num_candidate_programs", 8, "bootstrap"),
                                                  ("max_bootstrapped_demos", 4, "gepa")])
def test_a_flag_the_optimizer_ignores_is_rejected(flag, value, optimizer):
    with pytest.raises(ValueError, match=f"{flag}={value} has no effect with optimizer '{optimizer}'"):
        OptimizeConfig(optimizer=optimizer, **{flag: value})
    OptimizeConfig(optimizer="none", **{flag: value})  # optimizer none keeps the flags for the next run


def test_describe_changes_reports_demos_and_instruction_diffs():
    before = dspy.Predict("history -> reason")
    after = before.deepcopy()
    after.demos = [dspy.Example(history="h", reason="r")]
    after.signature = after.signature.with_instructions("Explain the move.")
    changes = describe_changes(before, after, "mipro")
    entry = changes["predictors"]["self"]
    assert changes["changed"] and entry["demos_after"] == 1 and entry["instruction_changed"]
    assert "+Explain the move." in entry["instruction_diff"]
    same = describe_changes(before, before.deepcopy(), "gepa")
    assert not same["changed"] and "changed nothing" in same["summary"]


@pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")
def test_gepa_whose_reflection_fails_is_reported_and_counted(tmp_path, monkeypatch, caplog):
    from compile.optimize import run_optimize

    real = build_optimizer

    def with_dead_reflection(cfg, metric, *, teacher_lm=None):
        opt = real(cfg, metric, teacher_lm=teacher_lm)
        dead = faulty_lm(scripted_lm(), fail=1.0)  # every reflection call fails
        usage.current().register(dead, "reflection", override=True)
        opt.reflection_lm = dead
        return opt

    monkeypatch.setattr("compile.optimize.build_optimizer", with_dead_reflection)
    caplog.set_level(logging.WARNING)
    cfg = config(tmp_path, optimizer="gepa", max_bootstrapped_demos=2, max_labeled_demos=2,
                 gepa_max_metric_calls=12, n_train=2, n_dev=2, n_test=0)
    res = run_optimize(cfg, teacher_lm=scripted_lm(), judge_lm=scripted_lm())
    assert not res["optimizer_changes"]["changed"]
    assert "optimizer gepa changed nothing" in caplog.text
    report = (tmp_path / "t" / "report.md").read_text()
    assert "optimizer gepa changed nothing" in report and "| reflection |" in report
    reflection = json.loads((tmp_path / "t" / "metrics.json").read_text())["lm_usage"]["reflection"]
    assert reflection["requests"] > 0 and reflection["errors"] == reflection["requests"]
