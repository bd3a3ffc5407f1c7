"""The TRL SFT routine shared by ``finetune.distill``, the Optuna study and the DSPy provider.

Fast path (default) vs ``plain``:

* **Completion-only LM head.** Gemma 3's 262k-token LM head dominates a CPU training step. TRL's fused LM head
  scores only the label positions on Triton devices (CUDA/XPU) but every position elsewhere, so on CPU a plain
  ``SFTTrainer`` projects every prompt token through the head and then masks it. :func:`add_completion_head`
  patches the model so that, with ``completion_head=True``, the backbone's hidden states are sliced to the
  completion positions *before* ``lm_head``; the loss is the same token-mean cross-entropy.
  This shortcut applies on CPU only (:func:`use_completion_head`); on CUDA/XPU TRL's own loss path runs.
* **bf16 autocast** where the hardware computes bf16 natively and faster (:func:`device_defaults`); fp32 elsewhere.
* **Length-grouped batches** (``train_sampling_strategy="group_by_length"``) to cut padding. TRL's ``padding_free``
  needs FlashAttention and is not used on CPU; on a GPU with flash-attn, ``packing`` can be set through TRL.
"""

from __future__ import annotations

import functools
import logging
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from transformers.utils import ModelOutput
from trl import SFTConfig, SFTTrainer

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
    from lms.hardware import resolve_dtype

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


# ------------------------------------------------------------------------------------------------ completion head
@dataclass
class CompletionHeadOutput(ModelOutput):
    """Output of a forward with ``completion_head=True``: summed loss and counts over the completion positions."""

    loss_sum: torch.Tensor | None = None
    num_valid: torch.Tensor | None = None
    num_correct: torch.Tensor | None = None


def add_completion_head(model: Any) -> Any:
    """Patch a causal LM so ``model(..., labels=..., completion_head=True)`` runs ``lm_head`` on label positions only.

    The backbone (``model.base_model``) runs on the whole sequence; its last hidden states are shifted against the
    labels and only rows whose label is not ``-100`` go through ``lm_head`` (the module is called, so LoRA on the
    head and DeepSpeed/FSDP hooks still apply). Gemma's ``final_logit_softcapping`` is honoured. Without the flag the
    original forward runs, so generation is unchanged. Apply before wrapping the model with PEFT.

    Returns:
        The same model (patched in place; patching twice is a no-op).
    """
    if getattr(model, "_nextocc_completion_head", False):
        return model
    original_forward = model.forward
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)

    @functools.wraps(type(model).forward)
    def forward(self, *args, completion_head=False, labels=None, num_items_in_batch=None, **kwargs):
        if not completion_head:
            if labels is not None:
                kwargs["labels"] = labels
            if num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            return original_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        for key in ("output_attentions", "output_hidden_states", "return_dict"):
            kwargs.pop(key, None)
        hidden = _backbone_hidden(self, self.base_model, *args, **kwargs)[:, :-1]
        targets = labels[:, 1:].to(hidden.device)
        mask = targets != -100
        logits = self.get_output_embeddings()(hidden[mask]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        target = targets[mask]
        loss_sum = F.cross_entropy(logits, target, reduction="sum")
        correct = (logits.detach().argmax(-1) == target).sum()
        return CompletionHeadOutput(loss_sum=loss_sum, num_valid=mask.sum(), num_correct=correct)

    model.forward = types.MethodType(forward, model)
    model._nextocc_completion_head = True
    return model


MIN_SHARED_PREFIX = 32


def shared_prefix_len(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> int:
    """Length of the token prefix that every row of a right-padded batch starts with (0 for one row)."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    different = (~same).nonzero()
    length = int(different[0]) if len(different) else input_ids.shape[1]
    return min(length, input_ids.shape[1] - 1)


def _backbone_hidden(model: Any, backbone: Any, input_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
    """The backbone's last hidden states; a token prefix shared by every row (DSPy's system prompt) runs once.

    The prefix is computed for one row with its KV cache kept (gradients flow through it), the cache is repeated
    over the batch, and the rows' suffixes continue from it: the same hidden states as one full forward, at the cost
    of the prefix once per batch instead of once per row.
    """
    mask, share = kwargs.get("attention_mask"), getattr(model, "_nextocc_share_prefix", True)
    prefix = shared_prefix_len(input_ids, mask) if share and input_ids is not None and "position_ids" not in kwargs \
        and kwargs.get("inputs_embeds") is None else 0
    if prefix < MIN_SHARED_PREFIX:
        return backbone(input_ids=input_ids, **kwargs).last_hidden_state
    from transformers import DynamicCache

    rows, length = input_ids.shape
    rest = {k: v for k, v in kwargs.items() if k not in ("attention_mask", "use_cache")}
    cache = DynamicCache(config=model.config)
    head = backbone(input_ids=input_ids[:1, :prefix], attention_mask=mask[:1, :prefix] if mask is not None else None,
                    cache=cache, use_cache=True, **rest).last_hidden_state
    cache.batch_repeat_interleave(rows)
    positions = torch.arange(prefix, length, device=input_ids.device).expand(rows, -1)
    tail = backbone(input_ids=input_ids[:, prefix:], attention_mask=mask, position_ids=positions, cache=cache,
                    use_cache=True, **rest).last_hidden_state
    return torch.cat([head.expand(rows, -1, -1), tail], dim=1)


class FastSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss uses :func:`add_completion_head` (``completion_head=False`` behaves like TRL's).

    Also counts the non-padding tokens it trains on (``trained_tokens``) for throughput reports.
    """

    def __init__(self, *args: Any, completion_head: bool = True, **kwargs: Any):
        self.completion_head = completion_head
        self.trained_tokens = 0
        model = kwargs.get("model", args[0] if args else None)
        if completion_head and not isinstance(model, str):
            add_completion_head(getattr(model, "get_base_model", lambda: model)())
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and "attention_mask" in inputs:
            self.trained_tokens += int(inputs["attention_mask"].sum())
        if not self.completion_head:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        inputs.pop("use_cache", None)
        out = model(**inputs, labels=labels, completion_head=True)
        denom = out.num_valid if num_items_in_batch is None else num_items_in_batch
        loss = out.loss_sum / torch.as_tensor(denom, device=out.loss_sum.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        num_valid = self.accelerator.gather_for_metrics(out.num_valid).sum()
        num_correct = self.accelerator.gather_for_metrics(out.num_correct).sum()
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train" and "attention_mask" in inputs:
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, out) if return_outputs else loss


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
        import resource

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


def lora_config(config: Any):
    """PEFT ``LoraConfig`` from the config's LoRA fields."""
    from peft import LoraConfig

    targets = config.lora_target_modules
    if list(targets) == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


def load_model_and_tokenizer(folder: str | Path, dtype: torch.dtype = torch.float32,
                             attn_implementation: str | None = None):
    """Load a causal LM (training dtype, fp32 master weights by default) and its tokenizer with a chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lms.chat_template import ensure_chat_template

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


def make_sft_trainer(model: Any, tokenizer: Any, train_rows: list[dict], eval_rows: list[dict], config: Any,
                     output_dir: str | Path, plain: bool | None = None,
                     callbacks: list | None = None) -> tuple[FastSFTTrainer, ThroughputCallback]:
    """Build the (fast or plain) SFT trainer on prompt/completion rows, with a fresh LoRA adapter."""
    from datasets import Dataset

    plain = config.plain if plain is None else plain
    args = build_sft_config(config, output_dir, has_eval=bool(eval_rows), plain=plain)
    throughput = ThroughputCallback()
    trainer = FastSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[throughput, *(callbacks or [])],
        completion_head=use_completion_head(config, plain),
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
    from finetune.artifacts import plot_curves, write_model_card

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model_and_tokenizer(model_folder,
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
                               "resumed_from": checkpoint, "plain": bool(config.plain)}
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
