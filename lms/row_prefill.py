"""Prefill of prompts longer than a sliding attention window: the shared prefix once, then each row by itself.

Rows that share a prefix are usually laid out as ``prefix + padding + suffix`` (:func:`lms.generation.encode_ids`),
but a sliding-window layer counts that padding inside its window, so rows as long as the window are laid out with
plain left padding instead -- which prefills the shared prefix (DSPy's system message) once per row and computes
every padding token. :func:`prefill_rows` prefills the prefix once (or takes it from the prefix LRU), then each row's
own suffix at batch size 1, and lays the rows' caches out as the cache a left-padded batch prefill builds:
full-attention layers left-padded to the longest row, sliding-window layers to the window. Nothing is computed for
padding, and each row's keys and values are the ones it has unpadded.

A row may also start from its own earlier cache (:class:`RowKV`: the prompt and value of the field before, taken out
of the decoding batch by :func:`take_row`), so a structured reply's next field computes only its new tokens. Such
caches are *kept* (``keep=True``): their sliding-window layers hold :data:`ROLLBACK_TOKENS` more than the window's
last tokens, so they can be cut back to where a re-rendered prompt departs from them (a continuation departing
further back is prefilled afresh).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from lms.progress import count_tokens

ROLLBACK_TOKENS = 64  # tokens a kept row's sliding layers hold beyond their window, to cut back that far


@dataclass
class RowKV:
    """A batch-1 KV cache of exactly ``ids`` whose sliding-window layers hold ``held`` tokens (every token since it
    was started, or the window's last ones), so it can be cut back and continued."""

    ids: list[int]
    cache: Any
    held: int


def prefill_rows(model: Any, rows: list[list[int]], shared: int, prefix_cache: Any = None,
                 store: bool = True, starts: list[RowKV | None] | None = None,
                 keep: bool = False) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """Prefill token-id rows one by one after their first ``shared`` tokens, which all rows have in common.

    Args:
        model: The causal LM.
        rows: Token ids of each prompt.
        shared: Length of the common prefix computed once (0: none); every row must be longer.
        prefix_cache: Optional :class:`~lms.prefix_cache.PrefixCache`: the longest stored part of the prefix is
            reused.
        store: Store the computed prefix in ``prefix_cache``.
        starts: Per row, an earlier :class:`RowKV` of that row (or None): used (and consumed) where it matches
            more of the row than ``shared``.
        keep: Lay the batch out so :func:`take_row` can take rows out of it after decoding (sliding layers hold the
            window plus :data:`ROLLBACK_TOKENS` and record every later token); the returned cache gets a ``held``
            list (sliding-layer tokens per row after the prefill).

    Returns:
        ``(last hidden state per row, the batch cache, attention mask, position ids)``, as
        :func:`lms.generation.prefill` returns them for a left-padded batch.
    """
    from transformers import DynamicCache

    device, config, body = model.device, model.config, model.get_decoder()
    resumed = [_resume(start, row, shared, config) if start is not None else None
               for start, row in zip(starts or [None] * len(rows), rows, strict=True)]
    base = None
    if shared and not all(r is not None for r in resumed):
        prefix = rows[0][:shared]
        hit = 0
        if prefix_cache is not None:
            hit, base = prefix_cache.lookup(prefix, 1)
        if hit < shared:
            base = DynamicCache(config=config) if base is None else base
            body(input_ids=torch.tensor([prefix[hit:]], device=device),
                 position_ids=torch.arange(hit, shared, device=device)[None], cache=base, use_cache=True)
            count_tokens(shared - hit)
            if prefix_cache is not None and store:
                prefix_cache.store(prefix, base)
    hidden, caches, held = [], [], []
    for row, start in zip(rows, resumed, strict=True):
        if start is not None:
            cache, begin, before = start
        else:
            cache = _fork(base, config) if base is not None else DynamicCache(config=config)
            begin = shared
            before = _held(cache)
            if keep:
                _record(cache)
        out = body(input_ids=torch.tensor([row[begin:]], device=device),
                   attention_mask=torch.ones((1, len(row)), dtype=torch.long, device=device),
                   position_ids=torch.arange(begin, len(row), device=device)[None], cache=cache, use_cache=True)
        hidden.append(out.last_hidden_state[:, -1])
        caches.append(cache)
        held.append(before + len(row) - begin)
        count_tokens(len(row) - begin)
    width = max(len(row) for row in rows)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long,
                        device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    window = getattr(config, "sliding_window", None)
    if window:  # kept rows hold a rollback margin beyond the window (to cut back to a re-rendered prompt)
        held = [min(h, window - 1 + (ROLLBACK_TOKENS if keep else 0)) for h in held]
    batch = _left_padded(caches, config, width, held, keep)
    if keep:
        batch.held = held
    return torch.cat(hidden), batch, mask, positions


def take_row(cache: Any, index: int, ids: list[int], held: int, config: Any) -> RowKV:
    """Row ``index`` of a batch cache laid out by :func:`prefill_rows` with ``keep=True`` (rows right-aligned), as a
    batch-1 :class:`RowKV` of ``ids`` (its real tokens: the prompt and the tokens fed since) whose sliding layers
    hold its last ``held`` tokens, at most the window plus :data:`ROLLBACK_TOKENS` (a continuation that departs
    further back prefills afresh); the tensors are copied, so the batch's can be freed."""
    from transformers import DynamicCache

    window = getattr(config, "sliding_window", None)
    if window:
        held = min(held, window - 1 + ROLLBACK_TOKENS)
    row = DynamicCache(config=config)
    for mine, theirs in zip(row.layers, cache.layers, strict=True):
        count = held if getattr(theirs, "is_sliding", False) else len(ids)
        keys = theirs.keys[index:index + 1, :, theirs.keys.shape[-2] - count:].clone()
        values = theirs.values[index:index + 1, :, theirs.values.shape[-2] - count:].clone()
        mine.lazy_initialization(keys, values)
        mine.keys, mine.values = keys, values
        if getattr(mine, "is_sliding", False):
            mine.cumulative_length = len(ids)
            mine.record_past = True
    return RowKV(ids=list(ids), cache=row, held=held)


def _resume(start: RowKV, row: list[int], shared: int, config: Any) -> tuple[Any, int, int] | None:
    """``(cache, tokens it holds, sliding-layer tokens held)`` of ``start`` cut back to its common prefix with
    ``row`` (at least one token of the row left to compute), or None where it matches no more than ``shared`` or a
    sliding layer kept too little to go back."""
    common = min(len(os.path.commonprefix([start.ids, row])), len(row) - 1)
    if common <= shared:
        return None
    cut = len(start.ids) - common
    held = start.held - cut
    window = getattr(config, "sliding_window", None)
    if window and held < min(common, window - 1):
        return None
    for layer in start.cache.layers:
        count = held if getattr(layer, "is_sliding", False) else common
        layer.keys, layer.values = layer.keys[:, :, :count], layer.values[:, :, :count]
        if getattr(layer, "is_sliding", False):
            layer.cumulative_length = common
            layer.record_past = True
    return start.cache, common, held


def _held(cache: Any) -> int:
    """Tokens a cache's sliding layers hold (its length where it has none)."""
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            return 0 if layer.keys is None else int(layer.keys.shape[-2])
    return cache.get_seq_length()


def _record(cache: Any) -> None:
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            layer.record_past = True


def _fork(base: Any, config: Any) -> Any:
    """A cache that starts as ``base`` (its tensors shared, not copied: a cache update concatenates, never writes in
    place)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    for mine, theirs in zip(cache.layers, base.layers, strict=True):
        mine.lazy_initialization(theirs.keys, theirs.values)
        mine.keys, mine.values = theirs.keys, theirs.values
        if getattr(theirs, "is_sliding", False):
            mine.cumulative_length = theirs.cumulative_length
    return cache


def _left_padded(caches: list[Any], config: Any, width: int, held: list[int], keep: bool = False) -> Any:
    """One batch cache of batch-1 caches: each layer's rows right-aligned, zeros (masked) on the left; a sliding layer
    keeps each row's last ``held`` tokens (and, with ``keep``, records every later one); a row's own layer is
    released as soon as it is copied."""
    from transformers import DynamicCache

    batch = DynamicCache(config=config)
    for index, layer in enumerate(batch.layers):
        sliding = getattr(layer, "is_sliding", False)
        keys = [cache.layers[index].keys for cache in caches]
        values = [cache.layers[index].values for cache in caches]
        if sliding:
            keys = [k[:, :, k.shape[-2] - h:] for k, h in zip(keys, held, strict=True)]
            values = [v[:, :, v.shape[-2] - h:] for v, h in zip(values, held, strict=True)]
        length = max(k.shape[-2] for k in keys)
        shape = (len(caches), keys[0].shape[1], length, keys[0].shape[-1])
        batch_keys, batch_values = keys[0].new_zeros(shape), values[0].new_zeros(shape)
        for row, (k, v) in enumerate(zip(keys, values, strict=True)):
            batch_keys[row, :, length - k.shape[-2]:] = k[0]
            batch_values[row, :, length - v.shape[-2]:] = v[0]
            caches[row].layers[index].keys = caches[row].layers[index].values = None
        del keys, values
        layer.lazy_initialization(batch_keys, batch_values)
        layer.keys, layer.values = batch_keys, batch_values
        if sliding:
            layer.cumulative_length = width
            layer.record_past = keep
    return batch
