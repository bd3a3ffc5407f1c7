"""Fixtures of the finetune tests (tiny model folder, fake compile run); helpers live in ``ft_helpers``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ft_helpers import build_tiny_model, dpo_rows, sft_rows, write_jsonl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random causal LM folder, built once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def compile_run(tmp_path) -> Path:
    """A fake compile run directory with the four TRL files."""
    run = tmp_path / "compile_run"
    run.mkdir()
    rows = sft_rows(12)
    write_jsonl(run / "sft_reason.jsonl", rows)
    write_jsonl(run / "sft_predict.jsonl", rows[:8])
    write_jsonl(run / "sft_joint.jsonl", rows + rows[:8])
    write_jsonl(run / "dpo_reason.jsonl", dpo_rows(6))
    return run
