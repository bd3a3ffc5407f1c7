"""The TRL training routines: SFT (shared by ``finetune.distill``, the Optuna study and the DSPy provider) and DPO.

Fast path (default) vs ``plain``:

* **Completion-only LM head** (:mod:`finetune.completion_head`): ``lm_head`` runs on the completion positions only.
  This shortcut applies on CPU only (:func:`use_completion_head`); on CUDA/XPU TRL's own loss path runs.
* **bf16 autocast** where the hardware computes bf16 natively and faster (:func:`device_defaults`); fp32 elsewhere.
  With it, the frozen base weights load in bf16 (:func:`base_weights_dtype`) and the LoRA adapters stay fp32.
* **Step-grouped batches** (``group_by_prefix``, :mod:`finetune.prefix_sampler`): a batch holds rows of one DSPy step,
  so the completion head's shared-prefix pass covers the whole system message.
* **Length-grouped batches** (``train_sampling_strategy="group_by_length"``) to cut padding. TRL's ``padding_free``
  needs FlashAttention and is not used on CPU; on a GPU with flash-attn, ``packing`` can be set through TRL.
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer, SFTConfig

from finetune.artifacts import plot_curves, write_model_card
from finetune.completion_head import FastSFTTrainer
from finetune.config import trl_fields
from finetune.model_loading import latest_checkpoint, load_model_and_tokenizer
from lms.hardware import canonical_dtype, resolve_dtype

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ device defaults
def accelerator_available() -> bool:
    """Whether a CUDA/XPU/MPS device is visible."""
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def device_defaults(config: Any, plain: bool | None = None) -> dict[str, Any]:
    """CPU-safe precision/checkpointing flags resolved from a config's ``None`` (auto) values.

    TRL's configs default to ``bf16=True`` and ``gradient_checkpointing=True`` (GPU defaults). bf16 autocast follows
    the runtime's dtype rule (:func:`lms.hardware.resolve_dtype`, ``$NEXTOCC_DTYPE``): on a CPU only where it computes
    bf16 natively and faster (elsewhere bf16 runs 2-4x slower than fp32), on a GPU where it supports bf16. No
    gradient checkpointing on CPU.
    """
    plain = config.plain if plain is None else plain
    gpu = accelerator_available()
    use_cpu = (not gpu) if config.use_cpu is None else config.use_cpu
    on_cpu = use_cpu or not gpu
    bf16 = config.bf16
    if bf16 is None:
        bf16 = resolve_dtype(None, "cpu" if on_cpu else "cuda") == "bfloat16"
    gc = config.gradient_checkpointing
    if gc is None:
        gc = not on_cpu
    return {"use_cpu": use_cpu, "bf16": bool(bf16), "fp16": False, "gradient_checkpointing": bool(gc),
            "dataloader_pin_memory": not on_cpu}


def base_weights_dtype(config: Any) -> torch.dtype:
    """dtype to load the frozen base weights in: ``config.base_dtype`` when set, else bfloat16 where bf16 autocast is
    on (:func:`device_defaults`) -- autocast would otherwise cast every float32 weight at every layer call -- and
    float32 elsewhere. PEFT keeps the LoRA adapters in float32 (``autocast_adapter_dtype``)."""
    name = getattr(config, "base_dtype", None)
    if name is None:
        name = "bfloat16" if device_defaults(config)["bf16"] else "float32"
    return getattr(torch, name)


class ThroughputCallback(TrainerCallback):
    """Times optimizer steps; after training, ``tokens_per_s`` excludes the first (warm-up) step when possible."""

    def __init__(self):
        self.trainer: FastSFTTrainer | None = None
        self.step_times: list[float] = []
        self.step_tokens: list[int] = []
        self._t0 = 0.0
        self._tok0 = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()
        self._tok0 = self.trainer.trained_tokens if self.trainer else 0

    def on_step_end(self, args, state, control, **kwargs):
        self.step_times.append(time.perf_counter() - self._t0)
        self.step_tokens.append((self.trainer.trained_tokens if self.trainer else 0) - self._tok0)

    def summary(self) -> dict[str, float]:
        """``{"steps", "tokens", "seconds", "tokens_per_s", "s_per_step", "peak_rss_mb"[, "peak_gpu_mb"]}`` over the
        timed (post-warm-up) steps; peak memory is the process's so far (RSS; allocated CUDA memory on a GPU)."""
        skip = 1 if len(self.step_times) > 1 else 0
        secs, toks = sum(self.step_times[skip:]), sum(self.step_tokens[skip:])
        n = len(self.step_times) - skip
        out = {"steps": n, "tokens": toks, "seconds": round(secs, 3),
               "tokens_per_s": round(toks / secs, 2) if secs > 0 else 0.0,
               "s_per_step": round(secs / n, 3) if n else 0.0,
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        if torch.cuda.is_available():
            out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


# ------------------------------------------------------------------------------------------------ configs
def build_sft_config(config: Any, output_dir: str | Path, has_eval: bool, plain: bool | None = None) -> SFTConfig:
    """TRL ``SFTConfig`` from a :class:`finetune.config.DistillConfig`-like object (CPU-safe defaults)."""
    plain = config.plain if plain is None else plain
    dev = device_defaults(config, plain)
    eval_strategy = "no"
    if has_eval:
        eval_strategy = "steps" if config.eval_steps else "epoch"
    grouped = config.group_by_length and not plain
    extra = dict(getattr(config, "sft_args", None) or {})  # any other SFTConfig field; it wins over ours below
    if getattr(config, "run_name", None) and "run_name" not in extra:
        extra["run_name"] = f"{config.run_name}/{Path(output_dir).name}"  # trackers (wandb, mlflow) name the stage
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=config.eval_steps,
        prediction_loss_only=True,
        completion_only_loss=True,
        packing=False,
        padding_free=False,
        train_sampling_strategy="group_by_length" if grouped else "random",
        report_to=config.report_to,
        disable_tqdm=True,
        **dev,
    )
    kwargs.update(extra)
    return SFTConfig(**kwargs)


def use_completion_head(config: Any, plain: bool | None = None) -> bool:
    """Whether the completion-only LM head applies: the fast path on CPU (measured faster there); on CUDA/XPU TRL's
    own path runs (its fused LM-head kernels), and with packing/padding-free batches too."""
    plain = config.plain if plain is None else plain
    extra = getattr(config, "sft_args", None) or {}
    if plain or extra.get("packing") or extra.get("padding_free") or extra.get("use_liger_kernel"):
        return False
    return bool(device_defaults(config, plain)["use_cpu"] or not accelerator_available())


def lora_config(config: Any, model: Any = None):
    """PEFT ``LoraConfig`` from the config's LoRA fields (``lora_top_layers`` needs the ``model``'s layer count)."""
    targets = config.lora_target_modules
    if list(targets) == ["all-linear"]:
        targets = "all-linear"
    layers, top = None, int(getattr(config, "lora_top_layers", 0) or 0)
    if top:
        count = model.config.get_text_config().num_hidden_layers
        if top > count:
            raise ValueError(f"lora_top_layers={top} but the model has {count} decoder layers.")
        layers = list(range(count - top, count))
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM", layers_to_transform=layers)


def make_sft_trainer(model: Any, tokenizer: Any, train_rows: list[dict], eval_rows: list[dict], config: Any,
                     output_dir: str | Path, plain: bool | None = None,
                     callbacks: list | None = None) -> tuple[FastSFTTrainer, ThroughputCallback]:
    """Build the (fast or plain) SFT trainer on prompt/completion rows, with a fresh LoRA adapter."""
    plain = config.plain if plain is None else plain
    args = build_sft_config(config, output_dir, has_eval=bool(eval_rows), plain=plain)
    throughput = ThroughputCallback()
    head = use_completion_head(config, plain)
    trainer = FastSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(config, model),
        callbacks=[throughput, *(callbacks or [])],
        completion_head=head,
        group_by_prefix=head and bool(getattr(config, "group_by_prefix", True)),  # the head's shared-prefix pass
    )
    throughput.trainer = trainer
    return trainer, throughput


def train_sft(model_folder: str | Path, train_rows: list[dict], eval_rows: list[dict], config: Any,
              output_dir: str | Path, resume: bool = False, callbacks: list | None = None) -> dict[str, Any]:
    """Train one LoRA adapter with SFT and save it (safetensors) with the tokenizer under ``output_dir/adapter``.

    Args:
        model_folder: HF folder of the base model.
        train_rows: TRL conversational prompt/completion rows.
        eval_rows: Held-out rows for eval loss (may be empty).
        config: A :class:`finetune.config.DistillConfig`-like object.
        output_dir: Stage directory (checkpoints, adapter, model card, curves).
        resume: Continue from the latest ``checkpoint-*`` in ``output_dir`` when there is one.
        callbacks: Extra ``TrainerCallback`` objects (e.g. the Optuna pruning callback).

    Returns:
        Metrics: train/eval loss, runtime, throughput, adapter path, log history.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model_and_tokenizer(model_folder, dtype=base_weights_dtype(config),
                                                attn_implementation=getattr(config, "attn_implementation", None))
    trainer, throughput = make_sft_trainer(model, tokenizer, train_rows, eval_rows, config, output_dir,
                                           callbacks=callbacks)
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if resume:
        logger.info("Resuming %s from %s", output_dir.name, checkpoint or "scratch (no checkpoint found)")
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "train_rows": len(train_rows),
                               "eval_rows": len(eval_rows), "global_step": trainer.state.global_step,
                               "train_runtime_s": result.metrics.get("train_runtime"),
                               "resumed_from": checkpoint, "plain": bool(config.plain),
                               "base_dtype": canonical_dtype(model.dtype)}
    if eval_rows:
        last = [h["eval_loss"] for h in trainer.state.log_history
                if "eval_loss" in h and h.get("step") == trainer.state.global_step]
        metrics["eval_loss"] = last[-1] if last else trainer.evaluate()["eval_loss"]
    metrics["throughput"] = throughput.summary()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics["first_loss"], metrics["last_loss"] = (losses[0], losses[-1]) if losses else (None, None)
    adapter_dir = output_dir / "adapter"
    trainer.save_model(str(adapter_dir))  # every rank calls it (ZeRO-3 gathers); the main process writes
    metrics["adapter"] = str(adapter_dir)
    metrics["completion_head"] = trainer.completion_head
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(adapter_dir))
        metrics["curves"] = plot_curves(trainer.state.log_history, output_dir / "training_curves.png",
                                        title=f"SFT {output_dir.name}")
        write_model_card(trainer, adapter_dir, metrics, model_name=output_dir.name,
                         base=getattr(config, "base", None))
    trainer.accelerator.wait_for_everyone()
    metrics["log_history"] = trainer.state.log_history
    return metrics


# ------------------------------------------------------------------------------------------------ DPO
def dpo_kwargs(config: Any, output_dir: str | Path) -> dict[str, Any]:
    """``DPOConfig`` keyword arguments: the curated dpo_* fields, the TrainingArguments fields of ``sft_args``
    (``--deepspeed``, ``--optim``, ... apply to every stage) and ``dpo_args`` (any DPOConfig field) last."""
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), beta=config.dpo_beta, learning_rate=config.dpo_learning_rate,
        max_steps=config.dpo_max_steps, num_train_epochs=config.dpo_num_train_epochs,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, max_length=config.max_length,
        seed=config.seed, logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, report_to=config.report_to, disable_tqdm=True,
        **device_defaults(config, plain=True if config.plain else False),
    )
    sft_args = getattr(config, "sft_args", None) or {}
    dpo_args = getattr(config, "dpo_args", None) or {}
    if sft_args:
        training_fields = trl_fields()[2]
        kwargs.update({k: v for k, v in sft_args.items() if k in training_fields})
    kwargs.update(dpo_args)
    return kwargs


def train_dpo(model_folder: str | Path, sft_adapter: str | Path, rows: list[dict], config: Any,
              output_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """DPO from an SFT adapter: continues training that adapter against a frozen copy of it (TRL's "ref" adapter).

    Args:
        model_folder: HF folder of the base model.
        sft_adapter: The SFT adapter folder (the policy's start and the reference).
        rows: TRL conversational ``prompt``/``chosen``/``rejected`` rows.
        config: A :class:`finetune.config.DistillConfig`-like object (dpo_* fields, batch sizes, lengths).
        output_dir: Stage directory.
        resume: Continue from the latest checkpoint in ``output_dir``.

    Returns:
        Metrics (losses, reward accuracy, adapter path).
    """
    output_dir = Path(output_dir)
    model, tokenizer = load_model_and_tokenizer(model_folder, dtype=base_weights_dtype(config),
                                                attn_implementation=getattr(config, "attn_implementation", None))
    model = PeftModel.from_pretrained(model, str(sft_adapter), is_trainable=True)
    args = DPOConfig(**dpo_kwargs(config, output_dir))
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    checkpoint = latest_checkpoint(output_dir) if resume else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    adapter_dir = output_dir / "adapter"
    main = trainer.is_world_process_zero()
    if main:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(adapter_dir),
                                                                        selected_adapters=["default"])
        tokenizer.save_pretrained(str(adapter_dir))
    history = trainer.state.log_history
    acc = [h["rewards/accuracies"] for h in history if "rewards/accuracies" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    metrics = {"train_loss": result.training_loss, "rows": len(rows), "global_step": trainer.state.global_step,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "reward_accuracy_last": acc[-1] if acc else None, "adapter": str(adapter_dir),
               "resumed_from": checkpoint}
    if main:
        metrics["curves"] = plot_curves(history, output_dir / "training_curves.png", title=f"DPO {output_dir.name}")
        write_model_card(trainer, adapter_dir, metrics, model_name=output_dir.name, base=getattr(config, "base", None))
    trainer.accelerator.wait_for_everyone()
    metrics["log_history"] = history
    return metrics
