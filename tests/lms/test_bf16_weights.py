"""A tied embedding held in bfloat16: lossless for bfloat16-valued weights, refused otherwise."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_lm_factory import OPTIONS

from lms.bf16_weights import Bf16Embedding, Bf16Head, full_precision, restore_float32, store_tied_embedding_bf16
from lms.constrained import OptionTrie, head_row_logits
from lms.local_engine import _terminators
from lms.model_store import clear_registry, load_local_model
from lms.quant_head import Int8Head, _quantize_rows
from lms.ranking import head_logsumexp, rank_beam, rank_tree


def _gemma(vocab: int, bf16_values: bool = True, tied: bool = True):
    """A random two-layer Gemma 3 (scaled, tied embedding) in float32; its weights bfloat16 numbers if asked."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(3)
    config = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=6,
                              layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=tied,
                              attn_implementation="sdpa")
    model = Gemma3ForCausalLM(config).eval()
    if bf16_values:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.bfloat16().float())
    return model


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_local_model(f"local:{tiny_model_dir}", dtype="float32").tokenizer


def _prompts(tok, n):
    return [tok(f"<|user|>\nAge {20 + i} worked as {OPTIONS[i % len(OPTIONS)]}\n<|assistant|>\n",
                add_special_tokens=False)["input_ids"] for i in range(n)]


def test_compacted_model_computes_exactly_the_float32_model(tokenizer):
    plain = _gemma(len(tokenizer))
    compact = copy.deepcopy(plain)
    saved = store_tied_embedding_bf16(compact)
    vocab, hidden_size = plain.get_output_embeddings().weight.shape
    assert saved == vocab * hidden_size * 2
    assert isinstance(compact.get_input_embeddings(), Bf16Embedding)
    assert isinstance(compact.get_output_embeddings(), Bf16Head)
    assert compact.get_output_embeddings().weight.dtype == torch.bfloat16
    assert compact.dtype == torch.float32  # the model still computes in float32
    ids = torch.tensor(_prompts(tokenizer, 1))
    hidden = torch.randn(7, hidden_size)
    index = torch.randint(0, vocab, (7, 5))
    with torch.inference_mode():
        assert torch.equal(compact(ids).logits, plain(ids).logits)
        assert torch.equal(compact.get_output_embeddings()(hidden), plain.get_output_embeddings()(hidden))
        assert torch.equal(head_logsumexp(compact, hidden, chunk=64), head_logsumexp(plain, hidden, chunk=64))
        assert torch.equal(head_row_logits(compact.get_output_embeddings(), hidden, index),
                           head_row_logits(plain.get_output_embeddings(), hidden, index))


def test_rankings_of_a_compacted_model_are_the_float32_models(tokenizer):
    plain = _gemma(len(tokenizer))
    compact = copy.deepcopy(plain)
    assert store_tied_embedding_bf16(compact)
    trie = OptionTrie(tokenizer, OPTIONS, _terminators(tokenizer))
    prompts = _prompts(tokenizer, 4)
    pad = tokenizer.pad_token_id
    for rank in (lambda m: rank_tree(m, prompts, trie, 3, pad=pad), lambda m: rank_beam(m, prompts, trie, 3, 3, pad)):
        assert rank(compact) == rank(plain)


def test_weights_that_bfloat16_would_round_or_untied_heads_stay_float32(tokenizer):
    rounded = _gemma(len(tokenizer), bf16_values=False)
    assert store_tied_embedding_bf16(rounded) == 0
    assert type(rounded.get_output_embeddings()) is torch.nn.Linear
    assert rounded.get_output_embeddings().weight.dtype == torch.float32
    untied = _gemma(len(tokenizer), tied=False)
    assert store_tied_embedding_bf16(untied) == 0
    assert type(untied.get_input_embeddings()).__name__ == "Gemma3TextScaledWordEmbedding"


def test_full_precision_restores_a_plain_float32_pair_for_the_block(tokenizer):
    plain = _gemma(len(tokenizer))
    compact = copy.deepcopy(plain)
    store_tied_embedding_bf16(compact)
    ids = torch.tensor(_prompts(tokenizer, 1))
    with torch.inference_mode():
        with full_precision(compact):
            head = compact.get_output_embeddings()
            assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
            assert head.weight is compact.get_input_embeddings().weight
            assert torch.equal(compact(ids).logits, plain(ids).logits)
        assert isinstance(compact.get_output_embeddings(), Bf16Head)
        assert torch.equal(compact(ids).logits, plain(ids).logits)
    with full_precision(plain):  # nothing to restore: a no-op
        assert type(plain.get_output_embeddings()) is torch.nn.Linear


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_int8_copy_of_a_bfloat16_head_is_the_float32_heads():
    torch.manual_seed(0)
    weight = torch.randn(300, 16).bfloat16().float()
    whole = torch.quantize_per_channel(weight, (weight.abs().amax(1) / 127).clamp(min=1e-12).double(),
                                       torch.zeros(300, dtype=torch.long), 0, torch.qint8)
    for source in (weight, weight.bfloat16()):
        chunked = _quantize_rows(source, chunk=7)
        assert torch.equal(chunked.int_repr(), whole.int_repr())
        assert torch.equal(chunked.q_per_channel_scales(), whole.q_per_channel_scales())
    linear = torch.nn.Linear(16, 300, bias=False)
    linear.weight.data = weight
    hidden = torch.randn(4, 16)
    assert torch.equal(Int8Head(Bf16Head(weight.bfloat16(), chunk=64)).approximate(hidden),
                       Int8Head(linear).approximate(hidden))


def test_loading_keeps_the_bfloat16_table_where_an_int8_head_decodes_and_restores_it_for_the_exact_head(
        tokenizer, tmp_path):
    model = _gemma(len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    ids = torch.tensor(_prompts(tokenizer, 1))
    clear_registry()
    try:
        for head, kind in (("int8", Bf16Head), ("exact", torch.nn.Linear)):
            loaded = load_local_model(f"local:{tmp_path}", dtype="float32", device="cpu", head=head)
            assert loaded.head == head and type(loaded.model.get_output_embeddings()) is kind
            with torch.inference_mode():
                assert torch.equal(loaded.model(ids).logits, model(ids).logits)
    finally:
        clear_registry()


def test_restore_float32_puts_the_models_own_modules_back(tokenizer):
    plain = _gemma(len(tokenizer))
    compact = copy.deepcopy(plain)
    original_head = compact.get_output_embeddings()
    store_tied_embedding_bf16(compact)
    assert original_head.weight.numel() == 0  # its float32 table was freed
    assert restore_float32(compact) and not restore_float32(compact)
    assert compact.get_output_embeddings() is original_head
    assert type(compact.get_input_embeddings()).__name__ == "Gemma3TextScaledWordEmbedding"
    ids = torch.tensor(_prompts(tokenizer, 1))
    with torch.inference_mode():
        assert torch.equal(compact(ids).logits, plain(ids).logits)
