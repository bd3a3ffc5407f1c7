"""Per-role LM specs: a string or a mapping; keys only from the environment."""

from __future__ import annotations

import pytest

from lms.resolve import lm_spec, resolve_lm


def test_strings_mappings_and_yaml_text():
    assert lm_spec("openai/gpt-4.1-mini") == "openai/gpt-4.1-mini"
    assert lm_spec("openai/gpt-4.1-mini", api_base="http://h/v1", max_tokens=64) == {
        "model": "openai/gpt-4.1-mini", "api_base": "http://h/v1", "max_tokens": 64}
    assert lm_spec("{model: hosted_vllm/t, api_base: 'http://gpu:8000/v1', num_retries: 3}", api_base="http://x") == {
        "model": "hosted_vllm/t", "api_base": "http://gpu:8000/v1", "num_retries": 3}
    assert lm_spec("local:gemma-3-270m", api_base="http://h/v1") == "local:gemma-3-270m"
    assert lm_spec("local:gemma-3-270m", api_base="http://h/v1", max_tokens=64) == {
        "model": "local:gemma-3-270m", "max_tokens": 64}
    assert lm_spec(None) is None


@pytest.mark.parametrize("bad, match", [
    ({"model": "openai/x", "api_key": "sk-1"}, "api_key_env"),
    ({"model": "openai/x", "temprature": 0}, "temprature"),
    ({"api_base": "http://h"}, "model"),
    ({"model": "openai/x", "api_key_env": "not a name"}, "environment variable"),
    ({"model": "local:gemma-3-270m", "api_base": "http://h"}, "meaningless"),
    ("{model: [unclosed", "YAML"),
])
def test_invalid_specs_name_the_role(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        lm_spec(bad, role="judge_lm")
    assert "judge_lm" in str(err.value) and "sk-1" not in str(err.value)


def test_key_comes_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("NEXTOCC_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="NEXTOCC_TEST_KEY"):
        resolve_lm({"model": "openai/gpt-4.1-mini", "api_key_env": "NEXTOCC_TEST_KEY"})
    monkeypatch.setenv("NEXTOCC_TEST_KEY", "sk-env")
    lm = resolve_lm("{model: openai/gpt-4.1-mini, api_key_env: NEXTOCC_TEST_KEY, num_retries: 2, temperature: 0.3}")
    assert lm.kwargs["api_key"] == "sk-env" and lm.num_retries == 2 and lm.kwargs["temperature"] == 0.3


def test_constrain_adds_fields_on_the_same_weights(tiny_model_dir):
    import dspy

    import lms

    lm = lms.load(f"local:{tiny_model_dir}", max_field_tokens=8, temperature=0.0, cache=False)
    titled = lms.constrain(lm, {"occupation": ["Cashiers", "Registered Nurses"]})
    assert titled is not lm and lms.is_local(titled)
    engine, base = titled._engine_spec, lm._engine_spec
    assert engine.constrained_fields == {"occupation": ["Cashiers", "Registered Nurses"]}
    assert base.constrained_fields == {}  # the original LM is unchanged
    assert engine.max_field_tokens == 8 and titled.kwargs["temperature"] == 0.0 and titled.cache is False
    assert engine.loaded() is base.loaded()  # one copy of the weights
    assert lms.constrain(titled, {"occupation": ["Cashiers"]}) is titled  # a constrained field keeps its options
    remote = dspy.LM("openai/gpt-4.1-mini")
    assert lms.constrain(remote, {"occupation": ["Cashiers"]}) is remote
