"""Security: loading a saved program, baseline or student never unpickles (JSON state and safetensors
only), and every path named by a manifest or a config stays inside its run directory ('../', absolute paths and
symlinks that escape are refused).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import dspy
import pytest
from rel_helpers import scripted_lm

from careers.history import CareerHistory
from programs.baseline_registry import load_baseline, make_baseline
from programs.hybrid import HybridNextOccupation
from programs.next_occupation import NextOccupation
from runkit.run_dir import make_run_dir


class _Evil:
    """Unpickling this creates a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _write_evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(_Evil(marker)))
    return path


@pytest.fixture
def no_unpickling(monkeypatch):
    """Makes every unpickling entry point raise (pickle, cloudpickle, torch.load)."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:1])
        raise AssertionError("a load path tried to unpickle")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *a, **k):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    try:
        import cloudpickle

        monkeypatch.setattr(cloudpickle, "load", refuse)
        monkeypatch.setattr(cloudpickle, "loads", refuse)
    except ImportError:
        pass
    try:
        import torch

        monkeypatch.setattr(torch, "load", refuse)
    except ImportError:
        pass
    return calls


def _examples():
    out = []
    for i in range(6):
        h = CareerHistory.from_dict({"person_id": str(i), "jobs": [
            {"title": "Cashier", "start_year": 2000 + i, "onet_code": "41-2011.00"},
            {"title": "Stock Clerk", "start_year": 2004 + i, "onet_code": "53-7065.00"},
            {"title": "Cashier", "start_year": 2008 + i, "onet_code": "41-2011.00"}]})
        out.append(h.prefix(2).to_example(h.jobs[2]))
    return out


def _saved_program(root: Path, taxonomy) -> Path:
    prog = NextOccupation(mode="two_step", lm=scripted_lm(), taxonomy=taxonomy)
    demo = dspy.Example(history="1. Cashier", reason="retail", occupation="Cashiers").with_inputs("history", "reason")
    prog.predictor.demos = [demo]
    prog.save(root)
    return root


def test_program_and_baselines_load_without_unpickling(tmp_path, taxonomy, no_unpickling):
    run = _saved_program(tmp_path / "prog", taxonomy)
    _write_evil_pickle(run / "program.pkl", tmp_path / "PWNED")  # a stray pickle next to the JSON state is ignored
    loaded = NextOccupation.load(run, lm=scripted_lm(), taxonomy=taxonomy)
    assert loaded.predictor.demos[0]["occupation"] == "Cashiers"
    assert loaded({"person_id": "1", "jobs": [{"title": "Cashier"}]}).occupation == "Cashiers"

    baseline = make_baseline("markov", taxonomy=taxonomy).fit(_examples())
    baseline.save(tmp_path / "markov.json")
    assert load_baseline(tmp_path / "markov.json", taxonomy=taxonomy).fitted

    hybrid = HybridNextOccupation(lm=scripted_lm(), taxonomy=taxonomy, baseline=baseline)
    hybrid.save(tmp_path / "hybrid")
    again = HybridNextOccupation.load(tmp_path / "hybrid", lm=scripted_lm(), taxonomy=taxonomy)
    assert again.baseline is not None and again.baseline.fitted
    assert no_unpickling == [] and not (tmp_path / "PWNED").exists()


def test_pickle_state_files_are_refused(tmp_path, taxonomy, no_unpickling):
    marker = tmp_path / "PWNED"
    run = _saved_program(tmp_path / "prog", taxonomy)
    _write_evil_pickle(run / "program.pkl", marker)
    manifest = json.loads((run / "nextocc.json").read_text())
    for name in ("program.pkl", "program.json.pkl", "program"):
        (run / "nextocc.json").write_text(json.dumps({**manifest, "program": name}))
        with pytest.raises(ValueError):
            NextOccupation.load(run, lm=scripted_lm(), taxonomy=taxonomy)
    prog = NextOccupation(lm=scripted_lm(), taxonomy=taxonomy)
    with pytest.raises(ValueError, match="pickle|pkl"):
        prog.load(str(run / "program.pkl"))  # DSPy's own state load refuses pickles unless allow_pickle=True
    with pytest.raises(ValueError):
        load_baseline(_write_evil_pickle(tmp_path / "baseline.json", marker))
    assert no_unpickling == [] and not marker.exists()


@pytest.mark.parametrize("bad", ["../outside.json", "/tmp/outside.json", "sub/../../outside.json", "..\\outside.json",
                                 "", None, 5, ["program.json"], "prog\x00.json", "~/.ssh/keys.json"])
def test_manifest_paths_cannot_leave_the_run_dir(bad, tmp_path, taxonomy):
    run = _saved_program(tmp_path / "prog", taxonomy)
    (tmp_path / "outside.json").write_text((run / "program.json").read_text())
    manifest = json.loads((run / "nextocc.json").read_text())
    (run / "nextocc.json").write_text(json.dumps({**manifest, "program": bad}))
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        NextOccupation.load(run, lm=scripted_lm(), taxonomy=taxonomy)
    if bad == "~/.ssh/keys.json":  # a relative name inside the run dir: simply not there
        assert isinstance(info.value, FileNotFoundError) and str(run) in str(info.value)


def test_symlinks_escaping_the_run_dir_are_refused(tmp_path, taxonomy):
    run = _saved_program(tmp_path / "prog", taxonomy)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "program.json").write_text((run / "program.json").read_text())
    (run / "program.json").unlink()
    os.symlink(outside / "program.json", run / "program.json")
    with pytest.raises(ValueError, match="escapes"):
        NextOccupation.load(run, lm=scripted_lm(), taxonomy=taxonomy)
    (run / "program.json").unlink()
    os.symlink(outside, run / "sub")
    manifest = json.loads((run / "nextocc.json").read_text())
    (run / "nextocc.json").write_text(json.dumps({**manifest, "program": "sub/program.json"}))
    with pytest.raises(ValueError, match="escapes"):
        NextOccupation.load(run, lm=scripted_lm(), taxonomy=taxonomy)
    # a symlink that stays inside the run directory is fine
    (run / "state").mkdir()
    (run / "state" / "p.json").write_text((outside / "program.json").read_text())
    os.symlink(run / "state" / "p.json", run / "program.json")
    (run / "nextocc.json").write_text(json.dumps({**manifest, "program": "program.json"}))
    assert NextOccupation.load(run, lm=scripted_lm(), taxonomy=taxonomy).predictor.demos


def test_hybrid_baseline_path_cannot_leave_the_run_dir(tmp_path, taxonomy):
    baseline = make_baseline("markov", taxonomy=taxonomy).fit(_examples())
    hybrid = HybridNextOccupation(lm=scripted_lm(), taxonomy=taxonomy, baseline=baseline)
    run = tmp_path / "hybrid"
    hybrid.save(run)
    baseline.save(tmp_path / "b.json")
    manifest = json.loads((run / "nextocc.json").read_text())
    for bad in ("../b.json", str(tmp_path / "b.json")):
        (run / "nextocc.json").write_text(json.dumps({**manifest, "baseline": bad}))
        with pytest.raises(ValueError):
            HybridNextOccupation.load(run, lm=scripted_lm(), taxonomy=taxonomy)
    (run / "baseline.json").unlink()
    os.symlink(tmp_path / "b.json", run / "baseline.json")
    (run / "nextocc.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="escapes"):
        HybridNextOccupation.load(run, lm=scripted_lm(), taxonomy=taxonomy)


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "a/b", "..", ".", "", "a\\..\\b", "x\x00"])
def test_config_run_names_stay_inside_the_output_dir(name, tmp_path):
    with pytest.raises(ValueError, match="plain folder name"):
        make_run_dir(tmp_path / "runs", name)
    assert not (tmp_path / "escape").exists()


def test_cli_run_name_traversal_is_a_clear_error(tmp_path, capsys):
    from compile.optimize import main as compile_main
    from programs.evaluate import main as eval_main

    assert compile_main(["--run_name", "../escape", "--output_dir", str(tmp_path / "runs")]) == 1
    assert "plain folder name" in capsys.readouterr().err
    assert eval_main(["--run_name", "../escape", "--output_dir", str(tmp_path / "runs"), "--log_level", "ERROR"]) == 1
    assert "plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("specs", [{"reasoner": {"model": "openai/gpt-4.1-mini", "api_base": "https://evil.example"}},
                                   {"predictor": ["openai/gpt-4.1-mini"]}, ["openai/gpt-4.1-mini"]])
def test_manifest_lm_specs_cannot_redirect_api_calls(specs, tmp_path, taxonomy):
    """A crafted manifest must not point an LM at another endpoint (which would receive the user's API key)."""
    run = _saved_program(tmp_path / "prog", taxonomy)
    manifest = json.loads((run / "nextocc.json").read_text())
    (run / "nextocc.json").write_text(json.dumps({**manifest, "lms": specs}))
    with pytest.raises(ValueError, match="LM spec strings"):
        NextOccupation.load(run, taxonomy=taxonomy)
