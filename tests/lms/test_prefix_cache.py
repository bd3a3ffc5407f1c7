"""Prompt-prefix KV reuse across batches gives the same outputs as a cold cache."""

from __future__ import annotations

from tiny_lm_factory import OPTIONS

from lms.chat_template import end_of_turn_ids
from lms.constrained import NonEmptyText
from lms.generation import Segment, generate_segments
from lms.model_store import load_local_model
from lms.prefix_cache import PrefixCache

SYSTEM = ("Your input fields are: history. Your output fields are: reason. All interactions will be structured in "
          "the following way, with the appropriate values filled in. In adhering to this structure, your objective "
          "is: Given a career history predict the next occupation.")


def _segments(tok, tails):
    prompts = [tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": t}],
                                       tokenize=False, add_generation_prompt=True) for t in tails]
    return [Segment(prompt=p, max_new_tokens=6, constraint=NonEmptyText([0])) for p in prompts]


def test_warm_prefix_cache_matches_cold(tiny_model_dir):
    loaded = load_local_model(f"local:{tiny_model_dir}", dtype="float32")
    tok, end_ids = loaded.tokenizer, end_of_turn_ids(loaded.tokenizer)
    cache = PrefixCache()
    first = [f"worked as a cashier then {o}" for o in OPTIONS[:3]]
    second = [f"Age 30 was {o}" for o in OPTIONS[3:7]]
    generate_segments(loaded.model, tok, _segments(tok, first), end_ids, prefix_cache=cache)
    assert len(cache) == 1 and cache.misses == 1
    warm = generate_segments(loaded.model, tok, _segments(tok, second), end_ids, prefix_cache=cache)
    assert cache.hits >= 1
    cold = generate_segments(loaded.model, tok, _segments(tok, second), end_ids, share_prefix=False)
    assert [r.token_ids for r in warm] == [r.token_ids for r in cold]
    single = generate_segments(loaded.model, tok, _segments(tok, second[:1]), end_ids, prefix_cache=cache)
    assert single[0].token_ids == cold[0].token_ids


def test_lookup_crops_to_the_common_prefix_and_evicts():
    import torch
    from transformers import DynamicCache

    cache = PrefixCache(max_entries=2, max_tokens=100)

    def kv(n):
        c = DynamicCache()
        c.update(torch.arange(n, dtype=torch.float32).view(1, 1, n, 1), torch.zeros(1, 1, n, 1), 0)
        return c

    cache.store(list(range(10)), kv(10))
    length, hit = cache.lookup(list(range(6)) + [99, 98], min_tokens=4)
    assert length == 6 and hit.get_seq_length() == 6
    assert cache.lookup([5, 6, 7], min_tokens=1) == (0, None)
    assert cache.lookup(list(range(3)), min_tokens=4) == (0, None)
    cache.store(list(range(12)), kv(12))  # covers the first entry, which is dropped
    assert len(cache) == 1
    cache.store([7] * 20, kv(20))
    cache.store([8] * 20, kv(20))
    assert len(cache) == 2  # least recently used evicted
    cache.store([9] * 101, kv(101))  # longer than the whole budget: not kept
    assert len(cache) == 2
