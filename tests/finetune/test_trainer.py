"""SFT/DPO routine on a tiny random model: loss, LoRA updates, masking, fast-vs-plain loss, save/reload."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from ft_helpers import dpo_rows, sft_rows

from finetune.config import DistillConfig
from finetune.model_loading import load_model_and_tokenizer
from finetune.trainer import base_weights_dtype, build_sft_config, make_sft_trainer, train_dpo, train_sft


def _config(**kw) -> DistillConfig:
    base = dict(joint_file="unused", max_steps=6, per_device_train_batch_size=4, learning_rate=5e-3,
                save_steps=1000, logging_steps=1, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                lora_target_modules=["q_proj", "v_proj", "o_proj", "down_proj"], eval_fraction=0.0)
    base.update(kw)
    return DistillConfig(**base)


def _batch_loss(trainer, batch) -> float:
    trainer.model.eval()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, dict(batch)))


def test_cpu_safe_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTOCC_DTYPE", "float32")  # the machine's rule on a CPU without native bf16
    fast = build_sft_config(_config(), tmp_path, has_eval=False)
    plain = build_sft_config(_config(plain=True), tmp_path, has_eval=False)
    assert fast.use_cpu and not fast.gradient_checkpointing and not fast.bf16
    assert plain.use_cpu and not plain.gradient_checkpointing and not plain.bf16
    monkeypatch.setenv("NEXTOCC_DTYPE", "bfloat16")  # ... and on one with native bf16
    assert build_sft_config(_config(), tmp_path, has_eval=False).bf16
    assert not build_sft_config(_config(bf16=False), tmp_path, has_eval=False).bf16
    assert fast.completion_only_loss and fast.train_sampling_strategy == "group_by_length"
    assert plain.train_sampling_strategy == "random"


def test_base_weights_follow_the_dtype_rule_unless_set(monkeypatch):
    monkeypatch.setenv("NEXTOCC_DTYPE", "float32")
    assert base_weights_dtype(_config()) == torch.float32
    assert base_weights_dtype(_config(base_dtype="bfloat16")) == torch.bfloat16
    monkeypatch.setenv("NEXTOCC_DTYPE", "bfloat16")  # bf16 autocast on: no float32 copy of the frozen weights
    assert base_weights_dtype(_config()) == torch.bfloat16
    assert base_weights_dtype(_config(bf16=False)) == torch.float32
    assert base_weights_dtype(_config(base_dtype="float32")) == torch.float32
    with pytest.raises(ValueError, match="base_dtype must be float32, bfloat16 or null"):
        _config(base_dtype="float16")


def test_bf16_base_trains_float32_adapters(tiny_model_dir, tmp_path):
    from safetensors import safe_open

    metrics = train_sft(tiny_model_dir, sft_rows(8), [], _config(bf16=True, max_steps=2), tmp_path / "s")
    assert metrics["base_dtype"] == "bfloat16" and metrics["train_loss"] > 0
    with safe_open(tmp_path / "s" / "adapter" / "adapter_model.safetensors", "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    lora_b = [t for k, t in tensors.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero: training moved every one


def test_sft_lowers_loss_and_changes_every_lora_weight(tiny_model_dir, tmp_path):
    model, tok = load_model_and_tokenizer(tiny_model_dir)
    trainer, _ = make_sft_trainer(model, tok, sft_rows(12), [], _config(bf16=False), tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    before_loss = _batch_loss(trainer, batch)
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)
    trainer.train()
    after_loss = _batch_loss(trainer, batch)
    assert after_loss < before_loss - 0.05
    params = dict(trainer.model.named_parameters())
    unchanged = [n for n, p in lora.items() if torch.equal(p, params[n].detach())]
    assert not unchanged, f"LoRA weights not updated: {unchanged}"


def test_lora_top_layers_adapts_only_the_upper_layers(tiny_model_dir, tmp_path):
    model, tok = load_model_and_tokenizer(tiny_model_dir)  # two decoder layers
    trainer, _ = make_sft_trainer(model, tok, sft_rows(8), [], _config(bf16=False, max_steps=2, lora_top_layers=1),
                                  tmp_path)
    names = [n for n, _ in trainer.model.named_parameters() if "lora_" in n]
    assert names and all(".layers.1." in n for n in names)
    trainer.train()
    with pytest.raises(ValueError, match="lora_top_layers must be >= 0"):
        _config(lora_top_layers=-1)
    model, tok = load_model_and_tokenizer(tiny_model_dir)
    with pytest.raises(ValueError, match="has 2 decoder layers"):
        make_sft_trainer(model, tok, sft_rows(8), [], _config(lora_top_layers=3), tmp_path)


def test_completion_only_loss_masks_prompt(tiny_model_dir, tmp_path):
    model, tok = load_model_and_tokenizer(tiny_model_dir)
    rows = sft_rows(4)
    trainer, _ = make_sft_trainer(model, tok, rows, [], _config(plain=True), tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for i in range(4):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        kept = labels != -100
        prompt = tok.apply_chat_template(rows[i]["prompt"], tokenize=False, add_generation_prompt=True)
        n_prompt = len(tok(prompt, add_special_tokens=False).input_ids)
        n_real = int(mask.sum())
        assert not kept[:n_prompt].any(), "a prompt token carries a label"
        assert kept[n_prompt:n_real].all(), "a completion token lost its label"
        assert not kept[n_real:].any(), "padding carries a label"
        text = tok.decode(ids[kept])
        assert text.startswith("[[ ## reason ## ]]") and "[[ ## history ## ]]" not in text


def test_fast_path_loss_equals_plain_loss(tiny_model_dir, tmp_path):
    model, tok = load_model_and_tokenizer(tiny_model_dir)
    trainer, _ = make_sft_trainer(model, tok, sft_rows(8), [], _config(bf16=False), tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    fast = _batch_loss(trainer, batch)
    trainer.completion_head = False
    plain = _batch_loss(trainer, batch)
    assert fast == pytest.approx(plain, rel=1e-5, abs=1e-5)


def test_train_save_reload_gives_identical_greedy_outputs(tiny_model_dir, tmp_path):
    from peft import PeftModel

    metrics = train_sft(tiny_model_dir, sft_rows(12), sft_rows(2), _config(max_steps=4, bf16=False), tmp_path / "s")
    assert metrics["eval_loss"] > 0 and (tmp_path / "s" / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "s" / "training_curves.png").exists()
    card = (tmp_path / "s" / "adapter" / "README.md").read_text()
    assert "nextocc distillation metrics" in card
    assert "huggingface.co/None" not in card and 'model="None"' not in card
    assert "google/gemma-3-270m" in card and "NextOccupation.from_pretrained(" in card  # the config's base
    base, tok = load_model_and_tokenizer(tiny_model_dir)
    reloaded = PeftModel.from_pretrained(base, metrics["adapter"]).eval()
    merged = PeftModel.from_pretrained(load_model_and_tokenizer(tiny_model_dir)[0], metrics["adapter"])
    merged = merged.merge_and_unload().eval()
    prompt = tok.apply_chat_template(sft_rows(1)[0]["prompt"], add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    with torch.no_grad():
        a = reloaded.generate(**prompt, max_new_tokens=12, do_sample=False)
        b = merged.generate(**prompt, max_new_tokens=12, do_sample=False)
        plain_base = load_model_and_tokenizer(tiny_model_dir)[0].eval()
        logits_base = plain_base(**prompt).logits
        logits_lora = reloaded(**prompt).logits
    assert torch.equal(a, b)
    assert not torch.allclose(logits_base, logits_lora), "the adapter has no effect"


def test_dpo_runs_a_step(tiny_model_dir, tmp_path):
    sft = train_sft(tiny_model_dir, sft_rows(8), [], _config(max_steps=2), tmp_path / "sft")
    cfg = dataclasses.replace(_config(), dpo_max_steps=1, per_device_train_batch_size=2)
    metrics = train_dpo(tiny_model_dir, sft["adapter"], dpo_rows(4), cfg, tmp_path / "dpo")
    assert metrics["global_step"] == 1 and metrics["train_loss"] > 0
    assert (tmp_path / "dpo" / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "dpo" / "adapter" / "ref").exists()


def test_shared_prefix_forward_gives_the_same_loss_and_gradients(tiny_model_dir, tmp_path):
    from finetune.completion_head import shared_prefix_len

    model, tok = load_model_and_tokenizer(tiny_model_dir)
    trainer, _ = make_sft_trainer(model, tok, sft_rows(8), [], _config(bf16=False, per_device_train_batch_size=4),
                                  tmp_path)
    batch = {k: v for k, v in next(iter(trainer.get_train_dataloader())).items()}
    assert shared_prefix_len(batch["input_ids"], batch["attention_mask"]) >= 32  # the system prompt
    trainer.model.train()
    results = []
    for share in (True, False):
        trainer.model.get_base_model()._nextocc_share_prefix = share
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((float(loss), grads))
    (shared_loss, shared_grads), (full_loss, full_grads) = results
    assert shared_loss == pytest.approx(full_loss, abs=1e-5)
    assert shared_grads.keys() == full_grads.keys() and shared_grads
    for name, grad in full_grads.items():
        assert torch.allclose(shared_grads[name], grad, atol=1e-5), name
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 5, 6]])
    assert shared_prefix_len(ids, torch.ones_like(ids)) == 2 and shared_prefix_len(ids[:1], None) == 0
