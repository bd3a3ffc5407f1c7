"""LocalEngine behaviour on a tiny random model: structured output, constraints, ranking, batching, cache, state."""

from __future__ import annotations

import math
import threading
from typing import Literal

import dspy
import pytest
from tiny_lm_factory import OPTIONS, build_tiny_model

import lms
from lms.constrained import score_options


class NextOccupation(dspy.Signature):
    """Given a career history, explain and predict the next occupation."""

    history: str = dspy.InputField()
    reason: str = dspy.OutputField()
    occupation: str = dspy.OutputField()
    score: int = dspy.OutputField(desc="confidence from 1 to 5")
    level: Literal["low", "high"] = dspy.OutputField()
    flag: bool = dspy.OutputField()


class PickOccupation(dspy.Signature):
    """Pick the next occupation."""

    history: str = dspy.InputField()
    reason: str = dspy.InputField()
    occupation: str = dspy.OutputField()


HISTORIES = [f"Age {20 + i}: worked as a cashier, then {OPTIONS[i % len(OPTIONS)]}." for i in range(6)]


def _lm(spec, **kwargs):
    kwargs.setdefault("constrained_fields", {"occupation": OPTIONS})
    kwargs.setdefault("dtype", "float32")
    kwargs.setdefault("max_field_tokens", 12)
    kwargs.setdefault("cache", False)
    return lms.load(spec, **kwargs)


def test_load_returns_local_lm_with_fingerprint(tiny_spec):
    from lms.local_engine import spec_for

    lm = _lm(tiny_spec)
    assert lms.is_local(lm)
    assert lm.model.startswith("local/") and "@" in lm.model
    # the engine's output-changing settings are part of the name, hence of DSPy's cache key
    assert _lm(tiny_spec).model == lm.model
    assert _lm(tiny_spec, max_field_tokens=5).model != lm.model
    assert _lm(tiny_spec, max_batch_size=3).model == lm.model
    spec, fingerprint = spec_for(lm.model)
    assert spec == tiny_spec and fingerprint == lm.model.split("@")[1].split(".")[0]
    assert not lms.is_local(dspy.LM("openai/gpt-4.1-mini"))


def test_structured_output_always_parses(tiny_spec):
    lm = _lm(tiny_spec)
    predict = dspy.Predict(NextOccupation)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        for history in HISTORIES[:3]:
            out = predict(history=history)
            assert isinstance(out.reason, str)
            assert out.occupation in OPTIONS
            assert isinstance(out.score, int)
            assert out.level in ("low", "high")
            assert isinstance(out.flag, bool)
    text = lm.history[-1]["outputs"][0]
    assert text.startswith("[[ ## reason ## ]]\n") and text.endswith("[[ ## completed ## ]]")


def test_plain_prompt_completion(tiny_spec):
    lm = _lm(tiny_spec, max_tokens=5)
    outputs = lm("Say something")
    assert isinstance(outputs[0], str)


def test_constrained_sampling_only_emits_options(tiny_spec):
    lm = _lm(tiny_spec, temperature=1.5)
    predict = dspy.Predict(PickOccupation)
    seen = set()
    with dspy.context(lm=lm):
        for rollout in range(6):
            out = predict(history=HISTORIES[0], reason="because", config={"rollout_id": rollout})
            assert out.occupation in OPTIONS
            seen.add(out.occupation)
    assert len(seen) >= 2  # sampling over a random model spreads over options


def test_rollout_ids_give_distinct_samples_and_same_id_hits_cache(tiny_spec):
    lm = _lm(tiny_spec, temperature=1.0, cache=True)
    predict = dspy.Predict("history -> reason")
    with dspy.context(lm=lm):
        reasons = [predict(history="x", config={"rollout_id": r}).reason for r in range(4)]
        again = predict(history="x", config={"rollout_id": 0}).reason
    assert len(set(reasons)) >= 3
    assert again == reasons[0]


def test_rank_options_sorted_and_matches_brute_force(tiny_spec):
    lm = _lm(tiny_spec)
    msgs = dspy.ChatAdapter().format(PickOccupation, demos=[], inputs={"history": HISTORIES[1], "reason": "r"})
    ranked = lms.rank_options(lm, msgs, "occupation", k=len(OPTIONS))
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    assert sorted(name for name, _ in ranked) == sorted(OPTIONS)
    assert all(score <= 0 for score in scores)
    loaded, ids, trie = lm._engine_spec.field_prefix(lm.model, msgs, "occupation")
    brute = dict(zip(OPTIONS, score_options(loaded.model, ids, trie, OPTIONS), strict=True))
    for name, score in ranked:
        assert score == pytest.approx(brute[name], abs=1e-4)
    top3 = lms.rank_options(lm, msgs, "occupation", k=3)
    assert [n for n, _ in top3] == [n for n, _ in ranked[:3]]
    assert lms.option_logprob(lm, msgs, "occupation", ranked[0][0]) == pytest.approx(ranked[0][1], abs=1e-4)
    assert lms.option_logprob(lm, msgs, "occupation", "Astronauts") == -math.inf
    several = lms.option_logprobs(lm, msgs, "occupation", [ranked[2][0], "Astronauts", ranked[0][0]])
    assert several[0] == pytest.approx(ranked[2][1], abs=1e-4) and several[1] == -math.inf
    assert several[2] == pytest.approx(ranked[0][1], abs=1e-4)


def test_ranking_runs_on_the_batching_worker_thread(tiny_spec, monkeypatch):
    """Ranking from many DSPy threads must not allocate its large tensors on each of them (glibc arena growth)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import lms.option_ranking
    import lms.ranking

    seen = []
    real = lms.ranking.rank_beam

    def spy(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(lms.option_ranking, "rank_beam", spy)
    lm = _lm(tiny_spec)
    msgs = [dspy.ChatAdapter().format(PickOccupation, demos=[], inputs={"history": h, "reason": "r"})
            for h in HISTORIES[:4]]
    with ThreadPoolExecutor(4) as pool:
        ranked = list(pool.map(lambda m: lms.rank_options(lm, m, "occupation", k=2), msgs))
    assert all(len(r) == 2 for r in ranked)
    assert seen == ["LocalEngine-batcher"] * 4
    with pytest.raises(ValueError, match="boom"):
        lm._engine_spec.run_on_worker(lambda: (_ for _ in ()).throw(ValueError("boom")))
    engine = lm._engine_spec
    assert engine.run_on_worker(lambda: engine.run_on_worker(lambda: threading.current_thread().name)) == \
        "LocalEngine-batcher"  # nested calls from the worker run in place instead of deadlocking


def test_rank_options_after_generated_and_given_prefix_fields(tiny_spec):
    lm = _lm(tiny_spec)
    msgs = dspy.ChatAdapter().format(NextOccupation, demos=[], inputs={"history": HISTORIES[2]})
    generated = lms.rank_options(lm, msgs, "occupation", k=2)
    with dspy.context(lm=lm):
        out = dspy.Predict(NextOccupation)(history=HISTORIES[2])
    given = lms.rank_options(lm, msgs, "occupation", k=2, prefix_fields={"reason": out.reason})
    assert [n for n, _ in generated] == [n for n, _ in given]
    assert [v for _, v in generated] == pytest.approx([v for _, v in given], abs=1e-4)
    assert out.occupation in OPTIONS  # greedy is token-by-token, so not necessarily the top-ranked option
    with pytest.raises(ValueError, match="prefix_fields lacks"):
        lms.rank_options(lm, msgs, "occupation", prefix_fields={})


def test_rank_options_errors(tiny_spec):
    lm = _lm(tiny_spec)
    msgs = dspy.ChatAdapter().format(NextOccupation, demos=[], inputs={"history": "h"})
    with pytest.raises(ValueError, match="no closed option list"):
        lms.rank_options(lm, msgs, "reason")
    with pytest.raises(ValueError, match="not an output field"):
        lms.rank_options(lm, msgs, "salary")
    with pytest.raises(ValueError, match="not a local LM"):
        lms.rank_options(dspy.LM("openai/gpt-4.1-mini"), msgs, "occupation")
    with pytest.raises(ValueError, match="k must be"):
        lms.rank_options(lm, msgs, "occupation", k=0)
    with pytest.raises(ValueError, match="not a DSPy ChatAdapter request"):
        lms.rank_options(lm, [{"role": "user", "content": "hi"}], "occupation")


def test_batched_greedy_equals_one_by_one(tiny_spec):
    sequential_lm = _lm(tiny_spec, batch_window_ms=0, max_batch_size=1)
    batched_lm = _lm(tiny_spec, batch_window_ms=300, max_batch_size=16)
    predict = dspy.Predict(NextOccupation)
    with dspy.context(lm=sequential_lm):
        expected = [predict(history=h).toDict() for h in HISTORIES]
    results = [None] * len(HISTORIES)

    def run(i):
        with dspy.context(lm=batched_lm):
            results[i] = predict(history=HISTORIES[i]).toDict()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(HISTORIES))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected
    engine = batched_lm._engine_spec
    assert engine.stats["batches"] < engine.stats["requests"]  # requests were really batched


def test_parallel_module_batches(tiny_spec):
    lm = _lm(tiny_spec, batch_window_ms=100)
    predict = dspy.Predict(PickOccupation)
    with dspy.context(lm=lm):
        outs = dspy.Parallel(num_threads=4)([(predict, {"history": h, "reason": "r"}) for h in HISTORIES[:4]])
    assert all(o.occupation in OPTIONS for o in outs)
    assert lm._engine_spec.stats["batches"] < 4


def test_cache_hit_skips_generation(tiny_spec):
    lm = _lm(tiny_spec, cache=True)
    predict = dspy.Predict(PickOccupation)
    engine = lm._engine_spec
    with dspy.context(lm=lm):
        first = predict(history="cache me", reason="r")
        calls = engine.stats["requests"]
        second = predict(history="cache me", reason="r")
    assert engine.stats["requests"] == calls
    assert first.occupation == second.occupation
    nocache = _lm(tiny_spec, cache=False)
    with dspy.context(lm=nocache):
        predict(history="cache me", reason="r")
        calls = nocache._engine_spec.stats["requests"]
        predict(history="cache me", reason="r")
    assert nocache._engine_spec.stats["requests"] > calls


def test_save_load_round_trip(tiny_spec, tmp_path):
    lm = _lm(tiny_spec)
    program = dspy.Predict(PickOccupation)
    program.set_lm(lm)
    with dspy.context(lm=lm):
        before = program(history=HISTORIES[0], reason="r").occupation
    path = tmp_path / "program.json"
    program.save(str(path))
    assert "LocalEngine" in path.read_text()
    restored = dspy.Predict(PickOccupation)
    restored.load(str(path), allow_unsafe_lm_state=True)
    assert lms.is_local(restored.lm)
    assert restored.lm.model == lm.model
    assert restored.lm._engine_spec.constrained_fields == {"occupation": OPTIONS}
    assert restored(history=HISTORIES[0], reason="r").occupation == before


def test_copy_routes_to_other_weights(tiny_spec, tmp_path):
    other = build_tiny_model(tmp_path / "other", seed=1)
    lm = _lm(tiny_spec)
    copied = lm.copy(model=f"local/{other}")
    msgs = dspy.ChatAdapter().format(PickOccupation, demos=[], inputs={"history": "h", "reason": "r"})
    a = lms.rank_options(lm, msgs, "occupation", k=3)
    b = lms.rank_options(copied, msgs, "occupation", k=3)
    assert lm._engine_spec.loaded(lm.model) is not copied._engine_spec.loaded(copied.model)
    assert a != b


def test_async_call_uses_same_engine(tiny_spec):
    import asyncio

    lm = _lm(tiny_spec)
    predict = dspy.Predict(PickOccupation)

    async def go():
        with dspy.context(lm=lm):
            return await predict.acall(history="h", reason="r")

    assert asyncio.run(go()).occupation in OPTIONS


def test_shrinking_loop_matches_hf_generate(tiny_model_dir):
    from lms.chat_template import end_of_turn_ids
    from lms.constrained import NonEmptyText
    from lms.generation import Segment, generate_segments
    from lms.model_store import load_local_model

    loaded = load_local_model(f"local:{tiny_model_dir}", dtype="float32")
    tok = loaded.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": h}], tokenize=False, add_generation_prompt=True)
               for h in HISTORIES[:4]]
    segments = [Segment(prompt=p, max_new_tokens=4 + 3 * i, stops=("\n\n",), constraint=NonEmptyText([0]))
                for i, p in enumerate(prompts)]
    end_ids = end_of_turn_ids(tok)
    ours = generate_segments(loaded.model, tok, segments, end_ids, share_prefix=True)
    theirs = generate_segments(loaded.model, tok, segments, end_ids, share_prefix=False, hf_generate=True)
    assert [r.token_ids for r in ours] == [r.token_ids for r in theirs]
    assert [r.text for r in ours] == [r.text for r in theirs]
    assert [r.output_tokens for r in ours] == [r.output_tokens for r in theirs]


def test_ranked_choice_answers_the_top_option_and_keeps_the_ranking(tiny_spec):
    lm = _lm(tiny_spec)
    engine = lm._engine_spec
    predict = dspy.Predict(PickOccupation)
    with dspy.context(lm=lm):
        out = predict(history=HISTORIES[2], reason="r")
    msgs = dspy.ChatAdapter().format(PickOccupation, demos=[], inputs={"history": HISTORIES[2], "reason": "r"})
    hits = engine.stats["rank_memo_hits"]
    ranked = lms.rank_options(lm, msgs, "occupation", k=3)
    assert engine.stats["rank_memo_hits"] == hits + 1  # no second search
    assert out.occupation == ranked[0][0]
    greedy = _lm(tiny_spec, choice_decoding="greedy")
    with dspy.context(lm=greedy):
        assert predict(history=HISTORIES[2], reason="r").occupation in OPTIONS
    assert greedy._engine_spec.stats["rank_calls"] == 0


def test_device_placement_on_cpu(tiny_spec):
    lm = _lm(tiny_spec, device="cpu")
    loaded = lm._engine_spec.loaded()
    assert loaded.device == "cpu" and str(loaded.model.device) == "cpu" and loaded.dtype == "float32"
    with dspy.context(lm=lm):
        assert dspy.Predict(PickOccupation)(history="x", reason="r").occupation in OPTIONS
    with pytest.raises(ValueError, match="ranking"):
        _lm(tiny_spec, ranking="fast")


def test_exact_ranking_mode_matches_brute_force(tiny_spec):
    lm = _lm(tiny_spec, ranking="exact", rank_width=3, rank_k=3)
    msgs = dspy.ChatAdapter().format(PickOccupation, demos=[], inputs={"history": HISTORIES[4], "reason": "r"})
    ranked = lms.rank_options(lm, msgs, "occupation", k=3)
    loaded, ids, trie = lm._engine_spec.field_prefix(lm.model, msgs, "occupation")
    brute = sorted(zip(score_options(loaded.model, ids, trie, OPTIONS), OPTIONS, strict=True), reverse=True)[:3]
    assert [name for name, _ in ranked] == [name for _, name in brute]
