"""Configuration of ``python -m finetune.distill`` (TRL-script style: dataclass + ``--config`` YAML + flags).

Every field carries ``metadata={"help": ...}`` (shown by ``--help``). Precedence: defaults < YAML < flags.
:func:`parse_config` uses :func:`programs.run_dir.load_config` when it is importable and a small local
fallback otherwise, so this module works on partial checkouts too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

MODES = ("joint", "two_model", "direct")
T = TypeVar("T")

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class DistillConfig:
    """Distill oracle traces of a compile run into a small student LM with TRL SFT (+ optional DPO) and LoRA."""

    # data
    from_run: str | None = field(default=None, metadata={"help": "Compile run directory holding sft_*.jsonl / dpo_reason.jsonl."})
    joint_file: str | None = field(default=None, metadata={"help": "Explicit sft_joint.jsonl (overrides from_run)."})
    reason_file: str | None = field(default=None, metadata={"help": "Explicit sft_reason.jsonl (overrides from_run)."})
    predict_file: str | None = field(default=None, metadata={"help": "Explicit sft_predict.jsonl (overrides from_run)."})
    direct_file: str | None = field(default=None, metadata={"help": "Explicit sft_direct.jsonl (overrides from_run)."})
    dpo_file: str | None = field(default=None, metadata={"help": "Explicit dpo_reason.jsonl (overrides from_run)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of SFT rows held out for eval loss (0 disables eval)."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Use at most this many SFT rows per dataset (quick runs): a seeded sample across the file, stratified by program step (a capped joint file keeps both steps)."})
    # model
    mode: str = field(default="joint", metadata={"help": "joint: one student on sft_joint.jsonl; two_model: one adapter per step (reason, predict); direct: the no-reason ablation on sft_direct.jsonl."})
    base: str = field(default="local:gemma-3-270m", metadata={"help": "Base model: any local spec lms loads (local:gemma-3-270m, local:/hf/folder) or an HF folder / hub id."})
    # LoRA
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES), metadata={"help": "Module names LoRA adapts (comma-separated on the command line; 'all-linear' allowed)."})
    # SFT (TRL SFTConfig fields)
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Training epochs (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Total optimizer steps per stage (-1: use num_train_epochs)."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Rows per device per micro-batch."})
    per_device_eval_batch_size: int = field(default=4, metadata={"help": "Eval rows per device per batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_length: int = field(default=1024, metadata={"help": "Token limit of prompt+completion (longer rows are truncated)."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of steps with linear LR warm-up."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "LR schedule (transformers SchedulerType)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    seed: int = field(default=0, metadata={"help": "Seed of data order, LoRA init and eval split."})
    logging_steps: int = field(default=1, metadata={"help": "Log the training loss every this many steps."})
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate every this many steps (None: once per epoch)."})
    save_steps: int = field(default=50, metadata={"help": "Write a resumable checkpoint-* every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints per stage."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (None: on for the fast path and on GPUs, off for --plain on CPU)."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Gradient checkpointing (None: on for CUDA, off on CPU)."})
    use_cpu: bool | None = field(default=None, metadata={"help": "Force CPU training (None: CPU when no accelerator is visible)."})
    plain: bool = field(default=False, metadata={"help": "Baseline: stock SFTTrainer loss (LM head on every position), no length grouping."})
    group_by_length: bool = field(default=True, metadata={"help": "Fast path: batch rows of similar length (less padding)."})
    # DPO
    dpo: bool = field(default=False, metadata={"help": "After SFT, run DPO on dpo_reason.jsonl from the SFT adapter of the reason step."})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO beta."})
    dpo_learning_rate: float = field(default=5e-5, metadata={"help": "DPO learning rate."})
    dpo_max_steps: int = field(default=-1, metadata={"help": "DPO optimizer steps (-1: dpo_num_train_epochs)."})
    dpo_num_train_epochs: float = field(default=1.0, metadata={"help": "DPO epochs."})
    # outputs
    output_dir: str = field(default="runs/distill", metadata={"help": "Parent folder of distill run directories."})
    run_name: str | None = field(default=None, metadata={"help": "Run directory name (default: distill-<timestamp>); with --resume, the run to continue."})
    resume: bool = field(default=False, metadata={"help": "Continue the named run: reuse the latest checkpoint-* of each stage; finished stages are skipped."})
    merge: bool = field(default=False, metadata={"help": "Also write merged weights (merge_and_unload, safetensors) a vLLM/SGLang server can serve."})
    # evaluation of the student in the DSPy program
    evaluate: bool = field(default=True, metadata={"help": "Evaluate the program before vs after on the compile run's test split (skipped with a note if unavailable)."})
    eval_split: str = field(default="test", metadata={"help": "Split of the compile run to evaluate on (test or dev)."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate at most this many examples."})
    report_to: str = field(default="none", metadata={"help": "transformers report_to (none, tensorboard, wandb, ...)."})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module.")
        for name in ("lora_r", "lora_alpha", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "max_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}.")
        if self.learning_rate <= 0 or self.dpo_learning_rate <= 0:
            raise ValueError("learning rates must be > 0.")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 or >= 1, got {self.max_steps}.")
        if self.eval_split not in ("test", "dev"):
            raise ValueError(f"eval_split must be 'test' or 'dev', got {self.eval_split!r}.")
        if self.resume and not self.run_name:
            raise ValueError("--resume needs --run_name naming the run directory to continue.")
        if self.dpo and self.mode == "direct":
            raise ValueError("dpo trains the reason step; mode direct has no reason step. Drop --dpo or pick a mode.")
        if not (self.from_run or self.joint_file or self.reason_file or self.predict_file or self.direct_file):
            raise ValueError("No data: give --from_run RUN_DIR (a compile run) or explicit --joint_file / "
                             "--reason_file / --predict_file.")


# ---------------------------------------------------------------------------------------------- parsing
class ConfigError(ValueError):
    """Invalid configuration (fallback when programs.run_dir is not importable)."""


def parse_config(dataclass_type: type[T], argv: Sequence[str] | None = None) -> T:
    """Build a config from ``--config file.yaml`` plus ``--field value`` flags (:func:`programs.run_dir.load_config`).

    Raises:
        ValueError: (``ConfigError``) for unknown keys, wrong types, missing files or invalid values.
    """
    from programs.run_dir import load_config

    return load_config(dataclass_type, argv)
