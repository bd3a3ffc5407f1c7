"""All speed benchmarks in one run, one combined table: ``python -m benchmarks [--only lm|train] [--quick]``.

* ``lm`` -- LM decoding throughput (:mod:`benchmarks.lm_throughput`): transformers' batched ``generate`` vs the
  ``lms`` engine's decoding loop at batch 32, on the same prompts.
* ``train`` -- SFT training tokens/s (:mod:`finetune.benchmark`): the plain ``SFTTrainer`` configuration vs the fast
  path, each variant in its own process (so its peak RSS is its own).

Every ratio is measured within this invocation (baseline and contender run back to back on the same machine and
data). Peak memory: peak RSS per variant (training: per process; LM: the benchmark process, cumulative over the
variants as ``lm_throughput`` measures it) and, on CUDA, the peak allocated GPU memory. A benchmark that fails
becomes an "unavailable" row with the reason, the other still runs. Run it under ``flock /tmp/nextocc_heavy.lock`` on shared machines; ``--quick`` uses small sizes (a few
minutes on a laptop CPU). ``--json PATH`` also writes the raw results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BENCHES = ("train", "lm")
COLUMNS = ("benchmark", "variant", "tokens/s", "items/s", "wall s", "peak RSS MB", "peak GPU MB", "speed-up")
BASELINES = {"lm": "hf_generate", "train": "plain"}
SIZES = {  # (quick, full)
    "lm_n": (8, 64), "lm_threads": (8, 16), "lm_new_tokens": (8, 32),
    "train_steps": (2, 3), "train_batch": (2, 4), "train_max_length": (512, 1024),
}


def _size(name: str, quick: bool) -> int:
    return SIZES[name][0 if quick else 1]


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _gpu_peak_mb() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except Exception:  # noqa: BLE001 - no torch / no CUDA: no GPU column
        return None
    return None


# ---------------------------------------------------------------------- the two benchmarks
def measure_lm(*, n: int, threads: int, new_tokens: int, spec: str = "local:gemma-3-270m") -> dict[str, Any]:
    """Runs :func:`benchmarks.lm_throughput.run` and returns its batch-32 decode speeds as two rows.

    Returns:
        ``{"variants": {"hf_generate": {...}, "engine": {...}}, "raw": <lm_throughput result>}``; each variant has
        ``tok_per_s`` (decode tokens/s at batch 32), ``pred_per_s`` (two-step predictions/s for the engine),
        ``wall_s`` and ``peak_rss_mb``.
    """
    from benchmarks import lm_throughput  # deferred: torch/transformers, after main() sets the offline defaults

    start = time.perf_counter()
    result = lm_throughput.run(n=n, new_tokens=new_tokens, threads=threads, model=spec)
    wall = round(time.perf_counter() - start, 1)
    return {"variants": {
        "hf_generate": {"tok_per_s": result["hf_generate_tok_s"]["32"], "pred_per_s": None, "wall_s": wall,
                        "peak_rss_mb": result["peak_rss_mb"]},
        "engine": {"tok_per_s": result["engine_tok_s"]["32"], "pred_per_s": result["predictions_per_s"]["two_step"],
                   "wall_s": wall, "peak_rss_mb": result["peak_rss_mb"]}},
        "raw": result, "peak_gpu_mb": _gpu_peak_mb()}


def measure_train(*, steps: int, batch: int, max_length: int, base: str = "local:gemma-3-270m",
                  variants: Sequence[str] = ("plain", "fast"), out_dir: str = "runs/benchmark",
                  data: str | None = None) -> dict[str, Any]:
    """Runs :func:`finetune.benchmark.benchmark_training` (each variant in its own process) on demo SFT rows (or
    ``data``).

    Returns:
        Its result: ``{"variants": {name: {"tokens_per_s", "s_per_step", "peak_rss_mb", ...}}, "ratio_fast_vs_plain"}``.
    """
    from finetune import benchmark as fb  # deferred: torch/transformers, after main() sets the offline defaults

    return fb.benchmark_training(base, data, steps=steps, batch=batch, max_length=max_length, variants=variants,
                                 out_dir=out_dir)


# ---------------------------------------------------------------------- table
def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(float(x)) else None


def assemble_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (benchmark, variant): tokens/s, items/s (predictions/s or steps/s), wall/step seconds, peak RSS,
    peak GPU memory and the speed-up (tokens/s over the benchmark's baseline variant, same run).

    Args:
        results: ``{"lm": measure_lm result | {"error": str}, "train": measure_train result | {"error": str}}``.
    """
    rows: list[dict[str, Any]] = []
    for bench in BENCHES:
        res = results.get(bench)
        if res is None:
            continue
        variants = res.get("variants") or {}
        if res.get("error") or not variants:
            reason = res.get("error") or ("no structured results (see raw output)" if res.get("raw") else "no results")
            rows.append({"benchmark": bench, "variant": "unavailable", "note": reason})
            continue
        base = variants.get(BASELINES[bench]) or next(iter(variants.values()))
        base_tps = _num(base.get("tok_per_s", base.get("tokens_per_s")))
        for name, v in variants.items():
            tps = _num(v.get("tok_per_s", v.get("tokens_per_s")))
            if bench == "lm":
                items, wall = _num(v.get("pred_per_s")), _num(v.get("wall_s"))
            else:
                sps = _num(v.get("s_per_step"))
                items, wall = (1 / sps if sps else None), sps
            rows.append({
                "benchmark": bench, "variant": name, "tokens/s": tps, "items/s": items, "wall s": wall,
                "peak RSS MB": _num(v.get("peak_rss_mb")),
                "peak GPU MB": _num(v.get("peak_gpu_mb", res.get("peak_gpu_mb"))),
                "speed-up": round(tps / base_tps, 2) if tps is not None and base_tps else None,
            })
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The combined plain-text table (``items/s``: predictions/s for lm, optimizer steps/s for train; ``wall s``:
    total seconds for lm, seconds per step for train)."""
    cols = [c for c in COLUMNS if c != "peak GPU MB" or any(r.get(c) is not None for r in rows)]

    def cell(row: Mapping[str, Any], col: str) -> str:
        if row.get("variant") == "unavailable" and col not in ("benchmark", "variant"):
            return row.get("note", "")[:60] if col == cols[2] else ""
        value = row.get(col)
        if value is None:
            return "-"
        if col == "speed-up":
            return f"{value:.2f}x"
        if isinstance(value, float):
            return f"{value:.3f}" if col == "items/s" else f"{value:.1f}"
        return str(value)

    cells = [[cell(r, c) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------------- entry point
def run_benchmarks(only: str | None = None, quick: bool = False, *, spec: str = "local:gemma-3-270m",
                   out_dir: str = "runs/benchmark", train_data: str | None = None,
                   lm_fn: Callable[..., dict] | None = None, train_fn: Callable[..., dict] | None = None
                   ) -> dict[str, Any]:
    """Runs the selected benchmarks (training first: its variants run in subprocesses) and returns their results.

    ``lm_fn``/``train_fn`` replace :func:`measure_lm`/:func:`measure_train` (tests). A benchmark that raises (or cannot
    be imported) is recorded as ``{"error": "..."}``.
    """
    if only not in (None, *BENCHES):
        raise ValueError(f"--only must be one of {list(BENCHES)}, got {only!r}.")
    lm_fn = lm_fn or measure_lm
    train_fn = train_fn or measure_train
    results: dict[str, Any] = {"quick": quick}
    for bench in BENCHES:
        if only and bench != only:
            continue
        t0 = time.perf_counter()
        try:
            if bench == "train":
                results[bench] = train_fn(steps=_size("train_steps", quick), batch=_size("train_batch", quick),
                                          max_length=_size("train_max_length", quick), base=spec,
                                          out_dir=out_dir, data=train_data)
            else:
                results[bench] = lm_fn(n=_size("lm_n", quick), threads=_size("lm_threads", quick),
                                       new_tokens=_size("lm_new_tokens", quick), spec=spec)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the other
            logger.exception("benchmark %s failed", bench)
            results[bench] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        results[bench]["seconds"] = round(time.perf_counter() - t0, 1)
    results["process_peak_rss_mb"] = _peak_rss_mb()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=BENCHES, default=None, help="Run one benchmark only (default: both).")
    parser.add_argument("--quick", action="store_true", help="Small sizes (a few minutes on a laptop CPU).")
    parser.add_argument("--spec", default="local:gemma-3-270m", help="Model spec of both benchmarks.")
    parser.add_argument("--train_data", default=None, help="Train benchmark: a TRL prompt/completion JSONL.")
    parser.add_argument("--out", default="runs/benchmark", help="Scratch folder of the training benchmark.")
    parser.add_argument("--json", default=None, help="Also write the raw results to this JSON file.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    results = run_benchmarks(args.only, args.quick, spec=args.spec, out_dir=args.out, train_data=args.train_data)
    rows = assemble_rows(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "table": rows}, indent=2, default=str),
                                   encoding="utf-8")
    print(format_table(rows))
    print(f"(speed-up: tokens/s over {', '.join(f'{b}: {v}' for b, v in BASELINES.items())} in this run; "
          f"process peak RSS {results['process_peak_rss_mb']} MB)")
    for bench in BENCHES:
        raw = (results.get(bench) or {}).get("raw")
        if raw:
            print(f"\n[{bench}] raw output:\n{raw}")
    return 1 if any((results.get(b) or {}).get("error") for b in BENCHES) else 0


if __name__ == "__main__":
    sys.exit(main())
