"""Each decoding step's next token: LM-head logits (only the allowed rows of a constrained row, only an int8 head's
proposals elsewhere where one is attached), banned tokens removed, then greedy or sampled choice.

Sampling with a temperature alone (no top-k/top-p) and an int8 head draws by the Gumbel-max trick: the argmax of
``logits / temperature + Gumbel noise`` is a draw from ``softmax(logits / temperature)``, so the int8 head proposes the
best perturbed tokens and the exact head scores those, as in greedy decoding.
"""

from __future__ import annotations

from typing import Any

import torch

from lms.constrained import head_row_logits, softcap
from lms.quant_head import int8_head


def next_tokens(model: Any, hidden: torch.Tensor, allowed: list[list[int] | None],
                banned: list[list[int] | None], sampling: dict[str, Any] | None) -> torch.Tensor:
    """One token per row from the last hidden states.

    Args:
        model: The causal LM.
        hidden: ``[rows, hidden]`` last hidden states.
        allowed: Per row, the only tokens it may take (None: the whole vocabulary).
        banned: Per row, tokens it may not take (None or empty: none).
        sampling: ``{"temperature", "top_k", "top_p"}``, or None for greedy.
    """
    quant = int8_head(model)
    noise = None
    if sampling is not None:
        plain = not (sampling.get("top_k") or 0) and (sampling.get("top_p") is None or sampling["top_p"] >= 1.0)
        if quant is None or not plain or getattr(model.config, "final_logit_softcapping", None):
            quant = None
        else:
            noise = float(sampling["temperature"])
    logits = head_logits(model, hidden, allowed, quant, banned, noise)
    for i, tokens in enumerate(banned):
        if tokens:
            logits[i, tokens] = float("-inf")
    if noise is not None:
        return logits.argmax(dim=-1)
    return pick(logits, sampling)


def pick(logits: torch.Tensor, sampling: dict[str, Any] | None) -> torch.Tensor:
    """Greedy argmax, or temperature / top-k / top-p sampling (in that order, as transformers does)."""
    if sampling is None:
        return logits.argmax(dim=-1)
    logits = logits / float(sampling["temperature"])
    top_k = sampling.get("top_k") or 0
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    top_p = sampling.get("top_p")
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, float(top_p))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1)[:, 0]


def head_logits(model: Any, hidden: torch.Tensor, rows_allowed: list[list[int] | None], quant: Any = None,
                banned: list[list[int] | None] | None = None, noise: float | None = None) -> torch.Tensor:
    """Next-token logits from the last hidden states.

    Rows with an allowed-token list get only those LM-head rows computed (the others stay ``-inf``), which picks the
    same token as masking the full head; the other rows get only the tokens an int8 ``quant`` head
    (:class:`lms.quant_head.Int8Head`) proposes, if given, but their ``banned`` ones. With ``noise`` (a temperature)
    every row is divided by it and Gumbel-perturbed, so its argmax is a sample.
    """
    head = model.get_output_embeddings()
    full = [i for i, allowed in enumerate(rows_allowed) if allowed is None]
    if quant is not None and len(full) == hidden.shape[0]:
        return quant.greedy_logits(hidden, banned, noise)
    vocab = head.weight.shape[0]
    logits = torch.full((hidden.shape[0], vocab), float("-inf"), dtype=torch.float32, device=hidden.device)
    if full:
        index = torch.tensor(full, device=hidden.device) if len(full) < hidden.shape[0] else slice(None)
        if quant is not None:
            logits[index] = quant.greedy_logits(hidden[index], [banned[i] for i in full] if banned else None, noise)
        else:
            logits[index] = head(hidden[index]).float()
    constrained = [i for i, allowed in enumerate(rows_allowed) if allowed is not None]
    for i in constrained:
        ids = torch.tensor(rows_allowed[i], dtype=torch.long, device=hidden.device)
        logits[i, ids] = head_row_logits(head, hidden[i:i + 1], ids[None])[0]
    logits = softcap(model, logits)
    if noise is not None and constrained:
        index = torch.tensor(constrained, device=hidden.device)
        logits[index] = logits[index] / noise + gumbel(logits[index].shape, hidden.device)
    return logits


def gumbel(shape: tuple[int, ...] | torch.Size, device: Any = None) -> torch.Tensor:
    """Standard Gumbel noise, ``-log(Exp(1))``, from torch's global generator."""
    return torch.empty(shape, device=device).exponential_().log_().neg_()


def top_p_filter(logits: torch.Tensor, top_p: float, head: int = 512) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (as transformers' ``TopPLogitsWarper``).

    Sorting the whole vocabulary is the expensive part; the nucleus almost always lies within the ``head`` most
    likely tokens, so those are sorted first and the full sort runs only for a row whose head falls short.
    """
    probs = torch.softmax(logits, dim=-1)
    m = min(head, logits.shape[-1])
    top, order = torch.topk(probs, m, dim=-1)
    if m < logits.shape[-1] and bool((top.sum(dim=-1) <= top_p).any()):
        top, order = torch.sort(probs, descending=True, dim=-1)
    drop = top.cumsum(dim=-1) - top > top_p
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(1, order, ~drop)
    return logits.masked_fill(~keep, float("-inf"))
