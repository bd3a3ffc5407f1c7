"""Helpers of the finetune tests: a tiny random causal LM, a locally trained tokenizer (no hub access), rows."""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)

SYSTEM = "Your input fields are:\n1. `history` (str)\nYour output fields are:\n1. `reason` (str)"
JOBS = ["cashier", "nurse", "teacher", "driver", "cook", "clerk", "welder", "painter"]


def sft_rows(n: int = 12) -> list[dict]:
    """Prompt/completion rows in the ChatAdapter layout (tiny synthetic histories)."""
    rows = []
    for i in range(n):
        a, b = JOBS[i % len(JOBS)], JOBS[(i + 3) % len(JOBS)]
        user = f"[[ ## history ## ]]\n{a} then {b}\n\nRespond with the field `[[ ## reason ## ]]`."
        answer = f"[[ ## reason ## ]]\nlikes {b} work after {a}\n\n[[ ## completed ## ]]"
        rows.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                     "completion": [{"role": "assistant", "content": answer}]})
    return rows


def dpo_rows(n: int = 6) -> list[dict]:
    rows = []
    for row in sft_rows(n):
        bad = row["completion"][0]["content"].replace("likes", "hates")
        rows.append({"prompt": row["prompt"], "chosen": row["completion"],
                     "rejected": [{"role": "assistant", "content": bad}]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tiny_model(folder: Path) -> Path:
    """Save a 2-layer Llama (hidden 32) with a byte-level BPE tokenizer trained on the test corpus."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [m["content"] for r in sft_rows(24) for m in r["prompt"] + r["completion"]]
    corpus += ["<|system|>", "<|user|>", "<|assistant|>", "hates", "occupation"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
