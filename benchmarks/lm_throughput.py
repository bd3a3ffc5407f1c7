"""Speed of the local LM runtime against this machine's own limit, in one run.

Measures, on the embedded Gemma 3 270M (or ``--model``) with the dtype the machine's rule picks (``--dtype``) and
the LM head its probe picks (``--head``, :mod:`lms.quant_head`; the floor and ``generate`` run on the plain fp32
model, :func:`lms.bf16_weights.full_precision`):

* ``matmul_gflops`` and ``floor_tok_s`` per batch size: every linear layer's matmul of one decoding step timed at
  that batch size (attention over the context and norms excluded), so the floor is the model's own arithmetic at
  the measured matmul rate;
* ``hf_generate_tok_s``: transformers' own batched ``generate`` (greedy, same prompts), and ``engine_tok_s``: the
  engine's decoding loop, each as decode tokens/s (prefill timed separately and taken out), batch sizes 1, 8, 32;
* ``rank_s_per_prediction``: beam ranking of the O*NET titles, 16 prompts at once, and
  ``rank_exact_s_per_prediction``: the exact tree-attention search (:func:`lms.ranking.rank_tree`) on the same 16,
  and ``rank_exact_floor_s_per_prediction``: its nodes' arithmetic at the matmul rate (no exact search goes lower);
* ``predictions_per_s`` for the ``two_step`` and ``joint`` programs on NLSY79 dev histories (16 threads);
* ``peak_rss_mb_during``: each phase's own peak RSS (load, floor, decode speeds, ranking, programs; on Linux the
  freed heap is returned and the kernel's high-water mark reset before a phase), ``inference_peak_rss_mb`` (the
  programs phase: what serving two-step and joint predictions holds) and ``peak_rss_mb`` (the largest of them);
* ``other_cpu_share_during``: per phase, the share of the CPUs other processes used (:mod:`benchmarks.contention`);
  a phase above 10% is named in a warning and under the table, as its speeds understate the machine.

Usage: ``python -m benchmarks.lm_throughput --out DIR [--n 64] [--new_tokens 32] [--agreement 0]``.
``--agreement N`` also ranks N dev prompts with both the exact search and the beam and reports how often they agree
(and checks the tree search against the per-prompt best-first search :func:`lms.constrained.rank_trie` on 4).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
import torch  # noqa: E402

import lms  # noqa: E402
from benchmarks.contention import Contention, contended  # noqa: E402
from benchmarks.rank_agreement import agreement as beam_agreement  # noqa: E402
from careers.datasets import load_dataset  # noqa: E402
from careers.onet import OnetTaxonomy  # noqa: E402
from careers.splits import sample_per_person  # noqa: E402
from lms.bf16_weights import full_precision  # noqa: E402
from lms.chat_template import render_prompt  # noqa: E402
from lms.constrained import rank_trie  # noqa: E402
from lms.generation import Segment, generate_segments, prefill_ids  # noqa: E402
from lms.hardware import cpu_info, gpu_info, matmul_gflops  # noqa: E402
from lms.ranking import rank_beam, rank_tree  # noqa: E402
from programs import NextOccupation  # noqa: E402

logger = logging.getLogger(__name__)
BATCHES = (1, 8, 32)


def peak_rss_mb() -> float:
    """The process's peak RSS since it started or since :func:`reset_peak_rss` (Linux VmHWM; else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reset_peak_rss() -> bool:
    """Return freed heap to the OS (glibc ``malloc_trim``) and reset the kernel's peak RSS; False where unsupported."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return False
    return True


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_per_token(model: Any) -> float:
    """Multiply-add FLOPs of one decoded token through every linear layer and the LM head (2 x weights)."""
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    return 2.0 * (linear + model.get_output_embeddings().weight.numel())


def floor_tok_s(model: Any, batch: int, repeats: int = 5) -> float:
    """Decode tokens/s if a step cost only its linear layers' matmuls (``F.linear`` on the model's own weights),
    timed at this batch size: the model's arithmetic at this machine's measured matmul speed."""
    import torch.nn.functional as F

    weights: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
            key = tuple(module.weight.shape)
            weight, count = weights.get(key, (module.weight, 0))
            weights[key] = (weight, count + 1)
    head = model.get_output_embeddings().weight
    weights[tuple(head.shape)] = (head, weights.get(tuple(head.shape), (head, 0))[1] + 1)
    total = 0.0
    with torch.inference_mode():
        for weight, count in weights.values():
            x = torch.randn(batch, weight.shape[1], dtype=weight.dtype, device=weight.device)
            F.linear(x, weight)
            best = min(_timed(lambda x=x, w=weight: F.linear(x, w)) for _ in range(repeats))
            total += best * count
    return round(batch / total, 1)


def _prompts(tokenizer: Any, histories: list[str], batch: int, prompt_tokens: int) -> list[str]:
    """``batch`` chat prompts of about ``prompt_tokens`` tokens each (histories cut to fit), sharing no prefix."""
    out = []
    for i in range(batch):
        ids = tokenizer(histories[i % len(histories)], add_special_tokens=False)["input_ids"][:prompt_tokens]
        text = f"{i}. " + tokenizer.decode(ids)
        out.append(render_prompt(tokenizer, [{"role": "user", "content": text}]))
    return out


def decode_speeds(loaded: Any, histories: list[str], new_tokens: int,
                  prompt_tokens: int = 64) -> dict[str, dict[str, float]]:
    """Decode tokens/s of HF ``generate`` and of the engine loop per batch size: the time of ``new_tokens`` minus the
    time of 1 (the prefill), over ``new_tokens - 1`` tokens per row."""
    model, tok = loaded.model, loaded.tokenizer
    out: dict[str, dict[str, float]] = {"hf_generate_tok_s": {}, "engine_tok_s": {}, "prefill_tok_s": {}}
    inputs = {}
    for batch in BATCHES:
        prompts = _prompts(tok, histories, batch, prompt_tokens)
        inputs[batch] = prompts, tok(prompts, return_tensors="pt", padding=True,
                                     add_special_tokens=False).to(model.device)

    def hf(n, enc):
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)

    def engine(n, prompts):
        segments = [Segment(prompt=p, max_new_tokens=n) for p in prompts]
        generate_segments(model, tok, segments, [], share_prefix=False)

    # transformers' own generate runs on the plain float32 model (a float32 copy of a bfloat16-held embedding)
    for key, fn, context in (("hf_generate_tok_s", hf, full_precision(model)),
                             ("engine_tok_s", engine, contextlib.nullcontext())):
        with context:
            for batch in BATCHES:
                prompts, enc = inputs[batch]
                arg = enc if key == "hf_generate_tok_s" else prompts
                if batch == BATCHES[0]:
                    fn(2, arg)  # warm-up
                first = _timed(lambda fn=fn, arg=arg: fn(1, arg))
                full = _timed(lambda fn=fn, arg=arg: fn(new_tokens, arg))
                out[key][str(batch)] = round(batch * (new_tokens - 1) / max(full - first, 1e-9), 1)
                if key == "engine_tok_s":
                    out["prefill_tok_s"][str(batch)] = round(int(enc["attention_mask"].sum()) / max(first, 1e-9), 1)
    return out


def dev_histories(n: int, seed: int = 0) -> list[Any]:
    """``n`` NLSY79 dev examples, one per person, seeded."""
    return sample_per_person(load_dataset("nlsy79", seed=seed).dev, n, seed)


def _prefill(loaded: Any, prompts: list[list[int]], prefix_cache: Any) -> None:
    """The prompts' prefill alone (what decoding the answer costs before its first token), as the beam does it."""
    model = loaded.model
    with torch.inference_mode():
        hidden = prefill_ids(model, prompts, loaded.tokenizer.pad_token_id, True, prefix_cache)[0]
        model.get_output_embeddings()(hidden)


def ranking(lm: dspy.LM, examples: list[Any], agreement: int, verify: int = 4) -> dict[str, Any]:
    """Beam ranking time per prediction (16 prompts at once) and, for ``agreement`` prompts, agreement with the
    exact search."""
    engine = lm._engine_spec
    program = NextOccupation("direct", lm=lm)
    loaded = engine.loaded(lm.model)
    trie = engine.trie(loaded, tuple(program.taxonomy.titles))
    prompts = []
    for ex in examples[: max(16, agreement)]:
        messages = dspy.ChatAdapter().format(program.predictor.signature, [], {"history": ex.history})
        _, ids, _ = engine.field_prefix(lm.model, messages, "occupation")
        prompts.append(ids)
    engine._ranked.clear()
    batch = prompts[:16]
    engine.prefix_cache(loaded).clear()
    prefill = _timed(lambda: _prefill(loaded, batch, engine.prefix_cache(loaded)))
    engine.prefix_cache(loaded).clear()
    total = _timed(lambda: engine._rank_ids(loaded, batch, trie, 5))
    out: dict[str, Any] = {"rank_s_per_prediction": round((total - prefill) / len(batch), 3),
                           "rank_with_prefill_s_per_prediction": round(total / len(batch), 3),
                           "rank_width": max(engine.rank_width, engine.rank_k),  # the beam the engine runs
                           "rank_first_width": engine.rank_first_width}
    start = time.perf_counter()
    exact_stats: dict[str, int] = {}
    with loaded.lock, torch.inference_mode():
        rank_tree(loaded.model, batch, trie, engine.rank_k, pad=loaded.tokenizer.pad_token_id,
                  prefix_cache=engine.prefix_cache(loaded), stats=exact_stats)
    out["rank_exact_s_per_prediction"] = round((time.perf_counter() - start) / len(batch), 3)
    out["rank_exact_nodes_per_prediction"] = round(exact_stats["expanded"] / len(batch), 1)
    if agreement:
        engine._ranked.clear()
        start = time.perf_counter()
        with loaded.lock, torch.inference_mode():
            beams = rank_beam(loaded.model, prompts[:agreement], trie, engine.rank_k, width=engine.rank_width,
                              first_width=engine.rank_first_width, pad=loaded.tokenizer.pad_token_id,
                              prefix_cache=engine.prefix_cache(loaded))
            beam_total = time.perf_counter() - start
            start = time.perf_counter()
            exact = rank_tree(loaded.model, prompts[:agreement], trie, 5, pad=loaded.tokenizer.pad_token_id,
                              prefix_cache=engine.prefix_cache(loaded))
            exact_total = time.perf_counter() - start
            # the tree search against the old per-prompt best-first search on a few prompts (same dtype; batching
            # changes rounding, so near-ties may swap in bf16)
            checks = [rank_trie(loaded.model, prompts[i], trie, 5) for i in range(min(verify, agreement))]
        top1, overlap = beam_agreement(beams, exact, 5)
        out.update(agreement_n=agreement, top1_agreement=top1, top5_overlap=overlap,
                   exact_s_per_prediction_agreement_run=round(exact_total / agreement, 3),
                   beam_s_per_prediction_agreement_run=round(beam_total / agreement, 3),
                   tree_vs_per_prompt_search_top1=sum(c[0][0] == exact[i][0][0] for i, c in enumerate(checks)),
                   tree_vs_per_prompt_search_n=len(checks))
    return out


def program_speed(lm: dspy.LM, examples: list[Any], threads: int) -> dict[str, float]:
    """Predictions/s of the two-step and joint programs over the examples (``threads`` concurrent calls)."""
    out = {}
    for mode in ("two_step", "joint"):
        program = NextOccupation(mode, lm=lm)
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            preds = list(pool.map(lambda ex, p=program: p(ex.history), examples))
            elapsed = time.perf_counter() - start
        valid = sum(bool(p.onet_code) for p in preds) / len(preds)
        out[mode] = {"predictions_per_s": round(len(preds) / elapsed, 3), "wall_s": round(elapsed, 1),
                     "valid_title_rate": round(valid, 3)}
    return out


def run(n: int = 64, new_tokens: int = 32, agreement: int = 0, dtype: str | None = None, threads: int = 16,
        model: str = lms.DEFAULT_SPEC, head: str | None = None) -> dict[str, Any]:
    """All measurements of the module docstring; returns the results dict."""
    torch.manual_seed(0)
    lm = lms.load(model, dtype=dtype, head=head, constrained_fields={"occupation": _titles()}, cache=False)
    loaded = lm._engine_spec.loaded(lm.model)
    phases = {"load": peak_rss_mb()}  # each phase's own peak RSS
    resets = reset_peak_rss()
    watch, others = Contention(), {}

    def phase_done(name: str) -> None:
        phases[name], others[name] = peak_rss_mb(), watch.share()
        reset_peak_rss()
        watch.mark()

    examples = dev_histories(max(n, agreement))
    histories = [ex.history for ex in examples]
    result: dict[str, Any] = {"cpu": cpu_info(), "gpu": gpu_info(), "device": loaded.device, "dtype": loaded.dtype,
                              "head": loaded.head, "torch_threads": torch.get_num_threads(),
                              "matmul_gflops": round(matmul_gflops(loaded.dtype, size=1024, seconds=1.0,
                                                                   device=loaded.device), 1)}
    with full_precision(loaded.model):  # the floor counts the float32 model's own matmuls
        result["floor_tok_s"] = {str(b): floor_tok_s(loaded.model, b) for b in BATCHES}
    result["flops_per_token"] = flops_per_token(loaded.model)
    result["floor_tok_s_from_matmul_gflops"] = round(result["matmul_gflops"] * 1e9 / result["flops_per_token"], 1)
    phase_done("floor")
    result.update(decode_speeds(loaded, histories, new_tokens))
    phase_done("decode_speeds")
    result.update(ranking(lm, examples, agreement))
    phase_done("ranking")
    result["rank_exact_floor_s_per_prediction"] = exact_floor_s(result["rank_exact_nodes_per_prediction"],
                                                                result["flops_per_token"], result["matmul_gflops"])
    result["programs"] = program_speed(lm, examples[:n], threads)
    phase_done("programs")
    result["other_cpu_share_during"] = others
    if busy := contended(others):
        logger.warning("Other processes used %s of the CPUs during these phases; their speeds understate this "
                       "machine: run the benchmark on an otherwise idle machine.",
                       ", ".join(f"{v:.0%} ({k})" for k, v in busy.items()))
    result["peak_rss_mb_during"], result["peak_rss_reset"] = phases, resets
    result["inference_peak_rss_mb"] = phases["programs"]
    result["predictions_per_s"] = {m: v["predictions_per_s"] for m, v in result["programs"].items()}
    result["engine_vs_floor_32"] = round(result["engine_tok_s"]["32"] / result["floor_tok_s"]["32"], 3)
    result["peak_rss_mb"] = max(phases.values()) if resets else peak_rss_mb()
    result["engine_stats"] = dict(lm._engine_spec.stats)
    result["new_tokens"], result["n"] = new_tokens, n
    return result


def exact_floor_s(nodes: float, flops_per_token: float, gflops: float) -> float:
    """Seconds per prediction that an exact top-k search cannot go below at this matmul rate: every trie node scoring
    above the k-th option must be fed through the model and its children normalised over the whole vocabulary (one
    token's FLOPs, LM head included), and the best-first search feeds no other node."""
    return round(nodes * flops_per_token / (gflops * 1e9), 3)


def _titles() -> list[str]:
    return OnetTaxonomy.load().titles


def table(result: dict[str, Any]) -> str:
    """The printed table."""
    cpu = result["cpu"]
    lines = [f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}; torch {cpu['torch_capability']}); "
             f"device {result['device']}, dtype {result['dtype']}, LM head {result.get('head', 'exact')}, "
             f"{result['torch_threads']} threads; "
             f"matmul {result['matmul_gflops']} GFLOP/s",
             "", f"{'batch':>6}{'floor tok/s':>13}{'HF generate':>13}{'engine':>9}{'engine/floor':>14}"
             f"{'engine/HF':>11}{'prefill tok/s':>15}"]
    for b in map(str, BATCHES):
        floor, hf, eng = result["floor_tok_s"][b], result["hf_generate_tok_s"][b], result["engine_tok_s"][b]
        lines.append(f"{b:>6}{floor:>13}{hf:>13}{eng:>9}{eng / floor:>14.2f}{eng / hf:>11.2f}"
                     f"{result['prefill_tok_s'][b]:>15}")
    lines += ["", f"rank s/prediction (beam, 16 at once): {result['rank_s_per_prediction']} beyond the prompt's "
                  f"prefill, {result['rank_with_prefill_s_per_prediction']} with it (width {result['rank_width']}, "
                  f"first step {result['rank_first_width']})"]
    lines.append(f"exact ranking (tree-attention best-first search, 16 at once): "
                 f"{result['rank_exact_s_per_prediction']} s/prediction, "
                 f"{result['rank_exact_nodes_per_prediction']} trie nodes each; their arithmetic alone "
                 f"{result.get('rank_exact_floor_s_per_prediction', '?')} s at the measured matmul rate")
    if "top1_agreement" in result:
        lines.append(f"beam vs exact on {result['agreement_n']} dev prompts: top-1 {result['top1_agreement']:.1%}, "
                     f"top-5 overlap {result['top5_overlap']:.1%} (exact {result['exact_s_per_prediction_agreement_run']} "
                     f"s/prediction, beam {result['beam_s_per_prediction_agreement_run']}; tree search = per-prompt "
                     f"search top-1 on {result['tree_vs_per_prompt_search_top1']}/{result['tree_vs_per_prompt_search_n']})")
    for mode, v in result["programs"].items():
        lines.append(f"{mode}: {v['predictions_per_s']} predictions/s ({result['n']} NLSY79 dev histories, "
                     f"{v['wall_s']} s, valid titles {v['valid_title_rate']:.0%})")
    if busy := contended(result.get("other_cpu_share_during") or {}):
        lines.append("CONTENDED: other processes used " + ", ".join(f"{v:.0%} of the CPUs during {k}"
                                                                  for k, v in busy.items())
                     + "; those figures understate this machine")
    during = "during" if result.get("peak_rss_reset") else "so far after"
    lines.append(f"peak RSS: {result['peak_rss_mb']} MB; inference (programs) {result['inference_peak_rss_mb']} MB "
                 f"({during} " + ", ".join(f"{k} {v}" for k, v in result.get("peak_rss_mb_during", {}).items()) + ")")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/benchmarks/lm_throughput", help="Folder for lm_throughput.json.")
    parser.add_argument("--n", type=int, default=64, help="NLSY79 dev histories for the program speeds.")
    parser.add_argument("--new_tokens", type=int, default=32, help="Tokens decoded per row in the decode speeds.")
    parser.add_argument("--agreement", type=int, default=0, help="Dev prompts ranked exactly and by beam (0: skip).")
    parser.add_argument("--threads", type=int, default=16, help="Concurrent program calls.")
    parser.add_argument("--dtype", default=None, help="Compute dtype (default: the machine's rule).")
    parser.add_argument("--model", default=lms.DEFAULT_SPEC, help="Local model spec.")
    parser.add_argument("--head", default=None, choices=("auto", "int8", "exact"),
                        help="Greedy decoding's LM head (default: auto, see lms.quant_head).")
    args = parser.parse_args(argv)
    if args.n < 1 or args.new_tokens < 2 or args.agreement < 0:
        parser.error("--n must be >= 1, --new_tokens >= 2 and --agreement >= 0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run(args.n, args.new_tokens, args.agreement, args.dtype, args.threads, args.model, args.head)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm_throughput.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(table(result))
    print(f"\nwrote {out / 'lm_throughput.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
