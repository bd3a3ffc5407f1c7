"""Fixtures for lms tests: a tiny random causal LM with a locally trained tokenizer (no hub access)."""

from __future__ import annotations

import os
import sys

import dspy
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/lms is not a package (it would shadow `lms`)
from tiny_lm_factory import build_tiny_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="session")
def tiny_spec(tiny_model_dir) -> str:
    return f"local:{tiny_model_dir}"


@pytest.fixture(autouse=True)
def reset_dspy(tmp_path):
    """Fresh DSPy settings and an in-memory-only cache for every test."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    dspy.cache.reset_memory_cache()
    yield
    dspy.configure(lm=None, adapter=None)
    dspy.cache.reset_memory_cache()
