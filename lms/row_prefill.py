"""Prefill of prompts longer than a sliding attention window: the shared prefix once, then each row by itself.

Rows that share a prefix are usually laid out as ``prefix + padding + suffix`` (:func:`lms.generation.encode_ids`),
but a sliding-window layer counts that padding inside its window, so rows as long as the window are laid out with
plain left padding instead -- which prefills the shared prefix (DSPy's system message) once per row and computes
every padding token. :func:`prefill_rows` prefills the prefix once (or takes it from the prefix LRU), then each row's
own suffix at batch size 1, and lays the rows' caches out as the cache a left-padded batch prefill builds:
full-attention layers left-padded to the longest row, sliding-window layers to the window. Nothing is computed for
padding, and each row's keys and values are the ones it has unpadded.
"""

from __future__ import annotations

from typing import Any

import torch

from lms.progress import count_tokens


def prefill_rows(model: Any, rows: list[list[int]], shared: int, prefix_cache: Any = None,
                 store: bool = True) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """Prefill token-id rows one by one after their first ``shared`` tokens, which all rows have in common.

    Args:
        model: The causal LM.
        rows: Token ids of each prompt.
        shared: Length of the common prefix computed once (0: none); every row must be longer.
        prefix_cache: Optional :class:`~lms.prefix_cache.PrefixCache`: the longest stored part of the prefix is
            reused.
        store: Store the computed prefix in ``prefix_cache``.

    Returns:
        ``(last hidden state per row, the batch cache, attention mask, position ids)``, as
        :func:`lms.generation.prefill` returns them for a left-padded batch.
    """
    from transformers import DynamicCache

    device, config, body = model.device, model.config, model.get_decoder()
    base = None
    if shared:
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
    hidden, caches = [], []
    for row in rows:
        cache = _fork(base, config) if base is not None else DynamicCache(config=config)
        out = body(input_ids=torch.tensor([row[shared:]], device=device),
                   attention_mask=torch.ones((1, len(row)), dtype=torch.long, device=device),
                   position_ids=torch.arange(shared, len(row), device=device)[None], cache=cache, use_cache=True)
        hidden.append(out.last_hidden_state[:, -1])
        caches.append(cache)
        count_tokens(len(row) - shared)
    width = max(len(row) for row in rows)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long,
                        device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return torch.cat(hidden), _left_padded(caches, config, width), mask, positions


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


def _left_padded(caches: list[Any], config: Any, width: int) -> Any:
    """One batch cache of batch-1 caches: each layer's rows right-aligned, zeros (masked) on the left; a row's own
    layer is released as soon as it is copied."""
    from transformers import DynamicCache

    batch = DynamicCache(config=config)
    for index, layer in enumerate(batch.layers):
        keys = [cache.layers[index].keys for cache in caches]
        values = [cache.layers[index].values for cache in caches]
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
        if getattr(layer, "is_sliding", False):
            layer.cumulative_length = width
    return batch
