"""Training-throughput benchmark: the fast SFT path vs a plain ``SFTTrainer`` configuration on the same data.

``python -m finetune.benchmark --base local:gemma-3-270m --steps 3`` trains a few LoRA SFT steps per variant, each in
its own process (so peak RSS is per variant), and prints tokens/s, s/step, peak RSS and the speed-up ratios:

* ``plain`` -- stock ``SFTTrainer`` loss (TRL's LM head on every position), fp32, random batches (CPU-safe defaults).
* ``plain_bf16`` -- the same with bf16 autocast (TRL's default precision), to separate the precision lever. Both
  plain variants hold the base weights in float32.
* ``fast`` -- the default path: completion-only LM head + the prompt prefix shared by a batch's rows computed once
  + the machine's dtype rule (bf16 autocast only where the hardware computes bf16 natively and faster) +
  step-grouped and length-grouped batches.
* ``fast_no_shared_prefix`` -- ``fast`` with every row's prompt computed in full (isolates the shared-prefix lever).
* ``fast_fp32`` -- ``fast`` in float32 (isolates the dtype lever on a CPU where the rule picks bf16).
* ``fast_fp32_weights`` -- ``fast`` with bf16 autocast over float32 base weights, which autocast casts at every
  layer call (isolates ``base_dtype``: where the rule picks bf16, ``fast`` holds the frozen base in bfloat16).
* ``fast_no_grouping`` -- ``fast`` without length grouping (isolates it).
* ``fast_no_step_grouping`` -- ``fast`` with batches that mix program steps (isolates step grouping, which makes the
  shared prefix the whole system message).
* ``fast_batch1_accum4`` / ``fast_batch8`` -- the batch-size lever: the same effective batch as ``--batch 4`` in four
  micro-batches of one row, and micro-batches twice as large.
* ``fast_lora_top_half`` -- ``fast`` with LoRA on the upper half of the decoder layers only (``lora_top_layers``): the
  lower half runs forward only.
* ``fast_no_lora_dropout`` -- ``fast`` with ``lora_dropout=0`` (PEFT then skips the dropout copy of each adapted
  layer's input).
* ``fast_torch_compile`` -- ``fast`` with TRL's ``torch_compile`` (Accelerate's dynamo plugin, inductor backend). The
  completion head and shared prefix have data-dependent shapes, so every new batch shape recompiles: on a 2-core CPU
  its first steps take many minutes each.

Rows are a seeded sample across the data file, stratified by program step (:func:`finetune.data.cap_rows`), so every
variant trains on the same mix of reason, predictor and joint rows.

The first step of each variant is a warm-up and is not timed. Run it under ``flock /tmp/nextocc_heavy.lock``
on shared machines.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import resource
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from finetune.config import DistillConfig
from finetune.data import cap_rows, read_rows
from finetune.demo_data import export_demo_run
from finetune.distill import resolve_base
from finetune.model_loading import load_model_and_tokenizer
from lms.hardware import canonical_dtype
from lms.model_store import DEFAULT_SPEC

logger = logging.getLogger(__name__)

VARIANTS = {"plain": {"plain": True, "bf16": False, "base_dtype": "float32"},
            "plain_bf16": {"plain": True, "bf16": True, "base_dtype": "float32"},
            "fast": {"plain": False, "bf16": None}, "fast_no_shared_prefix": {"plain": False, "bf16": None},
            "fast_fp32": {"plain": False, "bf16": False},
            "fast_fp32_weights": {"plain": False, "bf16": None, "base_dtype": "float32"},
            "fast_no_grouping": {"plain": False, "bf16": None, "group_by_length": False},
            "fast_no_step_grouping": {"plain": False, "bf16": None, "group_by_prefix": False},
            "fast_batch1_accum4": {"plain": False, "bf16": None, "per_device_train_batch_size": 1,
                                   "gradient_accumulation_steps": 4},
            "fast_batch8": {"plain": False, "bf16": None, "per_device_train_batch_size": 8},
            "fast_lora_top_half": {"plain": False, "bf16": None},
            "fast_no_lora_dropout": {"plain": False, "bf16": None, "lora_dropout": 0.0},
            "fast_torch_compile": {"plain": False, "bf16": None, "sft_args": {"torch_compile": True}}}
_TOP_HALF = {"fast_lora_top_half"}
_NO_SHARED_PREFIX = {"fast_no_shared_prefix"}


def _variant_worker(folder: str, rows: list[dict], config: Any, out_dir: str, queue: Any,
                    share_prefix: bool = True) -> None:
    import torch

    from finetune.trainer import base_weights_dtype, make_sft_trainer  # deferred: trl/peft, in the subprocess

    torch.manual_seed(config.seed)
    model, tokenizer = load_model_and_tokenizer(folder, dtype=base_weights_dtype(config))
    model._nextocc_share_prefix = share_prefix
    trainer, throughput = make_sft_trainer(model, tokenizer, rows, [], config, out_dir)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = throughput.summary()
    result.update(bf16=trainer.args.bf16, base_dtype=canonical_dtype(model.dtype), losses=losses,
                  lora_dropout=trainer.model.peft_config["default"].lora_dropout,
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    queue.put(result)


def run_variant(folder: str, rows: list[dict], config: Any, out_dir: str | Path,
                share_prefix: bool = True) -> dict[str, Any]:
    """Train one variant in a fresh process and return its throughput summary and peak RSS (MB)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_variant_worker, args=(folder, rows, config, str(out_dir), queue, share_prefix))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark variant failed in its subprocess (exit code {proc.exitcode})")
    return queue.get(timeout=10)


def run_benchmark(folder: str, rows: list[dict], config: Any, steps: int = 3,
                  variants: Sequence[str] = ("plain", "fast"), out_dir: str | Path = "runs/benchmark") -> dict[str, Any]:
    """Measure each variant for ``steps`` timed steps (+1 warm-up) on the same rows.

    Args:
        folder: HF folder of the base model.
        rows: Prompt/completion rows (at least ``batch * (steps + 1)`` of them are used).
        config: A :class:`finetune.config.DistillConfig` (batch size, max_length, LoRA fields).
        steps: Timed optimizer steps per variant.
        variants: Names from :data:`VARIANTS`.
        out_dir: Scratch folder for trainer outputs.

    Returns:
        ``{"variants": {name: summary}, "ratio_fast_vs_plain": ..., "ratio_fast_vs_plain_bf16": ...}``.
    """
    per_step = max(config.per_device_train_batch_size * config.gradient_accumulation_steps,
                   *(v.get("per_device_train_batch_size", 1) * v.get("gradient_accumulation_steps", 1)
                     for k, v in VARIANTS.items() if k in variants))
    need = per_step * (steps + 1)
    rows = cap_rows(rows, need, config.seed) if len(rows) > need else (rows * (need // len(rows) + 1))[:need]
    results: dict[str, Any] = {"steps": steps, "rows": len(rows), "variants": {}}
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
        cfg = replace(config, max_steps=steps + 1, save_steps=10**6, eval_fraction=0.0, **VARIANTS[name])
        if name in _TOP_HALF:
            cfg = replace(cfg, lora_top_layers=max(1, _layer_count(folder) // 2))
        logger.info("Benchmark variant %s", name)
        results["variants"][name] = run_variant(folder, rows, cfg, Path(out_dir) / name,
                                                share_prefix=name not in _NO_SHARED_PREFIX)
    tps = {k: v["tokens_per_s"] for k, v in results["variants"].items()}
    for base in [name for name in VARIANTS if name != "fast"]:
        if "fast" in tps and tps.get(base):
            results[f"ratio_fast_vs_{base}"] = round(tps["fast"] / tps[base], 2)
    return results


def _layer_count(folder: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder).get_text_config().num_hidden_layers


def format_table(results: dict[str, Any]) -> str:
    """Plain-text table of a :func:`run_benchmark` result."""
    lines = [f"{'variant':<22}{'bf16':>6}{'weights':>10}{'tokens/s':>11}{'s/step':>9}{'peak RSS MB':>13}"]
    for name, r in results["variants"].items():
        lines.append(f"{name:<22}{r['bf16']!s:>6}{r['base_dtype']:>10}{r['tokens_per_s']:>11}{r['s_per_step']:>9}"
                     f"{r['peak_rss_mb']:>13}")
    lines += [f"{k}: {v}" for k, v in results.items() if k.startswith("ratio")]
    return "\n".join(lines)


def benchmark_training(base: str, data: str | None, *, steps: int, batch: int, max_length: int,
                       variants: Sequence[str] = ("plain", "fast"), out_dir: str | Path = "runs/benchmark"
                       ) -> dict[str, Any]:
    """:func:`run_benchmark` on the rows of ``data`` (a TRL prompt/completion JSONL; None: synthetic demo rows) with
    the base model ``base`` (a local spec or HF folder)."""
    if data:
        rows = read_rows(data)
    else:
        export_demo_run(Path(out_dir) / "data", n=48)
        rows = read_rows(Path(out_dir) / "data" / "sft_reason.jsonl")
    folder, _ = resolve_base(base)
    config = DistillConfig(joint_file="-", per_device_train_batch_size=batch, max_length=max_length)
    return run_benchmark(folder, rows, config, steps, list(variants), out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``--base``, ``--data`` (a sft_*.jsonl; default: synthetic demo rows), ``--steps``, ``--variants``."""

    parser = argparse.ArgumentParser(description="Fast vs plain SFT throughput.")
    parser.add_argument("--base", default=DEFAULT_SPEC, help="Base model spec or HF folder.")
    parser.add_argument("--data", default=None, help="A TRL prompt/completion JSONL (default: synthetic demo rows).")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per variant (after one warm-up step).")
    parser.add_argument("--batch", type=int, default=4, help="per_device_train_batch_size.")
    parser.add_argument("--max_length", type=int, default=1024, help="Token limit per row.")
    parser.add_argument("--variants", default="plain,fast",
                        help=f"Comma-separated, from: {', '.join(VARIANTS)}.")
    parser.add_argument("--out", default="runs/benchmark", help="Scratch/output folder; results.json goes here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = benchmark_training(args.base, args.data, steps=args.steps, batch=args.batch, max_length=args.max_length,
                                 variants=args.variants.split(","), out_dir=args.out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
