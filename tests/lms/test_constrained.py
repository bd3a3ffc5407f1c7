"""Beam ranking against the exact ranking, and LM-head rows for constrained fields."""

from __future__ import annotations

import pytest
import torch
from tiny_lm_factory import OPTIONS

from lms.constrained import OptionTrie, rank_trie
from lms.local_engine import _terminators
from lms.model_store import load_local_model
from lms.next_token import head_logits
from lms.ranking import rank_beam


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_local_model(f"local:{tiny_model_dir}", dtype="float32")


def _prompts(tok, n):
    return [tok(f"<|user|>\nAge {20 + i} cashier then {OPTIONS[i % len(OPTIONS)]}\n<|assistant|>\n",
                add_special_tokens=False)["input_ids"] for i in range(n)]


def test_beam_ranking_equals_exact_ranking_on_a_tiny_trie(tiny):
    tok = tiny.tokenizer
    trie = OptionTrie(tok, OPTIONS, _terminators(tok))
    prompts = _prompts(tok, 5)
    wide = rank_beam(tiny.model, prompts, trie, k=len(OPTIONS), width=len(OPTIONS), pad=tok.pad_token_id)
    narrow = rank_beam(tiny.model, prompts, trie, k=3, width=4, pad=tok.pad_token_id, max_rows=8)
    for ids, beam, top3 in zip(prompts, wide, narrow, strict=True):
        exact = rank_trie(tiny.model, ids, trie, len(OPTIONS))
        assert [o for o, _ in beam] == [o for o, _ in exact]
        assert [s for _, s in beam] == pytest.approx([s for _, s in exact], abs=1e-4)
        exact_scores = dict(exact)
        assert len(top3) == 3 and [s for _, s in top3] == sorted((s for _, s in top3), reverse=True)
        for option, score in top3:  # a narrow beam may miss options, but scores what it finds exactly
            assert score == pytest.approx(exact_scores[option], abs=1e-4)


@pytest.mark.parametrize("width", [3, 4])
def test_beam_top_options_do_not_depend_on_its_depth(tiny, width):
    # at a fixed width a deeper beam only adds options after the shallower one's (the engine ranks as deep as asked)
    tok = tiny.tokenizer
    trie = OptionTrie(tok, OPTIONS, _terminators(tok))
    prompts = _prompts(tok, 6)
    deep = rank_beam(tiny.model, prompts, trie, k=3, width=width, pad=tok.pad_token_id)
    wide = rank_beam(tiny.model, prompts, trie, k=3, width=len(OPTIONS), pad=tok.pad_token_id)
    assert any([o for o, _ in a] != [o for o, _ in b] for a, b in zip(deep, wide, strict=True))  # a real beam
    for k in (1, 2):
        shallow = rank_beam(tiny.model, prompts, trie, k=k, width=width, pad=tok.pad_token_id)
        for a, b in zip(shallow, deep, strict=True):
            assert [o for o, _ in a] == [o for o, _ in b[:k]]
            assert [s for _, s in a] == pytest.approx([s for _, s in b[:k]], abs=1e-5)


def test_constrained_head_rows_pick_the_same_token_as_the_full_head(tiny):
    model = tiny.model
    hidden = torch.randn(3, model.config.hidden_size)
    allowed = [[5, 17, 42], None, [3]]
    ours = head_logits(model, hidden, allowed)
    full = model.get_output_embeddings()(hidden).float()
    for row, ids in enumerate(allowed):
        if ids is None:
            assert torch.allclose(ours[row], full[row], atol=1e-5)
        else:
            masked = torch.full_like(full[row], float("-inf"))
            masked[ids] = full[row, ids]
            assert int(ours[row].argmax()) == int(masked.argmax())
            assert torch.allclose(ours[row, ids], full[row, ids], atol=1e-5)


def test_softcapped_constrained_rows_keep_other_tokens_impossible(tiny, monkeypatch):
    model, cap = tiny.model, 2.0
    monkeypatch.setattr(model.config, "final_logit_softcapping", cap, raising=False)
    hidden = torch.randn(2, model.config.hidden_size)
    with torch.no_grad():
        ours = head_logits(model, hidden, [[5, 17, 42], None])
        full = torch.tanh(model.get_output_embeddings()(hidden).float() / cap) * cap
    assert torch.isinf(ours[0]).sum() == ours.shape[1] - 3 and torch.allclose(ours[0, [5, 17, 42]], full[0, [5, 17, 42]])
    assert torch.softmax(ours[0], dim=-1)[[5, 17, 42]].sum() == pytest.approx(1.0, abs=1e-6)  # sampling stays inside
    assert torch.allclose(ours[1], full[1], atol=1e-5)


def test_beam_certificate_marks_provably_exact_rankings(tiny):
    tok = tiny.tokenizer
    trie = OptionTrie(tok, OPTIONS, _terminators(tok))
    prompts = _prompts(tok, 6)
    for width in (1, 2, 4, len(OPTIONS)):
        certs: list[bool] = []
        beams = rank_beam(tiny.model, prompts, trie, k=3, width=width, pad=tok.pad_token_id, certificates=certs)
        assert len(certs) == len(prompts)
        for ids, beam, cert in zip(prompts, beams, certs, strict=True):
            exact = [o for o, _ in rank_trie(tiny.model, ids, trie, 3)]
            if cert:
                assert [o for o, _ in beam] == exact
        if width == len(OPTIONS):
            assert all(certs)


def _reference_beam(model, ids, trie, k, width, first_width):
    """A beam with every prefix scored by a full forward pass of prompt + prefix (no caches)."""
    def logprobs(tokens):
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids + tokens])).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)

    terminators = torch.tensor(trie.terminator_ids)
    beams, finished, keep = [(0.0, [], trie.root)], [], first_width
    while beams:
        children = []
        for score, tokens, node in beams:
            lp = logprobs(tokens)
            if node.option is not None:
                finished.append((score + float(torch.logsumexp(lp[terminators], dim=-1)), node.option))
            children += [(score + float(lp[t]), tokens + [t], child) for t, child in node.children.items()]
        done = sorted((s for s, _ in finished), reverse=True)
        bound = done[k - 1] if len(done) >= k else float("-inf")
        children.sort(key=lambda item: -item[0])
        beams, keep = [c for c in children[:keep] if c[0] > bound], width
    return [(o, s) for s, o in sorted(finished, key=lambda item: -item[0])[:k]]


@pytest.mark.parametrize(("width", "first_width"), [(1, 0), (2, 5), (3, 0)])
def test_beam_ranking_equals_a_reference_beam(tiny, width, first_width):
    tok = tiny.tokenizer
    trie = OptionTrie(tok, OPTIONS, _terminators(tok))
    prompts = _prompts(tok, 5)
    beams = rank_beam(tiny.model, prompts, trie, k=2, width=width, first_width=first_width, pad=tok.pad_token_id,
                      max_rows=3)
    for ids, beam in zip(prompts, beams, strict=True):
        reference = _reference_beam(tiny.model, ids, trie, 2, max(width, 2), max(first_width, width, 2))
        assert [o for o, _ in beam] == [o for o, _ in reference]
        assert [s for _, s in beam] == pytest.approx([s for _, s in reference], abs=1e-4)
