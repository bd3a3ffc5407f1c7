"""Constrained decoding and option ranking: option tries, per-row logits constraints and exact top-k search.

An :class:`OptionTrie` holds the token sequences of a closed list of strings (e.g. the 1,016 O*NET titles). During
generation a :class:`RowConstraintsProcessor` (a transformers ``LogitsProcessor``) lets each batch row emit only
tokens that continue one of its allowed options, or a terminator token (a newline or end of turn) once a full
option is spelled, so a constrained field always decodes to exactly one option.

Ranking scores options as ``log P(option tokens, terminator | prefix)`` with a best-first search over the trie: the
frontier node with the highest cumulative log-probability is expanded next (batched, reusing the prefix's KV cache).
Since log-probabilities only decrease along a path, a completed option that reaches the top of the frontier is
exactly the next best option, so the returned top-k is exact (up to ``max_expansions``).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor

from lms.bf16_weights import compute_dtype

logger = logging.getLogger(__name__)


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    option: str | None = None


class OptionTrie:
    """Prefix trie over the token sequences of allowed options.

    Args:
        tokenizer: The model's tokenizer.
        options: Allowed strings (duplicates and empty strings are ignored).
        terminator_ids: Token ids that may follow a complete option (newline, end of turn).

    Raises:
        ValueError: If no usable option remains.
    """

    def __init__(self, tokenizer: Any, options: list[str], terminator_ids: list[int]):
        self.root = _Node()
        self.terminator_ids = sorted(set(terminator_ids))
        unique = list(dict.fromkeys(o.strip() for o in options if isinstance(o, str) and o.strip()))
        if not unique:
            raise ValueError("A constrained field needs at least one non-empty option")
        encoded = tokenizer(unique, add_special_tokens=False)["input_ids"]
        self.options = unique
        self.token_ids: dict[str, list[int]] = {}
        for option, ids in zip(unique, encoded, strict=True):
            node = self.root
            for token in ids:
                node = node.children.setdefault(int(token), _Node())
            node.option = option
            self.token_ids[option] = list(ids)

    def walk(self, tokens: list[int]) -> _Node | None:
        """The node reached by ``tokens`` from the root, or None if they leave the trie."""
        node = self.root
        for token in tokens:
            node = node.children.get(int(token))
            if node is None:
                return None
        return node


class TrieConstraint:
    """Row constraint: spell one option of a trie, then a terminator."""

    def __init__(self, trie: OptionTrie):
        self.trie = trie

    def allowed_tokens(self, generated: list[int]) -> list[int] | None:
        if generated and generated[-1] in self.trie.terminator_ids:
            return None  # finished; the row is stopped
        node = self.trie.walk(generated)
        if node is None:
            return None
        allowed = list(node.children)
        if node.option is not None:
            allowed.extend(self.trie.terminator_ids)
        return allowed or None


class NumberConstraint:
    """Row constraint: an optional minus sign, digits (a decimal point for floats), then a terminator."""

    def __init__(self, vocab: dict[str, list[int]], terminator_ids: list[int], is_float: bool, max_tokens: int = 6):
        self.vocab, self.terminators, self.is_float, self.max_tokens = vocab, terminator_ids, is_float, max_tokens

    def allowed_tokens(self, generated: list[int]) -> list[int] | None:
        if generated and generated[-1] in self.terminators:
            return None
        digits = self.vocab["digits"]
        if not generated:
            return digits + self.vocab["minus"]
        has_digit = any(t in self.vocab["digit_set"] for t in generated)
        if len(generated) >= self.max_tokens:
            return self.terminators if has_digit else digits
        allowed = list(digits)
        if self.is_float and not any(t in self.vocab["dot_set"] for t in generated):
            allowed += self.vocab["dot"]
        if has_digit:
            allowed += self.terminators
        return allowed


_NUMBER_VOCAB_CACHE: dict[int, dict[str, Any]] = {}


def number_vocab(tokenizer: Any) -> dict[str, Any]:
    """Token ids made only of ASCII digits, and the ``-`` / ``.`` tokens (cached per tokenizer)."""
    key = id(tokenizer)
    if key not in _NUMBER_VOCAB_CACHE:
        digits, minus, dot = [], [], []
        for token, index in tokenizer.get_vocab().items():
            if re.fullmatch(r"[0-9]+", token):
                digits.append(index)
            elif token == "-":
                minus.append(index)
            elif token == ".":
                dot.append(index)
        if not digits:
            raise ValueError("The tokenizer has no digit tokens; cannot constrain a numeric field")
        _NUMBER_VOCAB_CACHE[key] = {"digits": digits, "minus": minus, "dot": dot,
                                    "digit_set": set(digits), "dot_set": set(dot)}
    return _NUMBER_VOCAB_CACHE[key]


class NonEmptyText:
    """Row constraint for free-text values: the first token may not end the value (end of turn, blank line)."""

    def __init__(self, banned_first: list[int]):
        self.banned_first = banned_first

    def allowed_tokens(self, generated: list[int]) -> list[int] | None:
        return None

    def banned_tokens(self, generated: list[int]) -> list[int] | None:
        return self.banned_first if not generated else None


class RowConstraintsProcessor(LogitsProcessor):
    """Applies one (optional) constraint per batch row; tokens generated so far start at ``prompt_len``.

    A constraint has ``allowed_tokens(generated) -> list | None`` (None: unconstrained at this step) and optionally
    ``banned_tokens(generated) -> list | None``.
    """

    def __init__(self, constraints: list[Any], prompt_len: int):
        self.constraints, self.prompt_len = constraints, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, constraint in enumerate(self.constraints):
            if constraint is not None:
                apply_constraint(constraint, input_ids[row, self.prompt_len:].tolist(), scores[row])
        return scores


def apply_constraint(constraint: Any, generated: list[int], scores: torch.Tensor) -> None:
    """Mask one row's next-token ``scores`` in place so only the constraint's allowed tokens remain."""
    banned = getattr(constraint, "banned_tokens", None)
    banned = banned(generated) if banned else None
    if banned:
        scores[banned] = float("-inf")
    allowed = constraint.allowed_tokens(generated)
    if allowed:
        index = torch.tensor(allowed, dtype=torch.long, device=scores.device)
        kept = scores[index]
        scores.fill_(float("-inf"))
        scores[index] = kept


def _logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    return softcap(model, model.get_output_embeddings()(hidden).float())


def softcap(model: Any, logits: torch.Tensor) -> torch.Tensor:
    """The model's final logit softcapping (Gemma 2), if it has one; ``-inf`` (a token ruled out) stays ``-inf``."""
    cap = getattr(model.config, "final_logit_softcapping", None)
    if not cap:
        return logits
    return (torch.tanh(logits / cap) * cap).masked_fill_(logits == float("-inf"), float("-inf"))


def head_row_logits(head: Any, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """float32 logits ``[rows, n]`` of the tokens ``index[rows, n]``, from the LM head's rows for them only (no
    softcapping): each row's hidden state against its own tokens' weights."""
    dtype = compute_dtype(head)
    weight = head.weight[index].to(dtype)  # [rows, n, hidden]
    logits = torch.bmm(weight, hidden.to(dtype)[:, :, None])[:, :, 0].float()
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[index].float()
    return logits


@torch.inference_mode()
def prefix_state(model: Any, prompt_ids: list[int]) -> tuple[Any, torch.Tensor]:
    """Run the prompt once; return its KV cache and the next-token log-probabilities (float32)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=model.device)
    out = model.get_decoder()(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache, use_cache=True)
    logprobs = torch.log_softmax(_logits(model, out.last_hidden_state[:, -1]), dim=-1)[0]
    return cache, logprobs


@torch.inference_mode()
def continuation_logprobs(model: Any, cache: Any, prefix_len: int, paths: list[list[int]], all_positions: bool = False):
    """Log-probabilities after each path (or at every path position) continuing a shared prefix cache.

    Args:
        model: The causal LM.
        cache: The prefix KV cache (not modified; it is copied and repeated per row).
        prefix_len: Prefix length in tokens.
        paths: Non-empty token lists, one per row.
        all_positions: Return per-position log-probs (``[rows, max_len, vocab]``) instead of the last only.

    Returns:
        ``[rows, vocab]`` (or ``[rows, max_len, vocab]``) float32 log-probabilities.
    """
    rows, width = len(paths), max(len(p) for p in paths)
    ids = torch.zeros((rows, width), dtype=torch.long)
    mask = torch.zeros((rows, prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for row, path in enumerate(paths):
        ids[row, : len(path)] = torch.tensor(path)
        mask[row, prefix_len: prefix_len + len(path)] = 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    batch_cache = copy.deepcopy(cache)
    if rows > 1:
        batch_cache.batch_repeat_interleave(rows)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, cache=batch_cache, use_cache=True)
    hidden = hidden.last_hidden_state
    if all_positions:
        return torch.log_softmax(_logits(model, hidden), dim=-1)
    last = torch.tensor([len(p) - 1 for p in paths], device=hidden.device)
    return torch.log_softmax(_logits(model, hidden[torch.arange(rows, device=hidden.device), last]), dim=-1)


def _end_logprob(logprobs: torch.Tensor, terminators: list[int]) -> float:
    return float(torch.logsumexp(logprobs[torch.tensor(terminators, device=logprobs.device)], dim=-1))


@torch.inference_mode()
def score_options(model: Any, prompt_ids: list[int], trie: OptionTrie, options: list[str], batch_size: int = 32):
    """Total log-probability ``log P(option tokens, terminator | prompt)`` of each option (brute force).

    Args:
        model: The causal LM.
        prompt_ids: Tokens of the prompt ending right before the value.
        trie: Trie holding the options' token ids and the terminators.
        options: Options to score (must be in the trie).
        batch_size: Rows per forward pass.

    Returns:
        One float per option, in order.
    """
    cache, root = prefix_state(model, prompt_ids)
    scores = []
    for start in range(0, len(options), batch_size):
        chunk = options[start: start + batch_size]
        paths = []
        for option in chunk:
            if option not in trie.token_ids:
                raise ValueError(f"Option {option!r} is not in the allowed list")
            paths.append(trie.token_ids[option])
        logprobs = continuation_logprobs(model, cache, len(prompt_ids), paths, all_positions=True)
        for row, path in enumerate(paths):
            total = float(root[path[0]])
            for pos in range(1, len(path)):
                total += float(logprobs[row, pos - 1, path[pos]])
            scores.append(total + _end_logprob(logprobs[row, len(path) - 1], trie.terminator_ids))
    return scores


@torch.inference_mode()
def rank_trie(model: Any, prompt_ids: list[int], trie: OptionTrie, k: int, batch_size: int = 128,
              max_expansions: int = 4096) -> list[tuple[str, float]]:
    """Exact top-k options by total log-probability, by best-first search over the trie.

    Args:
        model: The causal LM.
        prompt_ids: Tokens of the prompt ending right before the value.
        trie: The allowed options.
        k: How many options to return.
        batch_size: Frontier nodes expanded per forward pass.
        max_expansions: Safety cap on expanded nodes; past it the best completed options found are returned.

    Returns:
        ``[(option, logprob), ...]`` sorted by descending log-probability.
    """
    cache, root = prefix_state(model, prompt_ids)
    counter = itertools.count()
    heap: list[tuple[float, int, bool, Any]] = []  # (-score, tiebreak, complete, payload)

    def push_children(node: _Node, path: list[int], score: float, logprobs: torch.Tensor) -> None:
        if node.option is not None:
            heapq.heappush(heap, (-(score + _end_logprob(logprobs, trie.terminator_ids)), next(counter), True,
                                  node.option))
        for token, child in node.children.items():
            heapq.heappush(heap, (-(score + float(logprobs[token])), next(counter), False, (path + [token], child)))

    push_children(trie.root, [], 0.0, root)
    results: list[tuple[str, float]] = []
    expansions = 0
    while heap and len(results) < k:
        if heap[0][2]:
            negative, _, _, option = heapq.heappop(heap)
            results.append((option, -negative))
            continue
        if expansions >= max_expansions:
            logger.warning("rank_trie hit max_expansions=%d; returning the best completed options", max_expansions)
            rest = sorted((item for item in heap if item[2]), key=lambda item: item[0])
            results.extend((item[3], -item[0]) for item in rest[: k - len(results)])
            break
        batch = []
        while heap and not heap[0][2] and len(batch) < batch_size:
            batch.append(heapq.heappop(heap))
        expansions += len(batch)
        logprobs = continuation_logprobs(model, cache, len(prompt_ids), [item[3][0] for item in batch])
        for row, (negative, _, _, (path, node)) in enumerate(batch):
            push_children(node, path, -negative, logprobs[row])
    return results
