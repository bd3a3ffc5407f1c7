"""Fixtures of the program tests: a real local-engine LM on the lms tests' tiny random model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_local_lm(tmp_path_factory):
    """A real local-engine LM on the lms tests' tiny random model (not Gemma), constrained to 10 titles."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    import importlib.util
    from pathlib import Path

    import lms

    path = Path(__file__).resolve().parents[1] / "lms" / "tiny_lm_factory.py"
    if not path.is_file():
        pytest.skip("tests/lms/tiny_lm_factory.py is not available")
    spec = importlib.util.spec_from_file_location("_tiny_lm_factory", path)
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    folder = factory.build_tiny_model(tmp_path_factory.mktemp("tiny_lm"))
    return lms.load(f"local:{folder}", constrained_fields={"occupation": factory.OPTIONS}, max_field_tokens=8), folder
