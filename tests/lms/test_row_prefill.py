"""Rows longer than a sliding window: the shared prefix once, each row by itself, the same outputs as left padding."""

from __future__ import annotations

import pytest
import torch
from tiny_lm_factory import OPTIONS

from lms.generation import Segment, encode_ids, generate_segments, prefill, prefill_ids
from lms.model_store import load_local_model
from lms.prefix_cache import PrefixCache
from lms.progress import tokens_processed


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_local_model(f"local:{tiny_model_dir}", dtype="float32").tokenizer


@pytest.fixture(scope="module")
def sliding(tok):
    """A random Gemma 3 with a sliding-window layer of width 6 between two global layers."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(3)
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=6,
                              layer_types=["full_attention", "sliding_attention", "full_attention"],
                              pad_token_id=tok.pad_token_id, attn_implementation="sdpa")
    return Gemma3ForCausalLM(config).eval()


def _rows(tok, tails):
    return [tok(f"<|system|>\nYour input fields are: history. Your output fields are: reason. Predict the next "
                f"occupation.\n<|user|>\n{t}\n<|assistant|>\n",
                add_special_tokens=False)["input_ids"] for t in tails]


def test_rows_prefilled_one_by_one_equal_the_left_padded_batch(tok, sliding):
    rows = _rows(tok, ["cashier", f"worked as a cashier then {OPTIONS[2]} for years", OPTIONS[0]])
    assert min(len(r) for r in rows) > 6
    with torch.inference_mode():
        enc, cache = encode_ids(sliding, rows, tok.pad_token_id, share_prefix=False)
        plain = prefill(sliding, enc, cache)
        before = tokens_processed()
        ours = prefill_ids(sliding, rows, tok.pad_token_id)
        counted = tokens_processed() - before
    shared = 0
    while all(r[shared] == rows[0][shared] for r in rows):
        shared += 1
    assert counted == shared + sum(len(r) - shared for r in rows)  # the prefix once, no padding
    torch.testing.assert_close(ours[0], plain[0], atol=1e-5, rtol=1e-4)  # last hidden state per row
    assert torch.equal(ours[2], plain[2]) and torch.equal(ours[3], plain[3])  # mask, positions
    real = plain[2].bool()
    for mine, theirs in zip(ours[1].layers, plain[1].layers, strict=True):
        assert mine.keys.shape == theirs.keys.shape and mine.get_seq_length() == theirs.get_seq_length()
        width = mine.keys.shape[-2]
        keep = real[:, real.shape[1] - width:]  # padding columns hold zeros here, garbage there: masked either way
        torch.testing.assert_close(mine.keys.transpose(1, 2)[keep], theirs.keys.transpose(1, 2)[keep], atol=1e-5,
                                   rtol=1e-4)
        torch.testing.assert_close(mine.values.transpose(1, 2)[keep], theirs.values.transpose(1, 2)[keep],
                                   atol=1e-5, rtol=1e-4)


def test_long_rows_generate_as_with_left_padding_and_reuse_the_prefix_cache(tok, sliding):
    prompts = [tok.decode(r) for r in _rows(tok, [f"Age {20 + i} was {o}" for i, o in enumerate(OPTIONS[:4])])]
    segments = [Segment(prompt=p, max_new_tokens=5) for p in prompts]
    end = [tok.eos_token_id]
    cold = generate_segments(sliding, tok, segments, end, share_prefix=False)
    cache = PrefixCache()
    warm = [generate_segments(sliding, tok, segments, end, prefix_cache=cache) for _ in range(2)]
    assert cache.hits >= 1 and len(cache) == 1  # the second batch took its prefix from the first
    alone = generate_segments(sliding, tok, segments[1:2], end, prefix_cache=cache)  # one row, stored prefix
    for results in warm:
        assert [r.token_ids for r in results] == [r.token_ids for r in cold]
        assert [r.prompt_tokens for r in results] == [r.prompt_tokens for r in cold]
    assert alone[0].token_ids == cold[1].token_ids


def test_a_stored_prefix_past_the_window_misses_where_it_would_need_cropping(tok, sliding):
    rows = _rows(tok, OPTIONS[:2])
    cache = PrefixCache()
    with torch.inference_mode():
        prefill_ids(sliding, rows, tok.pad_token_id, prefix_cache=cache)
    (prefix,) = [list(key) for key in cache._entries]
    assert len(prefix) > 6 and rows[0][: len(prefix)] == prefix
    assert cache.longest(prefix[:-2] + [5]) == len(prefix) - 2
    assert cache.lookup(prefix[:-2]) == (0, None)  # its sliding layer no longer holds what cropping needs
    hit, stored = cache.lookup(prefix + [5])
    assert hit == len(prefix) and stored.get_seq_length() == len(prefix)
    assert (cache.hits, cache.misses) == (1, 2)  # the batch's own miss, the crop's miss


def _kept_rows(tok, sliding, tails, new_tokens=4):
    prompts = [tok.decode(r) for r in _rows(tok, tails)]
    segments = [Segment(prompt=p, max_new_tokens=new_tokens + i % 2) for i, p in enumerate(prompts)]
    return generate_segments(sliding, tok, segments, [tok.eos_token_id], keep=[True] * len(segments))


def _cold_and_continued(tok, sliding, rows, kvs):
    """A cold left-padded prefill of ``rows``, the prefill continuing the kept caches ``kvs``, and the tokens the
    latter computed."""
    with torch.inference_mode():
        enc, cache = encode_ids(sliding, rows, tok.pad_token_id, share_prefix=False)
        plain = prefill(sliding, enc, cache)
        before = tokens_processed()
        ours = prefill_ids(sliding, rows, tok.pad_token_id, starts=kvs)
    return plain, ours, tokens_processed() - before


def test_a_next_field_continues_each_rows_kept_cache_as_a_cold_prefill_would(tok, sliding):
    first = _kept_rows(tok, sliding, [f"{o} at {20 + i}, then more work as {o}" for i, o in enumerate(OPTIONS[:3])])
    header = tok("\n\n[[ ## occupation ## ]]\n", add_special_tokens=False)["input_ids"]
    kvs = [r.kv for r in first]
    assert all(kv is not None and len(kv.ids) == r.prompt_tokens + r.output_tokens - 1 for kv, r in zip(kvs, first, strict=True))
    for kv in kvs:  # the sliding layer holds more than its window of 6 (the rollback margin)
        assert kv.held > 6 and kv.cache.layers[1].keys.shape[-2] == kv.held
    # the next prompts re-render the value: the last kept token is dropped here, so each cache is cut back one token
    rows = [kv.ids[:-1] + header for kv in kvs]
    plain, ours, counted = _cold_and_continued(tok, sliding, rows, kvs)
    assert counted == len(header) * len(rows)  # only the header: the prompts and values came from the kept caches
    torch.testing.assert_close(ours[0], plain[0], atol=1e-5, rtol=1e-4)
    assert torch.equal(ours[2], plain[2]) and torch.equal(ours[3], plain[3])
    real = plain[2].bool()
    for mine, theirs in zip(ours[1].layers, plain[1].layers, strict=True):
        assert mine.keys.shape == theirs.keys.shape and not getattr(mine, "record_past", False)
        keep = real[:, real.shape[1] - mine.keys.shape[-2]:]
        torch.testing.assert_close(mine.keys.transpose(1, 2)[keep], theirs.keys.transpose(1, 2)[keep], atol=1e-5,
                                   rtol=1e-4)


def test_ranking_and_generation_from_kept_caches_equal_cold_ones(tok, sliding):
    from lms.constrained import OptionTrie
    from lms.ranking import rank_beam, rank_tree

    tails = [f"{o} for {i + 2} years" for i, o in enumerate(OPTIONS[:4])]
    header = tok("\n\n[[ ## occupation ## ]]\n", add_special_tokens=False)["input_ids"]
    trie = OptionTrie(tok, list(OPTIONS), [tok.eos_token_id])
    first = _kept_rows(tok, sliding, tails)
    rows = [r.kv.ids + header for r in first]
    cold = rank_tree(sliding, rows, trie, 3, pad=tok.pad_token_id, share_prefix=False)
    warm = rank_tree(sliding, rows, trie, 3, pad=tok.pad_token_id, starts=[r.kv for r in first])
    beam_cold = rank_beam(sliding, rows, trie, 3, pad=tok.pad_token_id, share_prefix=False)
    beam_warm = rank_beam(sliding, rows, trie, 3, pad=tok.pad_token_id,
                          starts=[r.kv for r in _kept_rows(tok, sliding, tails)])
    for a, b in [(cold, warm), (beam_cold, beam_warm)]:
        assert [[o for o, _ in r] for r in a] == [[o for o, _ in r] for r in b]
        assert [s for r in a for _, s in r] == pytest.approx([s for r in b for _, s in r], abs=1e-4)
    second = [Segment(prompt=tok.decode(row), max_new_tokens=4) for row in rows]
    plain = generate_segments(sliding, tok, second, [tok.eos_token_id], share_prefix=False)
    reused = generate_segments(sliding, tok, second, [tok.eos_token_id],
                               starts=[r.kv for r in _kept_rows(tok, sliding, tails)], keep=[True, False, True, False])
    assert [r.token_ids for r in reused] == [r.token_ids for r in plain]
    assert [r.kv is not None for r in reused] == [True, False, True, False]


def test_a_kept_cache_that_does_not_match_past_the_shared_prefix_is_not_used(tok, sliding):
    first = _kept_rows(tok, sliding, ["cashier at a shop", "nurse at a hospital"])
    rows = _rows(tok, ["teacher at a school", "driver of a bus"])  # same system message, other histories
    with torch.inference_mode():
        enc, cache = encode_ids(sliding, rows, tok.pad_token_id, share_prefix=False)
        plain = prefill(sliding, enc, cache)
        ours = prefill_ids(sliding, rows, tok.pad_token_id, starts=[r.kv for r in first])
    torch.testing.assert_close(ours[0], plain[0], atol=1e-5, rtol=1e-4)


def test_a_kept_cache_holds_its_window_plus_the_rollback_and_cuts_back_no_further(tok, sliding, monkeypatch):
    import lms.row_prefill

    monkeypatch.setattr(lms.row_prefill, "ROLLBACK_TOKENS", 2)
    first = _kept_rows(tok, sliding, [f"{o} at {30 + i}" for i, o in enumerate(OPTIONS[:2])])
    kvs = [r.kv for r in first]
    assert all(kv.held == 6 - 1 + 2 and kv.cache.layers[1].keys.shape[-2] == kv.held for kv in kvs)
    header = tok("\n\n[[ ## occupation ## ]]\n", add_special_tokens=False)["input_ids"]
    for cut, resumed in ((1, True), (4, False)):  # within the rollback: continued; past it: prefilled afresh
        kvs = [r.kv for r in _kept_rows(tok, sliding, [f"{o} at {30 + i}" for i, o in enumerate(OPTIONS[:2])])]
        rows = [kv.ids[:-cut] + header for kv in kvs]
        plain, ours, counted = _cold_and_continued(tok, sliding, rows, kvs)
        assert (counted == len(header) * len(rows)) is resumed
        torch.testing.assert_close(ours[0], plain[0], atol=1e-5, rtol=1e-4)
