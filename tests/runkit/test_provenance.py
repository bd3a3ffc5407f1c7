"""provenance.json: written into every run directory, updated with what the run knows at its end."""

from __future__ import annotations

import json
import sys

from runkit.provenance import write_provenance
from runkit.run_dir import make_run_dir


def test_every_run_dir_gets_provenance_and_updates_keep_lm_usage(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["optimize.py", "--api_key", "sk-secret", "--hf_token=hf_x", "--n_train", "4",
                                      "--judge_lm_api_key_env", "OPENAI_API_KEY"])
    run = make_run_dir(tmp_path, "r")
    first = json.loads((run / "provenance.json").read_text())
    assert first["git"]["commit"] and isinstance(first["git"]["dirty"], bool)
    assert first["packages"]["dspy"] and first["packages"]["trl"] and first["machine"]["cpu"]["model"]
    assert first["dtype"] in ("float32", "bfloat16", "float16") and "lm_usage" not in first
    assert first["command"] == ["optimize.py", "--api_key", "***", "--hf_token=***", "--n_train", "4",
                                "--judge_lm_api_key_env", "OPENAI_API_KEY"]
    usage = {"teacher": {"requests": 12, "prompt_tokens": 3400, "completion_tokens": 900, "cache_hits": 2,
                         "cost": None}}
    write_provenance(run, dtype="bfloat16", lm_usage=usage)
    write_provenance(run)  # a later update without usage keeps it
    final = json.loads((run / "provenance.json").read_text())
    assert final["lm_usage"] == usage and final["dtype"] == "bfloat16" and final["dtype_source"] == "run"
    assert final["started_at"] == first["started_at"]
    assert "sk-secret" not in (run / "provenance.json").read_text()


def test_provenance_records_the_lm_head_requested_and_loaded(tmp_path, monkeypatch):
    import runkit.provenance

    monkeypatch.setenv("NEXTOCC_HEAD", "exact")
    monkeypatch.setattr(runkit.provenance, "loaded_heads", lambda: {"local:gemma-3-270m": "int8"})
    run = make_run_dir(tmp_path, "r")
    head = json.loads((run / "provenance.json").read_text())["lm_head"]
    assert head == {"requested": "exact", "loaded": {"local:gemma-3-270m": "int8"}}
    monkeypatch.setenv("NEXTOCC_HEAD", "int4")  # recorded, not raised: the model load names the setting
    assert json.loads((make_run_dir(tmp_path, "s") / "provenance.json").read_text())["lm_head"]["requested"].startswith(
        "invalid: $NEXTOCC_HEAD must be one of")
