"""Configuration of ``python -m finetune.distill`` (TRL-script style: dataclass + ``SFTConfig`` + ``--config`` YAML).

:class:`DistillConfig` holds the nextocc fields (data, mode, LoRA, DPO, outputs) and the curated training fields
with CPU-safe defaults. Like TRL's scripts (``TrlParser`` over the script dataclass and ``SFTConfig``),
:func:`parse_distill_args` accepts **every other** TRL ``SFTConfig`` / Transformers ``TrainingArguments`` field as a
flag or YAML key (``--optim``, ``--deepspeed``, ``--push_to_hub``, ``--hub_model_id``, ``--torch_compile``,
``--report_to``, ...; they land in :attr:`DistillConfig.sft_args`) and every ``DPOConfig`` field of the DPO stage
with a ``dpo_`` prefix (``--dpo_loss_type``; :attr:`DistillConfig.dpo_args`). Unknown keys are rejected with the
list of valid ones. Precedence: defaults < YAML < flags. Every field carries ``metadata={"help": ...}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from runkit.config import ConfigError, build_parser, coerce_value, instantiate, load_config, read_config_file

MODES = ("joint", "two_model", "direct", "hybrid")
TRAIN_STEPS = ("reason", "occupation", "reason+occupation")  # finetune.data.row_step names of the SFT rows
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
    hybrid_file: str | None = field(default=None, metadata={"help": "Explicit sft_hybrid_joint.jsonl (overrides from_run; the hybrid student then needs from_run's baseline.json or --baseline_file)."})
    baseline_file: str | None = field(default=None, metadata={"help": "Hybrid mode: the fitted baseline (baseline.json) whose candidates the student's prompts show (default: from_run's baseline.json)."})
    dpo_file: str | None = field(default=None, metadata={"help": "Explicit dpo_reason.jsonl (overrides from_run)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of SFT rows held out for eval loss (0 disables eval)."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Use at most this many SFT rows per dataset (quick runs): a seeded sample across the file, stratified by program step (a capped joint file keeps both steps)."})
    train_steps: list[str] | None = field(default=None, metadata={"help": "Program steps whose SFT rows train the student, as finetune.data.row_step names them: reason, occupation, reason+occupation (the joint program's single call); comma-separated on the command line. None: every row of the mode's files (sft_joint.jsonl mixes all three)."})
    # model
    mode: str = field(default="joint", metadata={"help": "joint: one student on sft_joint.jsonl; two_model: one adapter per step (reason, predict); direct: the no-reason ablation on sft_direct.jsonl; hybrid: one joint student on sft_hybrid_joint.jsonl (prompts with a supervised baseline's candidates; compile with hybrid_baseline)."})
    base: str = field(default="local:gemma-3-270m", metadata={"help": "Base model: any local spec lms loads (local:gemma-3-270m, local:/hf/folder) or an HF folder / hub id."})
    attn_implementation: str | None = field(default=None, metadata={"help": "Attention kernel of the base model (eager, sdpa, flash_attention_2, ...; None: the transformers default)."})
    # LoRA
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES), metadata={"help": "Module names LoRA adapts (comma-separated on the command line; 'all-linear' allowed)."})
    lora_top_layers: int = field(default=0, metadata={"help": "Adapt only the top N decoder layers (PEFT layers_to_transform); the layers below get no backward pass. 0: every layer."})
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
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (None: the machine's dtype rule -- on where the CPU or GPU computes bf16 natively and faster; NEXTOCC_DTYPE overrides)."})
    base_dtype: str | None = field(default=None, metadata={"help": "dtype of the frozen base weights: float32 or bfloat16 (None: bfloat16 where bf16 autocast is on, so no weight is cast per layer call; float32 otherwise). LoRA adapters stay float32 either way."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Gradient checkpointing (None: on for CUDA, off on CPU)."})
    use_cpu: bool | None = field(default=None, metadata={"help": "Force CPU training (None: CPU when no accelerator is visible)."})
    plain: bool = field(default=False, metadata={"help": "Baseline: stock SFTTrainer loss (LM head on every position), no length grouping."})
    group_by_length: bool = field(default=True, metadata={"help": "Fast path: batch rows of similar length (less padding)."})
    group_by_prefix: bool = field(default=True, metadata={"help": "Fast path: batch rows of one DSPy step together (same system message and demos), so the prompt prefix a batch shares runs once."})
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
    report_to: str = field(default="none", metadata={"help": "transformers report_to (none, tensorboard, wandb, mlflow, ...; pip install 'nextocc[tracking]')."})
    # every other TRL / Transformers training field
    sft_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "Any other TRL SFTConfig / TrainingArguments field (also given directly as --field / YAML key, e.g. --optim adamw_torch_fused --deepspeed configs/deepspeed_zero2.json --push_to_hub true --hub_model_id me/student); TrainingArguments fields also apply to the DPO stage."})
    dpo_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "Any other TRL DPOConfig field of the DPO stage (also given as --dpo_<field>, e.g. --dpo_loss_type ipo)."})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        if isinstance(self.train_steps, str):
            self.train_steps = [m.strip() for m in self.train_steps.split(",") if m.strip()]
        if self.train_steps is not None:
            bad = [s for s in self.train_steps if s not in TRAIN_STEPS]
            if bad or not self.train_steps:
                raise ValueError(f"train_steps must name steps from {list(TRAIN_STEPS)} (or be null for every row), "
                                 f"got {self.train_steps!r}.")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module.")
        for name in ("lora_r", "lora_alpha", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "max_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.lora_top_layers < 0:
            raise ValueError(f"lora_top_layers must be >= 0 (0: every layer), got {self.lora_top_layers}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if self.base_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"base_dtype must be float32, bfloat16 or null (the dtype rule), got {self.base_dtype!r}.")
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
        if self.dpo and self.mode in ("direct", "hybrid"):
            raise ValueError(f"dpo trains the plain reason step (dpo_reason.jsonl); mode {self.mode} has none. Drop "
                             "--dpo or pick joint or two_model.")
        _check_trl_args(self.sft_args, self.dpo_args)
        if not (self.from_run or self.joint_file or self.reason_file or self.predict_file or self.direct_file
                or self.hybrid_file):
            raise ValueError("No data: give --from_run RUN_DIR (a compile run) or explicit --joint_file / "
                             "--reason_file / --predict_file.")


# ---------------------------------------------------------------------------------------------- parsing
# SFTConfig fields the distill run sets itself (per-stage output folder, eval/save schedule, the dataset format)
RESERVED_SFT = ("output_dir", "eval_strategy", "save_strategy", "completion_only_loss", "prediction_loss_only")


@lru_cache(maxsize=1)
def trl_fields() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """``(SFTConfig fields, DPOConfig fields, TrainingArguments fields)`` of the installed TRL/Transformers."""
    from transformers import TrainingArguments
    from trl import DPOConfig, SFTConfig

    def names(cls):
        return frozenset(f.name for f in dataclasses.fields(cls) if f.init)

    return names(SFTConfig), names(DPOConfig), names(TrainingArguments)


def _own_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(DistillConfig)}


def _unknown(key: str, valid: set[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    listed = sorted(k for k in valid if not k.startswith("dpo_") or k[4:] in _own_fields() or k in _own_fields())
    return ConfigError(f"{where}: unknown key {key!r}.{hint} Valid keys (DistillConfig and TRL SFTConfig "
                          f"fields): {listed}, plus dpo_<any DPOConfig field> for the DPO stage (dpo_loss_type, "
                          "dpo_label_smoothing, ...); see --help.")


def valid_keys() -> set[str]:
    """Every key ``finetune.distill`` accepts (own fields, SFTConfig fields, ``dpo_`` + DPOConfig fields)."""
    sft, dpo, _ = trl_fields()
    return _own_fields() | (set(sft) - set(RESERVED_SFT)) | {f"dpo_{n}" for n in dpo if n != "output_dir"}


def _check_trl_args(sft_args: Any, dpo_args: Any) -> None:
    if not isinstance(sft_args, dict) or not isinstance(dpo_args, dict):
        raise ValueError("sft_args and dpo_args must be mappings of TRL config field: value.")
    if not sft_args and not dpo_args:
        return
    sft, dpo, _ = trl_fields()
    own = _own_fields()
    for key in sft_args:
        if key in own:
            raise ValueError(f"sft_args: {key!r} is a DistillConfig field; set it as --{key} (or the YAML key).")
        if key in RESERVED_SFT:
            raise ValueError(f"sft_args: {key!r} is set by the distill run (output_dir is the parent of run "
                             "directories; each stage trains into <run>/<stage>); remove it.")
        if key not in sft:
            raise _unknown(key, valid_keys(), "sft_args")
    for key in dpo_args:
        if f"dpo_{key}" in own:
            raise ValueError(f"dpo_args: {key!r} is the DistillConfig field dpo_{key}; set it as --dpo_{key}.")
        if key not in dpo or key == "output_dir":
            raise _unknown(f"dpo_{key}", valid_keys(), "dpo_args")


def _flag_groups(tokens: Sequence[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    for tok in tokens:
        if tok.startswith("--") or not groups:
            groups.append([tok])
        else:
            groups[-1].append(tok)
    return groups


def _parse_trl_flags(cls_name: str, groups: list[list[str]], prefix: str = "") -> dict[str, Any]:
    """Typed values of TRL flags, parsed by Transformers' ``HfArgumentParser`` exactly as TRL's scripts do."""
    if not groups:
        return {}
    from transformers import HfArgumentParser
    from trl import DPOConfig, SFTConfig

    cls = {"SFTConfig": SFTConfig, "DPOConfig": DPOConfig}[cls_name]
    args, keys = [], []
    for group in groups:
        name, eq, value = group[0][2:].partition("=")
        name = name.replace("-", "_")[len(prefix):]
        keys.append(name)
        args += [f"--{name}", *([value] if eq else []), *group[1:]]
    ns, rest = HfArgumentParser(cls).parse_known_args(args)
    if rest:
        raise _unknown(rest[0].lstrip("-"), valid_keys(), "command line")
    return {k: getattr(ns, k) for k in keys}


def _help_text() -> str:
    sft, dpo, _ = trl_fields()
    extra = sorted(set(sft) - _own_fields() - set(RESERVED_SFT))
    return (build_parser(DistillConfig, DistillConfig.__doc__).format_help()
            + "\nEvery other TRL SFTConfig / TrainingArguments field is accepted as --FIELD VALUE or a YAML key "
              "(see `trl sft --help`):\n  " + " ".join(extra)
            + "\n\nDPOConfig fields of the DPO stage, as --dpo_FIELD:\n  "
            + " ".join(f"dpo_{n}" for n in sorted(set(dpo) - {"output_dir"})) + "\n")


def parse_distill_args(argv: Sequence[str] | None = None) -> DistillConfig:
    """:class:`DistillConfig` from ``--config file.yaml`` and flags, TRL-script style (see the module docstring).

    Raises:
        ValueError: (``runkit.config.ConfigError``) for unknown keys (with the valid ones), wrong types,
            missing files or invalid values.
        SystemExit: ``--help``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(_help_text())
        raise SystemExit(0)
    ns, rest = build_parser(DistillConfig).parse_known_args(argv)
    flags = vars(ns)
    config_path = flags.pop("config", None)
    hints = typing.get_type_hints(DistillConfig)
    own = _own_fields()
    sft, dpo, _ = trl_fields()
    values: dict[str, Any] = {}
    sft_args: dict[str, Any] = {}
    dpo_args: dict[str, Any] = {}
    if config_path:
        data = read_config_file(config_path)
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name in own:
                values[name] = coerce_value(value, hints[name], f"{config_path}: {key}", from_text=False)
            elif name in sft and name not in RESERVED_SFT:
                sft_args[name] = value
            elif name.startswith("dpo_") and name[4:] in dpo and name != "dpo_output_dir":
                dpo_args[name[4:]] = value
            else:
                raise _unknown(name, valid_keys(), f"Config file {config_path}")
    groups = _flag_groups(rest)
    for group in groups:
        if not group[0].startswith("--"):
            raise ConfigError(f"command line: unexpected argument {group[0]!r} (flags are --field value).")
    name_of = {id(g): g[0][2:].partition("=")[0].replace("-", "_") for g in groups}
    dpo_groups = [g for g in groups if name_of[id(g)].startswith("dpo_") and name_of[id(g)][4:] in dpo]
    sft_groups = [g for g in groups if g not in dpo_groups]
    for g in sft_groups:
        if name_of[id(g)] in RESERVED_SFT or name_of[id(g)] not in sft:
            raise _unknown(name_of[id(g)], valid_keys(), "command line")
    sft_args.update(_parse_trl_flags("SFTConfig", sft_groups))
    dpo_args.update(_parse_trl_flags("DPOConfig", dpo_groups, prefix="dpo_"))
    for name, text in flags.items():
        values[name] = coerce_value(text, hints[name], f"--{name}", from_text=True)
    values["sft_args"] = {**values.get("sft_args", {}), **sft_args}
    values["dpo_args"] = {**values.get("dpo_args", {}), **dpo_args}
    return instantiate(DistillConfig, values)


def parse_config(dataclass_type: type[T], argv: Sequence[str] | None = None) -> T:
    """Build a config from ``--config file.yaml`` plus ``--field value`` flags.

    :class:`DistillConfig` goes through :func:`parse_distill_args` (TRL fields accepted); other dataclasses through
    :func:`runkit.config.load_config`.

    Raises:
        ValueError: (``ConfigError``) for unknown keys, wrong types, missing files or invalid values.
    """
    if dataclass_type is DistillConfig:
        return parse_distill_args(argv)  # type: ignore[return-value]
    return load_config(dataclass_type, argv)
