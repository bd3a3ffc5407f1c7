"""A short check on a machine with a GPU: the embedded model decoding, predicting and training there.

``python -m benchmarks.gpu_check [--n 64] [--steps 4] [--out DIR]`` (a few minutes): loads the embedded Gemma 3 270M
on the GPU with the dtype rule's choice, prints decode tokens/s of the engine and of transformers' ``generate`` at
batch 1, 8 and 32, runs the two-step program on ``n`` NLSY79 dev histories (predictions/s, valid titles), then a few
LoRA SFT steps of the fast trainer path on the GPU (training tokens/s, peak GPU memory). Writes ``gpu_check.json``.
Exits non-zero, saying so, when torch sees no GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from careers.onet import OnetTaxonomy
from finetune.config import DistillConfig
from finetune.data import read_rows
from finetune.demo_data import export_demo_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def train_steps(steps: int, out_dir: Path) -> dict[str, Any]:
    """A few LoRA SFT steps of the default (fast) path on the GPU, on demo prompt/completion rows."""
    import torch

    # deferred: these load transformers, after the offline defaults above are set
    from finetune.model_loading import load_model_and_tokenizer
    from finetune.trainer import make_sft_trainer
    from lms.model_store import embedded_model_dir

    export_demo_run(out_dir / "data", n=48)
    rows = read_rows(out_dir / "data" / "sft_reason.jsonl")
    config = DistillConfig(max_steps=steps, per_device_train_batch_size=8, save_steps=10**6, eval_fraction=0.0)
    model, tokenizer = load_model_and_tokenizer(str(embedded_model_dir()))
    model.to("cuda")
    torch.cuda.reset_peak_memory_stats()
    trainer, throughput = make_sft_trainer(model, tokenizer, rows, [], config, str(out_dir))
    start = time.perf_counter()
    trainer.train()
    result = throughput.summary()
    result.update(wall_s=round(time.perf_counter() - start, 1), bf16=bool(trainer.args.bf16),
                  peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="NLSY79 dev histories for the two-step program.")
    parser.add_argument("--steps", type=int, default=4, help="LoRA SFT steps.")
    parser.add_argument("--new_tokens", type=int, default=32, help="Tokens per row in the decode speeds.")
    parser.add_argument("--out", default="runs/benchmarks/gpu_check", help="Output folder.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU here; run it on a machine with one", file=sys.stderr)
        return 2
    # deferred: these load transformers, after the offline defaults above are set
    from benchmarks.lm_throughput import decode_speeds, dev_histories, floor_tok_s, program_speed
    from lms import load
    from lms.hardware import gpu_info
    from lms.model_store import DEFAULT_SPEC

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = load(DEFAULT_SPEC, device="cuda", constrained_fields={"occupation": OnetTaxonomy.load().titles},
              cache=False, max_batch_size=32)
    loaded = lm._engine_spec.loaded(lm.model)
    examples = dev_histories(args.n)
    result: dict[str, Any] = {"gpu": gpu_info(), "dtype": loaded.dtype, "device": loaded.device,
                              "floor_tok_s": {str(b): floor_tok_s(loaded.model, b) for b in (1, 8, 32)}}
    result.update(decode_speeds(loaded, [ex.history for ex in examples], args.new_tokens))
    result["programs"] = program_speed(lm, examples, threads=32)
    result["train"] = train_steps(args.steps, out / "train")
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"GPU: {result['gpu']['name']} ({result['dtype']})")
    for b in ("1", "8", "32"):
        print(f"batch {b:>2}: engine {result['engine_tok_s'][b]} tok/s, HF generate {result['hf_generate_tok_s'][b]}"
              f" tok/s, floor {result['floor_tok_s'][b]} tok/s")
    for mode, v in result["programs"].items():
        print(f"{mode}: {v['predictions_per_s']} predictions/s, valid titles {v['valid_title_rate']:.0%}")
    t = result["train"]
    print(f"LoRA SFT: {t['tokens_per_s']} training tok/s, bf16 {t['bf16']}, peak GPU {t['peak_gpu_mb']} MB")
    print(f"wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
