"""Turn-token lookups of lms.chat_template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lms.chat_template import end_of_turn_ids, is_gemma_tokenizer, token_id


def test_token_lookups_match_the_vocabulary_without_building_it(tiny_model_dir, monkeypatch):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    vocab = tok.get_vocab()
    names = ["<end_of_turn>", "<start_of_turn>", "<|im_end|>", "<|eot_id|>", "no-such-token-xyz",
             *list(vocab)[:50]]
    expected_ids = {name: vocab.get(name) for name in names}
    expected_turn = sorted({tok.eos_token_id, *(vocab[t] for t in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>")
                                                if t in vocab)} - {None})
    expected_gemma = "<start_of_turn>" in vocab and "<end_of_turn>" in vocab

    def no_vocab():  # a 262k-entry dict per call was most of a ranked field's setup time
        raise AssertionError("get_vocab() called")

    monkeypatch.setattr(tok, "get_vocab", no_vocab)
    assert {name: token_id(tok, name) for name in names} == expected_ids
    assert end_of_turn_ids(tok) == expected_turn and len(expected_turn) >= 1
    assert is_gemma_tokenizer(tok) is expected_gemma
    with pytest.raises(AssertionError):
        tok.get_vocab()
