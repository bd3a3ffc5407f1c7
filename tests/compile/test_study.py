import json
import os

import pytest
import yaml

from compile.study import CompileStudyConfig, run_study
from tests.compile.test_optimize import DATA, scripted_lm

pytestmark = pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")


def test_study_runs_resumes_and_writes_outputs(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(dict(dataset="synthetic", data_dir=DATA, synthetic_persons=60, n_train=3, n_dev=2,
                                        n_test=0, optimizer="bootstrap", threads=1, teacher_lm="dummy",
                                        judge_lm="dummy")))
    cfg = CompileStudyConfig(compile_config=str(base), study_dir=str(tmp_path / "study"), n_trials=2,
                             candidates_choices=[1, 2], n_startup_trials=1)
    lms = dict(teacher_lm=scripted_lm(), judge_lm=scripted_lm())
    first = run_study(cfg, **lms)
    assert first["n_trials"] == 2 and (tmp_path / "study" / "study.db").exists()
    cfg.n_trials = 3  # the same study continues (load_if_exists)
    second = run_study(cfg, **lms)
    assert second["n_trials"] == 3
    assert [t["number"] for t in second["trials"]] == [0, 1, 2]
    for t in second["trials"]:
        if t["state"] == "COMPLETE":
            assert (tmp_path / "study" / "trials" / f"trial-{t['number']}" / "metrics.json").exists()
    assert (tmp_path / "study" / "study.json").exists()
    if second["n_complete"]:
        best = yaml.safe_load((tmp_path / "study" / "best_config.yaml").read_text())
        assert best["candidates_per_person"] in (1, 2) and best["dataset"] == "synthetic"
    assert json.loads((tmp_path / "study" / "study.json").read_text())["metric"] == "AccRM"


def test_bad_study_config():
    with pytest.raises(ValueError, match="n_trials"):
        CompileStudyConfig(n_trials=0)
