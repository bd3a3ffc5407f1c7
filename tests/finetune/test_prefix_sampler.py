"""Step-grouped batches: the sampler's batches, the group key, and the trainer's loader on a tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from ft_helpers import sft_rows

from finetune.completion_head import shared_prefix_len
from finetune.config import DistillConfig
from finetune.model_loading import load_model_and_tokenizer
from finetune.prefix_sampler import PrefixGroupedSampler, prompt_group_key
from finetune.trainer import make_sft_trainer

OTHER = "Your input fields are:\n1. `history` (str)\n2. `reason` (str)\nYour output fields are:\n1. `occupation` (str)"


def _mixed_rows(n: int) -> list[dict]:
    """``n`` rows alternating between two steps (two system messages)."""
    rows = sft_rows(n)
    for row in rows[1::2]:
        row["prompt"] = [{"role": "system", "content": OTHER}, row["prompt"][1]]
    return rows


def test_group_key_is_everything_but_the_last_message():
    a, b = _mixed_rows(2)
    again = sft_rows(3)[2]
    assert prompt_group_key(a["prompt"]) == prompt_group_key(again["prompt"])
    assert prompt_group_key(a["prompt"]) != prompt_group_key(b["prompt"])
    assert prompt_group_key([{"role": "user", "content": "x"}]) is None and prompt_group_key("text") is None


def test_every_batch_holds_one_group_and_every_row_once():
    keys = ["a"] * 9 + ["b"] * 6 + ["c"] * 2
    lengths = list(range(len(keys)))
    sampler = PrefixGroupedSampler(keys, 4, lengths=lengths, generator=torch.Generator().manual_seed(0))
    order = list(sampler)
    assert sorted(order) == list(range(len(keys))) and len(sampler) == len(keys)
    batches = [order[s:s + 4] for s in range(0, len(order), 4)]
    full = [b for b in batches if len(b) == 4]
    # a: 2 full batches, b: 1; the remainders (1 a, 2 b, 2 c) are pooled into one full and one partial batch
    assert len(full) == 4 and len(batches[-1]) == 1
    assert sum(len({keys[i] for i in b}) == 1 for b in full) == 3
    for b in full:  # longest first inside a batch (rows of similar length)
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_seeded_and_shuffled_across_epochs():
    keys = ["a", "b"] * 20
    first = list(PrefixGroupedSampler(keys, 2, generator=torch.Generator().manual_seed(3)))
    again = list(PrefixGroupedSampler(keys, 2, generator=torch.Generator().manual_seed(3)))
    gen = torch.Generator().manual_seed(3)
    sampler = PrefixGroupedSampler(keys, 2, generator=gen)
    assert first == again and list(sampler) != list(sampler)  # same seed, same order; a new epoch reshuffles
    with pytest.raises(ValueError, match="lengths has"):
        PrefixGroupedSampler(keys, 2, lengths=[1])


def _config(**kw) -> DistillConfig:
    base = dict(joint_file="unused", max_steps=2, per_device_train_batch_size=2, learning_rate=5e-3, bf16=False,
                save_steps=1000, logging_steps=1, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                lora_target_modules=["q_proj", "v_proj"], eval_fraction=0.0)
    base.update(kw)
    return DistillConfig(**base)


@pytest.mark.parametrize("grouped", [True, False])
def test_trainer_batches_share_the_whole_system_message(tiny_model_dir, tmp_path, grouped):
    model, tok = load_model_and_tokenizer(tiny_model_dir)
    config = _config(group_by_prefix=grouped, group_by_length=grouped)  # length alone would split these steps
    trainer, _ = make_sft_trainer(model, tok, _mixed_rows(16), [], config, tmp_path)
    ids = trainer.train_dataset["input_ids"]  # rows 0 and 1 are of different steps
    mixed = shared_prefix_len(torch.tensor([ids[0][:40], ids[1][:40]]), None)
    prefixes = [shared_prefix_len(b["input_ids"], b["attention_mask"]) for b in trainer.get_train_dataloader()]
    assert len(prefixes) == 8
    if grouped:  # every batch shares its whole system message, longer than the start two steps have in common
        assert isinstance(trainer._get_train_sampler(), PrefixGroupedSampler)
        assert min(prefixes) > mixed
    else:  # random pairs of the two steps: some batch mixes them
        assert not isinstance(trainer._get_train_sampler(), PrefixGroupedSampler)
        assert min(prefixes) == mixed
    trainer.train()  # trains on the grouped loader
    assert trainer.state.global_step == 2
    if grouped:
        fresh, tok = load_model_and_tokenizer(tiny_model_dir)
        plain, _ = make_sft_trainer(fresh, tok, _mixed_rows(4), [], dataclasses.replace(config, plain=True),
                                    tmp_path / "plain")
        assert not plain.group_by_prefix
