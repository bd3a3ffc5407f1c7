"""Loading a base model and its tokenizer for training, and finding the checkpoint to resume from."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lms.chat_template import ensure_chat_template


def load_model_and_tokenizer(folder: str | Path, dtype: torch.dtype = torch.float32,
                             attn_implementation: str | None = None):
    """Load a causal LM (training dtype, fp32 master weights by default) and its tokenizer with a chat template."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **extra)
    return model, tokenizer


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """The complete ``checkpoint-N`` folder with the highest N, or None.

    A checkpoint counts as complete once the Trainer wrote its ``trainer_state.json`` (the last file it saves), so a
    folder half-written by a killed process is skipped and the previous checkpoint is resumed instead.
    """
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").is_file()]
    return str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None
