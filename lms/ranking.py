"""Top-k option ranking over an option trie, decoded with tree attention: an exact best-first search
(:func:`rank_tree`) and a beam (:func:`rank_beam`) on the same cache.

In the exact search every prompt keeps one KV cache: its prompt, then each trie node it expands, appended in the order expanded. A
step feeds the best frontier nodes of every prompt at once; each node attends to its prompt and its own ancestors
only (a 4-D mask per layer type, the sliding-window layers' window kept), so no prompt cache is ever copied per
beam. Nodes are expanded best first while their score is above the prompt's k-th completed option; scores only
fall along a path, so the result is the exact top-k of :func:`lms.constrained.rank_trie`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from lms.bf16_weights import compute_dtype
from lms.constrained import OptionTrie, head_row_logits, softcap
from lms.generation import prefill_ids
from lms.progress import count_tokens

logger = logging.getLogger(__name__)

_HEAD_ROWS = 256  # hidden states per LM-head pass
_VOCAB_CHUNK = 2048  # LM-head rows per step of the normaliser's online log-sum-exp


@dataclass
class _Row:
    """Search state of one prompt."""

    last_pos: int  # position id of the prompt's last token
    frontier: list = field(default_factory=list)  # heap of (-score, tiebreak, node, parent slot, depth, token)
    finished: list = field(default_factory=list)  # (score, option)
    ancestors: list = field(default_factory=list)  # per tree slot: slots of its ancestors and itself
    expanded: int = 0

    def bound(self, k: int) -> float:
        if len(self.finished) < k:
            return float("-inf")
        return heapq.nlargest(k, (s for s, _ in self.finished))[-1]


@torch.inference_mode()
def rank_tree(model: Any, prompts: list[list[int]], trie: OptionTrie, k: int, pad: int = 0,
              prefix_cache: Any = None, share_prefix: bool = True, step_nodes: int = 64, max_rows: int = 16,
              max_nodes: int = 4096, stats: dict[str, int] | None = None,
              starts: list[Any] | None = None) -> list[list[tuple[str, float]]]:
    """Exact top-k options per prompt (``log P(option tokens, terminator | prompt)``), all prompts searched together.

    Args:
        model: The causal LM (its decoder takes a ready 4-D mask, or a mask per layer type where it mixes sliding
            and global layers, as Gemma 3 does in transformers 5).
        prompts: Token ids of each prompt, ending right before the value.
        trie: The allowed options.
        k: How many options to return per prompt.
        pad: Padding token id.
        prefix_cache: Optional :class:`~lms.prefix_cache.PrefixCache` for the prompts' shared prefix.
        share_prefix: Prefill the prompts' common prefix once.
        step_nodes: Most nodes per prompt fed in one forward pass.
        max_rows: Prompts searched together; more are ranked in chunks.
        max_nodes: Safety cap on expanded nodes per prompt; past it the best completed options are returned (and
            a warning is logged).
        stats: If given, ``expanded`` (nodes fed) and ``steps`` (forward passes) are added to it.
        starts: Per prompt, an earlier KV cache of it (:class:`~lms.row_prefill.RowKV`, or None) to continue.

    Returns:
        One ``[(option, logprob), ...]`` list per prompt, best first.
    """
    out: list[list[tuple[str, float]]] = []
    for start in range(0, len(prompts), max_rows):
        out.extend(_rank_chunk(model, prompts[start:start + max_rows], trie, k, pad, prefix_cache, share_prefix,
                               step_nodes, max_nodes, stats if stats is not None else {},
                               starts=starts[start:start + max_rows] if starts else None))
    return out


def _rank_chunk(model, prompts, trie, k, pad, prefix_cache, share_prefix, step_nodes, max_nodes, stats, beam=None,
                pruned=None, starts=None):
    """The tree search over one chunk of prompts. With ``beam=(width, first_width)`` each step feeds a prompt's
    ``width`` best frontier nodes (``first_width`` on the first step) and drops the rest of its frontier (the best
    dropped score goes to ``pruned``): a beam search on the same tree-attention cache."""
    device = model.device
    hidden, cache, mask, positions = prefill_ids(model, prompts, pad, share_prefix, prefix_cache, starts=starts)
    config = model.config
    window = getattr(config, "sliding_window", None)
    default_type = "sliding_attention" if window else "full_attention"
    layer_types = list(getattr(config, "layer_types", None) or [default_type] * config.num_hidden_layers)
    # One plain (never truncated) layer per model layer, holding the prompt's keys and values; each prefill layer is
    # released once copied, so the prompt's cache is never held twice.
    layers = []
    for layer in cache.layers:
        layers.append(_TreeLayer(layer.keys, layer.values, reserve=4 * step_nodes if beam is None else 4 * max(beam)))
        layer.keys = layer.values = None
    del cache
    prompt_len = {t: next(layers[i].keys.shape[-2] for i, lt in enumerate(layer_types) if lt == t)
                  for t in set(layer_types)}
    tree = Cache(layers=layers)
    real = mask.bool()  # [B, L] prompt tokens that are not padding
    rows = [_Row(last_pos=int(p)) for p in positions[:, -1].tolist()]
    counter = itertools.count()
    terminators = torch.tensor(trie.terminator_ids, dtype=torch.long, device=device)
    _push(model, rows, [(i, trie.root, -1, 0, 0.0) for i in range(len(rows))], hidden, terminators, counter)
    eager = getattr(config, "_attn_implementation", "sdpa") == "eager"
    tree_len = 0
    while True:
        feed = []  # per prompt: the nodes fed this step
        for r, row in enumerate(rows):
            bound = row.bound(k)
            picked = []
            limit = step_nodes if beam is None else (beam[1] if row.expanded == 0 else beam[0])
            while row.frontier and len(picked) < limit and -row.frontier[0][0] > bound:
                if row.expanded + len(picked) >= max_nodes:
                    logger.warning("rank_tree hit max_nodes=%d for a prompt; returning its best completed options",
                                   max_nodes)
                    row.frontier.clear()
                    break
                picked.append(heapq.heappop(row.frontier))
            if beam is not None and row.frontier:
                pruned[r] = max(pruned[r], -row.frontier[0][0])
                row.frontier.clear()
            feed.append(picked)
        width = max(len(p) for p in feed)
        if width == 0:
            break
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        tree_mask = torch.zeros((len(rows), width, tree_len + width), dtype=torch.bool)
        for r, (row, picked) in enumerate(zip(rows, feed, strict=True)):
            for q in range(width):
                slot = tree_len + q
                if q < len(picked):
                    _, _, node, parent, depth, token = picked[q]
                    chain = (row.ancestors[parent] if parent >= 0 else []) + [slot]
                    tokens[r, q], pos[r, q] = token, row.last_pos + depth
                else:  # padding: attends to itself only, never attended to
                    chain = [slot]
                    pos[r, q] = row.last_pos + 1
                row.ancestors.append(chain)
                tree_mask[r, q, chain] = True
            row.expanded += len(picked)
        tokens, pos, tree_mask = tokens.to(device), pos.to(device), tree_mask.to(device)
        masks = {}
        for layer_type, length in prompt_len.items():
            prompt_part = real[:, real.shape[1] - length:][:, None, :].expand(-1, width, -1)
            if layer_type == "sliding_attention" and window:
                kv_pos = positions[:, positions.shape[1] - length:]
                prompt_part = prompt_part & (kv_pos[:, None, :] > pos[:, :, None] - window)
            full = torch.cat([prompt_part, tree_mask], dim=-1)[:, None]
            masks[layer_type] = _additive(full, model.dtype) if eager else full
        # a mapping per layer type where the model mixes them (Gemma 3), else the one 4-D mask
        attention = masks if len(masks) > 1 else next(iter(masks.values()))
        out = model.get_decoder()(input_ids=tokens, attention_mask=attention, position_ids=pos, cache=tree,
                                  use_cache=True).last_hidden_state
        count_tokens(sum(len(p) for p in feed))
        stats["steps"] = stats.get("steps", 0) + 1
        stats["expanded"] = stats.get("expanded", 0) + sum(len(p) for p in feed)
        flat = [(r, q) for r, picked in enumerate(feed) for q in range(len(picked))]
        index = torch.tensor(flat, dtype=torch.long, device=device)
        fed = out[index[:, 0], index[:, 1]]
        items = []
        for (r, q) in flat:
            negative, _, node, _, depth, _ = feed[r][q]
            items.append((r, node, tree_len + q, depth, -negative))
        _push(model, rows, items, fed, terminators, counter)
        tree_len += width
    return [[(option, score) for score, option in sorted(row.finished, key=lambda item: -item[0])[:k]]
            for row in rows]



@torch.inference_mode()
def rank_beam(model: Any, prompts: list[list[int]], trie: OptionTrie, k: int, width: int = 8, pad: int = 0,
              prefix_cache: Any = None, share_prefix: bool = True, max_rows: int = 16,
              certificates: list[bool] | None = None, first_width: int = 0,
              starts: list[Any] | None = None) -> list[list[tuple[str, float]]]:
    """Top-k options per prompt by beam search over the trie, all prompts decoded together.

    Each prompt keeps its ``width`` best partial options; one step extends every beam by one token. The beams run on
    :func:`rank_tree`'s tree-attention cache (the prompt's keys and values held once per prompt, each beam token
    appended and attending to its prompt and ancestors), so no prompt cache is copied per beam. An option's score is
    exact (``log P(option tokens, terminator | prompt)``, the same as :func:`rank_trie`); what a beam can miss is an
    option whose prefix fell out of the ``width`` best at some depth. A beam whose score is already below the
    prompt's k-th completed option is dropped (its completions can only score lower). A prompt's top-k is provably
    exact when no partial option that fell out of the beam scored above its k-th result; pass a list as
    ``certificates`` to receive that flag per prompt.

    Args:
        model: The causal LM (see :func:`rank_tree`).
        prompts: Token ids of each prompt, ending right before the value.
        trie: The allowed options.
        k: How many options to return per prompt.
        width: Beams kept per prompt (at least ``k``).
        pad: Padding token id.
        prefix_cache: Optional :class:`~lms.prefix_cache.PrefixCache` for the prompts' shared prefix.
        share_prefix: Prefill the prompts' common prefix once.
        max_rows: Prompts decoded together; more are ranked in chunks.
        certificates: If given, one bool per prompt is appended: whether its top-k is provably the exact top-k.
        first_width: Beams kept per prompt after the first token (default ``width``). The first token of a title
            says little about the whole (a base model spreads its probability over hundreds of first tokens), so a
            wider first step finds short, likely titles a narrow beam prunes.
        starts: Per prompt, an earlier KV cache of it (:class:`~lms.row_prefill.RowKV`, or None) to continue.

    Returns:
        One ``[(option, logprob), ...]`` list per prompt, best first.
    """
    width = max(width, k)
    first_width = max(first_width, width)
    out: list[list[tuple[str, float]]] = []
    for start in range(0, len(prompts), max_rows):
        chunk = prompts[start:start + max_rows]
        pruned = [float("-inf")] * len(chunk)
        ranked = _rank_chunk(model, chunk, trie, k, pad, prefix_cache, share_prefix, width, sys.maxsize, {},
                             beam=(width, first_width), pruned=pruned,
                             starts=starts[start:start + max_rows] if starts else None)
        out.extend(ranked)
        if certificates is not None:
            certificates.extend(len(r) == min(k, len(trie.options)) and (len(r) < k or pruned[i] <= r[-1][1])
                                for i, r in enumerate(ranked))
    return out


class _TreeLayer(DynamicLayer):
    """A layer's prompt keys and values followed by the tree's, in a buffer whose tree part doubles when full:
    appending a step's nodes writes in place instead of concatenating (a copy of the whole cache per step, and a heap
    that only grows). Only the tree part doubles: doubling the whole buffer gave a ~700-token prompt ~700 empty slots
    per layer and row once a beam outgrew its reserve."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, reserve: int):
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        self.prompt_len, self.reserve = keys.shape[-2], reserve
        size = keys.shape[-2] + reserve
        self._keys, self._values = _buffer(keys, size), _buffer(values, size)
        self.keys, self.values = self._keys[..., : keys.shape[-2], :], self._values[..., : keys.shape[-2], :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            size = end + max(self.reserve, end - self.prompt_len)
            self._keys, self._values = _buffer(self.keys, size), _buffer(self.values, size)
        self._keys[..., start:end, :] = key_states
        self._values[..., start:end, :] = value_states
        self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]
        return self.keys, self.values


def _buffer(states: torch.Tensor, size: int) -> torch.Tensor:
    """A ``size``-long (along the sequence) buffer starting with a copy of ``states``."""
    out = states.new_empty((*states.shape[:-2], size, states.shape[-1]))
    out[..., : states.shape[-2], :] = states
    return out


def _push(model, rows, items, hidden, terminators, counter) -> None:
    """Record each expanded node's completion and push its children (``items``: row, node, slot, depth, score; one
    hidden state each). Only the log-probabilities the search needs leave the LM head, chunk by chunk."""
    for start in range(0, len(items), _HEAD_ROWS):
        chunk = items[start:start + _HEAD_ROWS]
        states = hidden[start:start + _HEAD_ROWS]
        norm = head_logsumexp(model, states)
        ends = None
        if terminators.numel():
            ends = torch.logsumexp(head_rows(model, states, terminators.expand(len(chunk), -1)), dim=-1)
        width = max(len(node.children) for _, node, _, _, _ in chunk)
        if width:
            index = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (_, node, _, _, _) in enumerate(chunk):
                index[i, : len(node.children)] = torch.tensor(list(node.children), dtype=torch.long)
            values = (head_rows(model, states, index.to(states.device)) - norm[:, None]).tolist()
        end = (ends - norm).tolist() if ends is not None else None
        for i, (r, node, slot, depth, score) in enumerate(chunk):
            row = rows[r]
            if node.option is not None and end is not None:
                row.finished.append((score + end[i], node.option))
            for (token, child), value in zip(node.children.items(), values[i] if width else [], strict=False):
                heapq.heappush(row.frontier, (-(score + value), next(counter), child, slot, depth + 1, token))


def head_rows(model: Any, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """float32 logits ``[rows, n]`` of the tokens ``index[rows, n]`` (the LM head's rows for them only)."""
    return softcap(model, head_row_logits(model.get_output_embeddings(), hidden, index))


def head_logsumexp(model: Any, hidden: torch.Tensor, chunk: int = _VOCAB_CHUNK) -> torch.Tensor:
    """Row-wise ``logsumexp`` of the full LM head's float32 logits, accumulated over ``chunk`` vocabulary rows at a
    time (an online log-sum-exp): no ``[rows, vocab]`` buffer, and each chunk's logits are summed while in cache.
    On a 2-core AVX2 EPYC (fp32, 640-wide hidden states) 2,048-row chunks ran 2.3-2.6 ms per hidden state at 128-256
    states, 8,192-row chunks 2.7-3.1 ms."""
    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    dtype = compute_dtype(head)
    hidden = hidden.to(dtype)
    best = torch.full((hidden.shape[0], 1), float("-inf"), device=hidden.device)
    total = torch.zeros((hidden.shape[0], 1), device=hidden.device)
    widened = hidden.new_empty((chunk, weight.shape[1])) if weight.dtype != dtype else None
    for start in range(0, weight.shape[0], chunk):
        rows = weight[start:start + chunk]
        if widened is not None:  # widened into one reused buffer
            rows = widened[: rows.shape[0]].copy_(rows)
        logits = (hidden @ rows.T).float()
        if bias is not None:
            logits += bias[start:start + chunk].float()
        logits = softcap(model, logits)
        top = torch.maximum(best, logits.amax(dim=-1, keepdim=True))
        total = total * (best - top).exp() + logits.sub_(top).exp_().sum(dim=-1, keepdim=True)
        best = top
    return (total.log() + best)[:, 0]


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, torch.finfo(dtype).min)
