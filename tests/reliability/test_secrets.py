"""Security: API keys come only from the environment (or a user's config) and are never written to run
directories, reports, saved programs, config echoes or logs.

A fake key is set in the environment and put in configs (``api_key: ...``, nested secret-like keys, LM objects that
hold the key); compile and ``programs.evaluate`` run on DummyLM-backed LMs; every file under the run directories and
every captured log/stdout/stderr line is scanned for the key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import dspy
import pytest
import yaml
from rel_helpers import DATA, HAVE_DATA, scripted_lm

from programs.next_occupation import NextOccupation
from runkit.config import ConfigError, load_config
from runkit.files import redact, write_config

FAKE = "sk-test-FAKEKEY123"
NEEDLES = (FAKE, "FAKEKEY123", FAKE.encode().hex())
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="data mirror not available")


class KeyedLM(dspy.LM):
    """A remote-style LM that holds an API key (as litellm LMs do) but answers from a scripted DummyLM."""

    def __init__(self, api_key: str = FAKE):
        super().__init__("openai/gpt-4.1-mini", api_key=api_key, cache=False, num_retries=0)
        self._dummy = scripted_lm()

    def forward(self, prompt=None, messages=None, **kwargs):
        return self._dummy.forward(prompt=prompt, messages=messages, **kwargs)


@pytest.fixture
def fake_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN", "NEXTOCC_API_KEY"):
        monkeypatch.setenv(name, FAKE)
    return FAKE


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def _scan(root: Path) -> list[str]:
    """Files under ``root`` that contain the key (text, hex or any encoding of it); also counts files scanned."""
    hits, n = [], 0
    for path in root.rglob("*"):
        if path.is_file():
            n += 1
            data = path.read_bytes()
            if any(needle.encode() in data for needle in NEEDLES):
                hits.append(str(path))
    assert n > 0, f"nothing written under {root}"
    return hits


def _assert_clean(*texts: str) -> None:
    for text in texts:
        assert not any(needle in text for needle in NEEDLES), "the fake key leaked into logs or output"


def test_redact_and_write_config_hide_nested_secrets(tmp_path):
    config = {"lm": {"model": "openai/gpt-4.1-mini", "api_key": FAKE, "headers": [{"X-Auth-Token": FAKE}]},
              "hf_token": FAKE, "password": FAKE, "client_secret": FAKE, "OPENAI_API_KEY": FAKE, "k": 5}
    out = redact(config)
    assert out["k"] == 5 and out["lm"]["model"] == "openai/gpt-4.1-mini"
    path = write_config(tmp_path, config)
    assert not _scan(tmp_path)
    assert yaml.safe_load(path.read_text())["lm"]["api_key"] == "***"


@pytest.mark.parametrize("cli", ["compile.optimize", "programs.evaluate"])
def test_cli_configs_with_keys_are_rejected_without_echoing_them(cli, tmp_path, fake_env, capsys, all_logs):
    import importlib

    main = importlib.import_module(cli).main
    for text in (f"api_key: {FAKE}\n", f"output_dir: {tmp_path}\nk: {{api_key: {FAKE}, n: 5}}\n",
                 f"output_dir: {tmp_path}\nseed: [{{token: {FAKE}}}]\n"):
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(text)
        assert main(["--config", str(cfg)]) == 2
        captured = capsys.readouterr()
        assert "error:" in captured.err
        _assert_clean(captured.out, captured.err, all_logs.text)


def test_load_config_errors_redact_secret_values(tmp_path):
    from compile.config import OptimizeConfig

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"teacher_lm": {"model": "openai/gpt-4.1-mini", "api_key": FAKE}}))
    with pytest.raises(ConfigError) as info:
        load_config(OptimizeConfig, ["--config", str(cfg)])
    # a mapping spec is valid, but a key in it is rejected (keys come from api_key_env only) without echoing it
    assert "teacher_lm" in str(info.value) and FAKE not in str(info.value) and "api_key_env" in str(info.value)


@needs_data
def test_compile_never_writes_the_key(tmp_path, fake_env, capsys, all_logs):
    from compile.config import OptimizeConfig
    from compile.optimize import run_optimize

    cfg = OptimizeConfig(dataset="synthetic", data_dir=str(DATA), synthetic_persons=60, n_train=3, n_dev=2, n_test=2,
                         candidates_per_person=2, optimizer="bootstrap", max_bootstrapped_demos=1,
                         max_labeled_demos=1, threads=1, output_dir=str(tmp_path), run_name="keyed",
                         teacher_lm="openai/gpt-4.1-mini", judge_lm="openai/gpt-4.1-mini")
    res = run_optimize(cfg, teacher_lm=KeyedLM(), judge_lm=KeyedLM())
    assert res["oracles"] > 0
    assert not _scan(tmp_path)
    captured = capsys.readouterr()
    _assert_clean(captured.out, captured.err, all_logs.text, json.dumps(res, default=str))


@needs_data
def test_evaluate_never_writes_the_key(tmp_path, fake_env, capsys, all_logs, taxonomy):
    from programs import evaluate

    data = tmp_path / "users.jsonl"
    data.write_text("\n".join(json.dumps({"person_id": str(i), "jobs": [
        {"title": "Cashier", "start_year": 2000 + i, "onet_code": "41-2011.00"},
        {"title": "Stock Clerk", "start_year": 2005 + i, "onet_code": "53-7065.00"}]}) for i in range(8)) + "\n")
    out = tmp_path / "runs"
    assert evaluate.main(["--dataset", f"jsonl:{data}", "--program", "markov", "--split", "train",
                          "--output_dir", str(out), "--data_dir", str(DATA)]) == 0
    config = evaluate.EvalConfig(dataset=f"jsonl:{data}", program="two_step", split="train", output_dir=str(out),
                                 data_dir=str(DATA), judge_lm="openai/gpt-4.1-mini", lm="openai/gpt-4.1-mini",
                                 threads=1)
    res = evaluate.run_evaluation(config, taxonomy=taxonomy, lm=KeyedLM(), judge_lm=KeyedLM())
    assert res["metrics"]["n"] > 0 and res["metrics"].get("judge_factuality") == 5
    assert len(list(out.iterdir())) == 2
    assert not _scan(out)
    captured = capsys.readouterr()
    _assert_clean(captured.out, captured.err, all_logs.text)


def test_saved_programs_hold_no_key(tmp_path, fake_env, taxonomy):
    keyed = KeyedLM()
    prog = NextOccupation(mode="two_step", lm=keyed, taxonomy=taxonomy)
    prog.predictor.lm = keyed  # a per-predictor LM is part of DSPy's saved state: it must be sanitized
    prog.save(tmp_path / "prog")
    prog.save(tmp_path / "state.json")
    assert not _scan(tmp_path)
    manifest = json.loads((tmp_path / "prog" / "nextocc.json").read_text())
    assert manifest["lms"]["reasoner"] in (None, "openai/gpt-4.1-mini")


def test_redaction_keeps_counts_so_config_yaml_reloads(tmp_path):
    """Only secret-named keys are redacted: ``max_tokens`` survives, so a run's config.yaml is a valid --config."""
    from compile.config import OptimizeConfig

    cfg = OptimizeConfig(max_tokens=77, run_name="x")
    path = write_config(tmp_path, cfg)
    assert load_config(OptimizeConfig, ["--config", str(path)]) == cfg
    for key in ("api_key", "hfToken", "X-Auth-Token", "OPENAI_API_KEY", "client_secret", "db_password", "auth"):
        assert redact({key: FAKE}) == {key: "***"}, key
    for key in ("max_tokens", "max_new_tokens", "tokenizer", "model"):
        assert redact({key: 5}) == {key: 5}, key
