"""The int8 LM head: it proposes candidates, the exact head scores them, greedy decoding picks what the full head picks."""

from __future__ import annotations

import pytest
import torch

from lms import quant_head
from lms.generation import Segment, generate_segments
from lms.model_store import load_local_model, loaded_heads
from lms.quant_head import Int8Head, attach, int8_head, resolve_head


@pytest.fixture
def linear_head():
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 4096, bias=False)
    head.weight.data.normal_(0, 0.5)
    return head


def test_refined_tokens_carry_exact_logits_and_the_full_heads_argmax(linear_head):
    hidden = torch.randn(32, 64) * 2
    exact = linear_head(hidden)
    logits = Int8Head(linear_head, refine=32).greedy_logits(hidden)
    kept = torch.isfinite(logits)
    assert kept.sum(dim=1).tolist() == [32] * 32  # refine tokens per row, the rest -inf
    torch.testing.assert_close(logits[kept], exact[kept], atol=1e-4, rtol=1e-5)
    assert torch.equal(logits.argmax(dim=1), exact.argmax(dim=1))


def test_banned_tokens_are_never_proposed(linear_head):
    hidden = torch.randn(4, 64) * 2
    exact = linear_head(hidden)
    best = exact.argmax(dim=1).tolist()
    logits = Int8Head(linear_head, refine=16).greedy_logits(hidden, [[best[0]], None, [], [best[3], 7]])
    assert logits[0, best[0]] == float("-inf") and logits[3, best[3]] == float("-inf")
    second = exact[0].clone()
    second[best[0]] = float("-inf")
    assert logits[0].argmax() == second.argmax() and logits[1].argmax() == best[1]


def test_a_head_trained_after_its_copy_is_not_used(linear_head):
    model = _Wrap(linear_head)
    assert attach(model, "int8") == "int8" and int8_head(model) is not None
    with torch.no_grad():
        linear_head.weight.add_(0.1)  # an optimizer step: in place
    assert int8_head(model) is None


def test_resolve_head_names_the_setting(monkeypatch):
    monkeypatch.delenv(quant_head.HEAD_ENV_VAR, raising=False)
    assert resolve_head(None) == "auto" and resolve_head("EXACT") == "exact"
    monkeypatch.setenv(quant_head.HEAD_ENV_VAR, "int8")
    assert resolve_head(None) == "int8" and resolve_head("exact") == "exact"
    monkeypatch.setenv(quant_head.HEAD_ENV_VAR, "int4")
    with pytest.raises(ValueError, match=r"\$NEXTOCC_HEAD must be one of auto, int8, exact"):
        resolve_head(None)
    with pytest.raises(ValueError, match="head= must be one of"):
        resolve_head("fast")


def test_auto_keeps_small_heads_exact_and_int8_refuses_what_it_cannot_copy(linear_head):
    assert attach(_Wrap(linear_head), "auto") == "exact"  # 262k weights: below the size where it pays
    assert attach(_Wrap(linear_head), "exact") == "exact"
    with pytest.raises(RuntimeError, match="computes in torch.bfloat16"):
        attach(_Wrap(torch.nn.Linear(64, 4096, bias=False).to(torch.bfloat16)), "int8")
    with pytest.raises(RuntimeError, match="no larger than"):
        attach(_Wrap(torch.nn.Linear(8, 16, bias=False)), "int8")


def test_greedy_generation_with_the_int8_head_equals_the_exact_head(tiny_model_dir, monkeypatch):
    exact = load_local_model(f"local:{tiny_model_dir}", dtype="float32", head="exact")
    quant = load_local_model(f"local:{tiny_model_dir}", dtype="float32", head="int8")
    assert exact.model is not quant.model and quant.head == "int8" and exact.head == "exact"
    heads = loaded_heads()
    assert heads[f"local:{tiny_model_dir} (torch.float32, cpu, int8)"] == "int8"
    assert heads[f"local:{tiny_model_dir} (torch.float32, cpu, exact)"] == "exact"
    calls = []
    original = Int8Head.greedy_logits
    monkeypatch.setattr(Int8Head, "greedy_logits", lambda self, *a: calls.append(1) or original(self, *a))
    tok = exact.tokenizer
    segments = [Segment(prompt=p, max_new_tokens=12) for p in ("Career history: cashier, then", "A nurse who",
                                                                 "Education: high school. Jobs:")]
    with torch.inference_mode():
        plain = generate_segments(exact.model, tok, segments, [tok.eos_token_id])
        assert not calls
        ours = generate_segments(quant.model, tok, segments, [tok.eos_token_id])
    assert calls and [r.text for r in ours] == [r.text for r in plain]
    with torch.inference_mode():  # temperature alone: Gumbel-max through the int8 head, seeded
        calls.clear()
        drawn = [generate_segments(quant.model, tok, segments, [tok.eos_token_id], sampling={"temperature": 1.0},
                                   seed=1) for _ in range(2)]
        assert calls and [r.text for r in drawn[0]] == [r.text for r in drawn[1]]
        calls.clear()  # top-p sampling keeps the exact head
        generate_segments(quant.model, tok, segments, [tok.eos_token_id], sampling={"temperature": 1.0, "top_p": 0.9},
                          seed=1)
    assert not calls


def test_gumbel_draws_through_the_int8_head_follow_the_softmax(linear_head):
    torch.manual_seed(1)
    hidden = torch.randn(1, 64) * 1.5
    temperature = 0.7
    probs = torch.softmax(linear_head(hidden)[0] / temperature, dim=-1)
    head, n = Int8Head(linear_head, refine=64), 20_000
    ours = head.greedy_logits(hidden.expand(n, -1), noise=temperature).argmax(dim=-1)
    exact = torch.multinomial(probs, n, replacement=True)

    def distance(draws):  # total variation between the draws' frequencies and the softmax
        return 0.5 * (torch.bincount(draws, minlength=probs.numel()) / n - probs).abs().sum().item()

    assert 0.01 < probs.max() < 0.5  # many tokens share the mass
    assert distance(ours) < 1.3 * distance(exact) + 0.005  # as close as exact multinomial draws are


class _Wrap(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def get_output_embeddings(self):
        return self.head
