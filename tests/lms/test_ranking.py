"""The exact tree-attention search against brute-force option scores (full-attention and sliding-window models)."""

from __future__ import annotations

import pytest
import torch
from tiny_lm_factory import OPTIONS

from lms.constrained import OptionTrie, rank_trie, score_options
from lms.local_engine import _terminators
from lms.model_store import load_local_model
from lms.prefix_cache import PrefixCache
from lms.ranking import rank_tree


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_local_model(f"local:{tiny_model_dir}", dtype="float32")


@pytest.fixture(scope="module")
def sliding(tiny):
    """A random two-layer Gemma 3 (one sliding-window layer of width 6, one global layer) on the tiny tokenizer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    config = Gemma3TextConfig(vocab_size=len(tiny.tokenizer), hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                              sliding_window=6, layer_types=["sliding_attention", "full_attention"],
                              pad_token_id=tiny.tokenizer.pad_token_id, attn_implementation="sdpa")
    return Gemma3ForCausalLM(config).eval()


def _prompts(tok, n):
    return [tok(f"<|user|>\nAge {20 + i} {'worked as a cashier then ' * (i % 3)}{OPTIONS[i % len(OPTIONS)]}\n"
                f"<|assistant|>\n", add_special_tokens=False)["input_ids"] for i in range(n)]


def _brute(model, ids, trie, k):
    scores = score_options(model, ids, trie, OPTIONS)
    return sorted(zip(OPTIONS, scores, strict=True), key=lambda item: -item[1])[:k]


@pytest.mark.parametrize("step_nodes", [1, 3, 64])
@pytest.mark.parametrize("k", [1, 3, len(OPTIONS)])
def test_tree_search_equals_brute_force(tiny, step_nodes, k):
    tok = tiny.tokenizer
    trie = OptionTrie(tok, OPTIONS, _terminators(tok))
    prompts = _prompts(tok, 5)
    stats: dict[str, int] = {}
    ranked = rank_tree(tiny.model, prompts, trie, k, pad=tok.pad_token_id, step_nodes=step_nodes, max_rows=2,
                       stats=stats)
    assert stats["expanded"] > 0 and stats["steps"] >= 1
    for ids, ours in zip(prompts, ranked, strict=True):
        brute = _brute(tiny.model, ids, trie, k)
        assert [o for o, _ in ours] == [o for o, _ in brute]
        assert [s for _, s in ours] == pytest.approx([s for _, s in brute], abs=1e-4)


def test_tree_search_keeps_the_sliding_window_and_the_prefix_cache(tiny, sliding):
    tok = tiny.tokenizer
    trie = OptionTrie(tok, OPTIONS, _terminators(tok))
    prompts = _prompts(tok, 4)
    assert min(len(p) for p in prompts) > 6  # longer than the window: the sliding layer's cache is truncated
    cold = rank_tree(sliding, prompts, trie, 4, pad=tok.pad_token_id, step_nodes=2)
    cache = PrefixCache(max_tokens=4096)
    warm = rank_tree(sliding, prompts, trie, 4, pad=tok.pad_token_id, step_nodes=2, prefix_cache=cache)
    for ids, a, b in zip(prompts, cold, warm, strict=True):
        brute = _brute(sliding, ids, trie, 4)
        assert [o for o, _ in a] == [o for o, _ in brute] == [o for o, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in brute], abs=1e-4)
        assert [o for o, _ in rank_trie(sliding, ids, trie, 4)] == [o for o, _ in a]


def test_tree_search_node_cap_returns_what_it_completed(tiny, caplog):
    tok = tiny.tokenizer
    trie = OptionTrie(tok, OPTIONS, _terminators(tok))
    ranked = rank_tree(tiny.model, _prompts(tok, 2), trie, len(OPTIONS), pad=tok.pad_token_id, max_nodes=3)
    assert "max_nodes=3" in caplog.text
    assert all(len(r) < len(OPTIONS) for r in ranked)


def test_tree_layer_appends_like_concatenation_past_its_reserve():
    from lms.ranking import _TreeLayer

    torch.manual_seed(0)
    keys, values = torch.randn(2, 1, 50, 4), torch.randn(2, 1, 50, 4)
    layer = _TreeLayer(keys, values, reserve=2)
    ref_k, ref_v = keys, values
    for width in (1, 3, 1, 6):  # grows twice
        k, v = torch.randn(2, 1, width, 4), torch.randn(2, 1, width, 4)
        out_k, out_v = layer.update(k, v)
        ref_k, ref_v = torch.cat([ref_k, k], dim=-2), torch.cat([ref_v, v], dim=-2)
        assert torch.equal(out_k, ref_k) and torch.equal(out_v, ref_v)
        assert layer.get_seq_length() == ref_k.shape[-2]
        # room for at most twice the tree (or the reserve) beyond what it holds: the prompt part never doubles
        assert layer._keys.shape[-2] <= ref_k.shape[-2] + max(2, 2 * (ref_k.shape[-2] - 50))
    keys.zero_()  # the layer holds its own copy of the prompt
    assert torch.equal(layer.keys, ref_k)


def test_chunked_head_normaliser_and_rows_match_the_full_head():
    from types import SimpleNamespace

    from lms.ranking import head_logsumexp, head_rows

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 1000)
    hidden = torch.randn(3, 16) * 5
    for cap in (None, 3.0):
        model = SimpleNamespace(get_output_embeddings=lambda: head, config=SimpleNamespace(final_logit_softcapping=cap))
        full = head(hidden)
        full = torch.tanh(full / cap) * cap if cap else full
        torch.testing.assert_close(head_logsumexp(model, hidden, chunk=96), torch.logsumexp(full, dim=-1))
        index = torch.tensor([[5, 999], [0, 1], [7, 7]])
        torch.testing.assert_close(head_rows(model, hidden, index), full.gather(1, index))
