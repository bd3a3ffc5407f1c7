"""Throughput of the local LM runtime: a naive one-generate-per-call wrapper (A) vs ``lms.LocalEngine`` (B).

Both run the same two-step DSPy program (history -> reason; history, reason -> occupation) with the ChatAdapter
(no JSON fallback) on the embedded Gemma 3 270M, greedy, on N career histories, in one process:

* A: a minimal engine that renders the chat template and calls ``model.generate`` once per DSPy call (serialized,
  no batching, no cache, no constraints, free-form output).
* B: ``lms.load("local:gemma-3-270m", constrained_fields={"occupation": O*NET titles}, cache=False)`` -- batched,
  field-by-field structured output, O*NET-constrained occupation.

Usage: ``python -m benchmarks.lm_throughput [--n 64] [--naive-n N] [--histories path.jsonl] [--threads 32]``.
Histories: a JSONL file with a ``history`` string per line, or built from the NLSY79 person-year file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events  # noqa: E402

import lms  # noqa: E402
from lms.chat_template import end_of_turn_ids, render_prompt, request_messages  # noqa: E402
from lms.model_store import load_local_model  # noqa: E402

DATA = Path(os.environ.get("NEXTOCC_DATA_DIR", "/work/shared/data"))


class Reason(dspy.Signature):
    """Given a person's career history, explain what their next occupation is likely to be and why."""

    history: str = dspy.InputField()
    reason: str = dspy.OutputField()


class Occupation(dspy.Signature):
    """Given a person's career history and a reason, name their next occupation (an O*NET occupation title)."""

    history: str = dspy.InputField()
    reason: str = dspy.InputField()
    occupation: str = dspy.OutputField()


class TwoStep(dspy.Module):
    def __init__(self):
        super().__init__()
        adapter = dspy.ChatAdapter(use_json_adapter_fallback=False)
        self.reason, self.occupation, self.adapter = dspy.Predict(Reason), dspy.Predict(Occupation), adapter

    def forward(self, history: str):
        with dspy.context(adapter=self.adapter):
            reason = self.reason(history=history).reason
            return self.occupation(history=history, reason=reason)


class NaiveEngine:
    """Baseline: one ``model.generate`` per DSPy call, serialized, greedy, no stop handling beyond end of turn."""

    def __init__(self, spec: str = "local:gemma-3-270m", max_new_tokens: int = 128):
        self.loaded = load_local_model(spec)
        self.max_new_tokens, self.lock, self.tokens = max_new_tokens, threading.Lock(), 0

    def complete(self, request):
        tok, model = self.loaded.tokenizer, self.loaded.model
        prompt = render_prompt(tok, request_messages(request))
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with self.lock, torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                 eos_token_id=end_of_turn_ids(tok), pad_token_id=tok.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        self.tokens += int(new.shape[0])
        text = tok.decode(new, skip_special_tokens=True)
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=int(ids["input_ids"].shape[1]), output_tokens=int(new.shape[0])))

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self):
        pass


def load_histories(path: str | None, n: int) -> list[str]:
    """Histories from a JSONL file (``history`` field) or built from the NLSY79 person-year occupations."""
    if path:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        return [row["history"] for row in rows][:n]
    df = pd.read_csv(DATA / "nlsy79" / "nlsy79_person_year_occ1980.csv.gz",
                     usecols=["person_id", "survey_year", "age_at_survey_year", "hgc", "occ_title"])
    df = df.dropna(subset=["occ_title"]).sort_values(["person_id", "survey_year"])
    histories = []
    for _, person in df.groupby("person_id", sort=True):
        jobs, last = [], None
        for row in person.itertuples():
            if row.occ_title != last:
                jobs.append(f"Age {row.age_at_survey_year} ({int(row.survey_year)}): {row.occ_title}")
                last = row.occ_title
        if len(jobs) >= 4:
            hgc = person["hgc"].dropna()
            education = f"Highest grade completed: {int(hgc.iloc[-1])}.\n" if len(hgc) else ""
            histories.append(education + "\n".join(jobs[:-1][:6]))
        if len(histories) >= n:
            break
    return histories


def run(lm: dspy.LM, histories: list[str], titles: set[str], threads: int) -> dict:
    program = TwoStep()
    results: list = [None] * len(histories)

    def one(i: int):
        with dspy.context(lm=lm):
            try:
                results[i] = program(history=histories[i]).occupation
            except Exception as exc:  # noqa: BLE001 - a parse failure counts as a failed prediction
                results[i] = exc

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(len(histories))))
    wall = time.perf_counter() - start
    parsed = [r for r in results if isinstance(r, str)]
    output_tokens = sum((h.get("usage") or {}).get("completion_tokens", 0) or 0 for h in lm.history)
    return {"n": len(histories), "wall_s": wall, "pred_per_s": len(histories) / wall,
            "lm_calls": len(lm.history), "calls_per_s": len(lm.history) / wall,
            "tok_per_s": output_tokens / wall, "output_tokens": output_tokens,
            "parse_ok": len(parsed) / len(histories), "valid_title": sum(r in titles for r in parsed) / len(histories),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "examples": [str(r)[:80] for r in results[:3]]}


def decode_speed(spec: str, histories: list[str], prompt_tokens: int = 380, new_tokens: int = 100,
                 batch: int = 16) -> dict:
    """Raw decoding speed on ~``prompt_tokens``-token prompts with exactly ``new_tokens`` new tokens (no stops).

    Measures, in one process: ``hf_single`` -- transformers ``model.generate`` on one prompt (the reference figure);
    ``engine_single`` -- the engine's decoding loop (:func:`lms.generation.generate_segments`) on the same prompt;
    ``engine_batch`` -- the same loop on ``batch`` prompts at once (aggregate tokens/s). ``tok_per_s`` counts new
    tokens over the whole call (prefill included); ``decode_tok_per_s`` subtracts the measured prefill time.
    """
    from lms.generation import Segment, generate_segments

    loaded = load_local_model(spec)
    tok, model = loaded.tokenizer, loaded.model
    prompts = []
    for history in histories[:batch]:
        text = render_prompt(tok, [{"role": "user", "content": "Career history:\n" + history * 8}])
        ids = tok(text, add_special_tokens=False)["input_ids"][:prompt_tokens]
        prompts.append(tok.decode(ids))

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def hf(n_new):
        ids = tok(prompts[0], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            model.generate(**ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                           pad_token_id=tok.pad_token_id)

    def engine(rows, n_new):
        segments = [Segment(prompt=p, max_new_tokens=n_new) for p in prompts[:rows]]
        generate_segments(model, tok, segments, end_ids=[])

    out = {}
    hf(2)  # warm-up
    for name, run_fn, rows in (("hf_single", lambda n: hf(n), 1), ("engine_single", lambda n: engine(1, n), 1),
                               ("engine_batch", lambda n: engine(len(prompts), n), len(prompts))):
        prefill = timed(lambda: run_fn(1))
        total = timed(lambda: run_fn(new_tokens))
        out[name] = {"rows": rows, "seconds": round(total, 2), "prefill_s": round(prefill, 2),
                     "tok_per_s": round(rows * new_tokens / total, 1),
                     "decode_tok_per_s": round(rows * (new_tokens - 1) / max(total - prefill, 1e-9), 1)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="histories for the local engine (B)")
    parser.add_argument("--naive-n", type=int, default=None, help="histories for the naive baseline (A); default --n")
    parser.add_argument("--histories", default=None, help="JSONL file with a 'history' field per line")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128, help="per-call token budget (both)")
    parser.add_argument("--spec", default="local:gemma-3-270m")
    parser.add_argument("--decode-batch", type=int, default=16, help="rows of the raw batched-decoding measurement")
    parser.add_argument("--decode-only", action="store_true", help="only the raw decoding table")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    titles = pd.read_csv(DATA / "onet" / "Occupation Data.txt", sep="\t")["Title"].tolist()
    histories = load_histories(args.histories, args.n)
    speed = decode_speed(args.spec, histories, batch=args.decode_batch)
    print("\nRaw decoding (380-token prompt, 100 new tokens, greedy, no stops)")
    print(f"{'variant':<16}{'rows':>6}{'tok/s':>10}{'decode tok/s':>14}{'prefill s':>11}{'wall s':>9}")
    for name, r in speed.items():
        print(f"{name:<16}{r['rows']:>6}{r['tok_per_s']:>10}{r['decode_tok_per_s']:>14}{r['prefill_s']:>11}"
              f"{r['seconds']:>9}")
    print(flush=True)
    if args.decode_only:
        return
    naive_n = args.naive_n or len(histories)
    print(f"{len(histories)} histories (naive baseline on {naive_n}); model {args.spec}; max_tokens {args.max_tokens}",
          flush=True)

    naive = dspy.LM(f"local/{args.spec[len('local:'):]}-naive", engine=NaiveEngine(args.spec, args.max_tokens),
                    cache=False, temperature=0.0, max_tokens=args.max_tokens)
    a = run(naive, histories[:naive_n], set(titles), threads=args.threads)
    print("A done", json.dumps(a), flush=True)
    local = lms.load(args.spec, constrained_fields={"occupation": titles}, cache=False, max_tokens=args.max_tokens,
                     max_batch_size=args.threads, batch_window_ms=50)
    b = run(local, histories, set(titles), threads=args.threads)
    print("B done", json.dumps(b), flush=True)
    print(f"B engine stats: {local._engine_spec.stats}")
    print("Note: a prediction whose first step fails to parse makes one LM call instead of two.")

    header = f"{'metric':<22}{'A naive':>14}{'B engine':>14}{'B/A':>10}"
    print("\n" + header + "\n" + "-" * len(header))
    for key, label, fmt in [("pred_per_s", "predictions/s", "{:.3f}"), ("calls_per_s", "LM calls/s", "{:.3f}"),
                            ("tok_per_s", "generated tok/s", "{:.1f}"),
                            ("parse_ok", "parse success", "{:.1%}"), ("valid_title", "valid O*NET title", "{:.1%}"),
                            ("peak_rss_mb", "peak RSS (MB, cum.)", "{:.0f}"), ("wall_s", "wall (s)", "{:.1f}"),
                            ("lm_calls", "LM calls", "{}"), ("n", "histories", "{}")]:
        ratio = f"{b[key] / a[key]:.2f}" if key in ("pred_per_s", "calls_per_s", "tok_per_s") and a[key] else ""
        print(f"{label:<22}{fmt.format(a[key]):>14}{fmt.format(b[key]):>14}{ratio:>10}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
