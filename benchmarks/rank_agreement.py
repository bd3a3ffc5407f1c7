"""Beam vs exact title ranking on a model's own prompts: how often the fast beam finds the exact top-k.

Reads a prediction file of a claims or evaluation run (JSONL records with ``history`` and, for the two-step and joint
programs, the ``reason`` the model wrote), rebuilds the prompt that ranks the occupation (the reason as the preceding
field's value) and ranks the O*NET titles with :func:`lms.ranking.rank_beam` and the exact
:func:`lms.ranking.rank_tree` on the same prompts.

Usage: ``python -m benchmarks.rank_agreement --model local:gemma-3-270m+runs/distill/<run>/joint/adapter
--predictions runs/claims/<run>/predictions_synthetic_distilled_joint.jsonl --mode joint --n 48 --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
import torch  # noqa: E402

import lms  # noqa: E402
from careers.onet import OnetTaxonomy  # noqa: E402
from lms.ranking import rank_beam, rank_tree  # noqa: E402
from runkit.files import read_records  # noqa: E402
from signatures import PredictDirect, PredictOccupation, ReasonAndPredict  # noqa: E402

MODES = {"joint": ReasonAndPredict, "two_step": PredictOccupation, "direct": PredictDirect}


def prompts_from_records(lm: dspy.LM, mode: str, records: list[dict[str, Any]]) -> list[list[int]]:
    """Token ids of each record's occupation-ranking prompt under ``mode`` (``reason`` is the prefix field's value)."""
    engine = lm._engine_spec
    out = []
    for rec in records:
        inputs = {"history": rec["history"]}
        if mode == "two_step":
            inputs["reason"] = rec["reason"]
        messages = dspy.ChatAdapter().format(MODES[mode], [], inputs)
        prefix = {"reason": rec["reason"]} if mode == "joint" else None
        out.append(engine.field_prefix(lm.model, messages, "occupation", prefix_fields=prefix)[1])
    return out


def run(model: str, predictions: str, mode: str = "joint", n: int = 48, k: int = 5, width: int | None = None,
        dtype: str | None = None, titles: list[str] | None = None) -> dict[str, Any]:
    """Agreement of the beam's top-1/top-k with the exact search's on ``n`` records; returns the results dict.
    ``titles`` are the options ranked (default: the O*NET titles); ``width`` defaults to the engine's beam width."""
    records = [r for r in read_records(Path(predictions)) if not r.get("error")][:n]
    if not records:
        raise ValueError(f"{predictions}: no usable prediction records")
    for i, rec in enumerate(records):
        if not rec.get("history"):
            raise ValueError(f"record {i} has no 'history'; pass a prediction file of a claims or evaluation run")
        if mode != "direct" and not rec.get("reason"):
            raise ValueError(f"record {i} has no 'reason'; mode {mode!r} ranks after the reason (use --mode direct)")
    titles = titles or OnetTaxonomy.load().titles
    lm = lms.load(model, dtype=dtype, constrained_fields={"occupation": list(titles)}, cache=False)
    loaded = lm._engine_spec.loaded(lm.model)
    width = width or lm._engine_spec.rank_width
    trie = lm._engine_spec.trie(loaded, tuple(titles))
    prompts = prompts_from_records(lm, mode, records)
    pad, stats = loaded.tokenizer.pad_token_id, {}
    with loaded.lock, torch.inference_mode():
        start = time.perf_counter()
        beams = rank_beam(loaded.model, prompts, trie, k, width=width, pad=pad)
        beam_s = time.perf_counter() - start
        start = time.perf_counter()
        exact = rank_tree(loaded.model, prompts, trie, k, pad=pad, stats=stats)
        exact_s = time.perf_counter() - start
    count = len(prompts)
    top1, overlap = agreement(beams, exact, k)
    return {"model": model, "predictions": str(predictions), "mode": mode, "n": count, "k": k, "width": width,
            "dtype": loaded.dtype, "device": loaded.device, "top1_agreement": top1, "topk_overlap": overlap,
            "beam_s_per_prediction": round(beam_s / count, 3), "exact_s_per_prediction": round(exact_s / count, 3),
            "exact_nodes_per_prediction": round(stats.get("expanded", 0) / count, 1)}


def agreement(beams: list[list[tuple[str, float]]], exact: list[list[tuple[str, float]]], k: int) -> tuple[float, float]:
    """Share of prompts whose beam top-1 is the exact top-1, and the mean overlap of their top-k sets (over k)."""
    pairs = list(zip(beams, exact, strict=True))
    top1 = sum(b[0][0] == e[0][0] for b, e in pairs) / len(pairs)
    overlap = sum(len({o for o, _ in b[:k]} & {o for o, _ in e[:k]}) / k for b, e in pairs) / len(pairs)
    return round(top1, 4), round(overlap, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Local model spec (a student: local:base+/adapter).")
    parser.add_argument("--predictions", required=True, help="Prediction JSONL with history (and reason) per record.")
    parser.add_argument("--mode", default="joint", choices=sorted(MODES), help="Program whose prompt ranks titles.")
    parser.add_argument("--n", type=int, default=48, help="Records ranked (the first n without an error).")
    parser.add_argument("--k", type=int, default=5, help="Top-k compared.")
    parser.add_argument("--width", type=int, default=None, help="Beam width (default: the engine's, 10).")
    parser.add_argument("--dtype", default=None, help="Compute dtype (default: the machine's rule).")
    parser.add_argument("--out", default=None, help="Folder for rank_agreement.json (default: print only).")
    args = parser.parse_args(argv)
    if args.n < 1 or args.k < 1 or (args.width is not None and args.width < 1):
        parser.error("--n, --k and --width must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(args.model, args.predictions, args.mode, args.n, args.k, args.width, args.dtype)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "rank_agreement.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
