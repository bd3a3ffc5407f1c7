"""Spec parsing, errors, cache dir, resolve_lm and chat templates (no model weights needed except tiny ones)."""

from __future__ import annotations

from dataclasses import dataclass

import dspy
import pytest

import lms
from lms.cache import cache_dir
from lms.chat_template import GEMMA3_CHAT_TEMPLATE, render_prompt
from lms.model_store import load_local_model, parse_local_spec


def test_parse_specs():
    spec = parse_local_spec("local:gemma-3-270m")
    assert spec.is_embedded and spec.adapter is None and spec.spec == "local:gemma-3-270m"
    spec = parse_local_spec("local:/models/base+/models/adapter")
    assert (spec.base, spec.adapter) == ("/models/base", "/models/adapter")
    assert parse_local_spec("local//models/base").base == "/models/base"


@pytest.mark.parametrize("bad", ["local:", "local:+/a", "openai/gpt-4.1-mini", "local:/x+"])
def test_bad_local_specs_raise_value_error(bad):
    with pytest.raises(ValueError, match="spec"):
        parse_local_spec(bad)


def test_load_errors_name_the_problem(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="non-empty"):
        lms.load("")
    with pytest.raises(ValueError, match="neither"):
        lms.load("gpt-4")
    with pytest.raises(FileNotFoundError, match="not found: /definitely/missing"):
        lms.load("local:/definitely/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        lms.load(f"local:{tmp_path / 'empty'}")
    with pytest.raises(FileNotFoundError, match="adapter folder not found"):
        lms.load(f"local:{tiny_model_dir}+{tmp_path / 'no_adapter'}")
    with pytest.raises(ValueError, match="constrained_fields"):
        lms.load(f"local:{tiny_model_dir}", constrained_fields={"occupation": []})


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("NEXTOCC_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_registry_shares_loaded_models_and_fingerprint_is_stable(tiny_spec):
    a = load_local_model(tiny_spec, dtype="float32")
    b = load_local_model(tiny_spec, dtype="float32")
    assert a is b and len(a.fingerprint) == 12


def test_resolve_lm_remote_and_dict(monkeypatch, tiny_spec):
    lm = lms.resolve_lm("openai/gpt-4.1-mini")
    assert isinstance(lm, dspy.LM) and not lms.is_local(lm)
    monkeypatch.setenv("MY_TEST_KEY", "sk-test")
    lm = lms.resolve_lm({"model": "hosted_vllm/qwen", "api_base": "http://localhost:8000/v1",
                         "api_key_env": "MY_TEST_KEY", "temperature": 0.3, "max_tokens": 99})
    assert lm.kwargs["temperature"] == 0.3 and lm.kwargs["max_tokens"] == 99
    monkeypatch.delenv("MY_TEST_KEY")
    with pytest.raises(ValueError, match="MY_TEST_KEY"):
        lms.resolve_lm({"model": "openai/gpt-4.1-mini", "api_key_env": "MY_TEST_KEY"})
    with pytest.raises(ValueError, match="API keys"):
        lms.resolve_lm({"model": "openai/gpt-4.1-mini", "api_key": "sk-secret"})
    with pytest.raises(ValueError, match="no 'model'"):
        lms.resolve_lm({"temperature": 0.0})
    assert lms.resolve_lm(lm) is lm

    @dataclass
    class Spec:
        model: str
        temperature: float = 0.0
        max_tokens: int = 16
        dtype: str = "float32"

    local = lms.resolve_lm(Spec(model=tiny_spec))
    assert lms.is_local(local) and local.kwargs["max_tokens"] == 16


def test_gemma_template_folds_system_into_first_user_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = GEMMA3_CHAT_TEMPLATE
    text = render_prompt(tok, [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Again"}])
    assert text == ("<bos><start_of_turn>user\nSYS\n\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n"
                    "<start_of_turn>user\nAgain<end_of_turn>\n<start_of_turn>model\n")
