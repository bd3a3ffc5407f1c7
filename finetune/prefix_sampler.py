"""Step-grouped training batches: rows that share their prompt's start (the same DSPy step) are batched together.

A DSPy predictor sends the same system message (and demos) on every call, so rows of one step share a long token
prefix. :class:`~finetune.completion_head.FastSFTTrainer` computes a prefix shared by every row of a batch once; a
batch that mixes steps (the joint file holds reason, predictor and single-call rows) shares almost nothing.
:class:`PrefixGroupedSampler` orders a shuffled epoch so that each micro-batch holds rows of one step, of similar
length inside it (as transformers' ``LengthGroupedSampler``), and the batches in random order.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


def prompt_group_key(prompt: Any) -> Hashable:
    """The part of a TRL prompt that every call of one DSPy step shares: all messages but the last (the system
    message and demos). A plain-text prompt, or one of a single message, has no such part (key ``None``)."""
    if isinstance(prompt, list) and len(prompt) > 1:
        return json.dumps([[m.get("role"), m.get("content")] for m in prompt[:-1]], sort_keys=True)
    return None


class PrefixGroupedSampler(Sampler):
    """Indices of one epoch in micro-batches that each hold rows of one group, batches shuffled.

    Args:
        keys: Group key per row (:func:`prompt_group_key`).
        batch_size: Rows per micro-batch (the DataLoader's batch size).
        lengths: Token length per row; when given, rows of a group are batched with rows of similar length (sorted
            inside shuffled chunks of ``mega_batch_mult`` batches, as ``LengthGroupedSampler``).
        generator: Torch generator for the shuffles (default: torch's global RNG, which the Trainer seeds).
        mega_batch_mult: Batches per length-sorted chunk.
    """

    def __init__(self, keys: Sequence[Hashable], batch_size: int, lengths: Sequence[int] | None = None,
                 generator: torch.Generator | None = None, mega_batch_mult: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if lengths is not None and len(lengths) != len(keys):
            raise ValueError(f"lengths has {len(lengths)} rows but keys has {len(keys)}.")
        self.size, self.batch_size, self.lengths = len(keys), batch_size, lengths
        self.generator, self.mega_batch_mult = generator, mega_batch_mult
        groups: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        self.groups = list(groups.values())

    def __len__(self) -> int:
        return self.size

    def _perm(self, n: int) -> list[int]:
        return torch.randperm(n, generator=self.generator).tolist()

    def batches(self) -> list[list[int]]:
        """One epoch's micro-batches; each group's remainder (< batch_size rows) is pooled into mixed batches."""
        full, rest = [], []
        chunk = self.batch_size * self.mega_batch_mult
        for group in self.groups:
            order = [group[i] for i in self._perm(len(group))]
            if self.lengths is not None:
                order = [i for s in range(0, len(order), chunk)
                         for i in sorted(order[s:s + chunk], key=lambda j: -self.lengths[j])]
            cut = len(order) - len(order) % self.batch_size
            full.extend(order[s:s + self.batch_size] for s in range(0, cut, self.batch_size))
            rest.extend(order[cut:])
        if self.lengths is not None:
            rest.sort(key=lambda j: -self.lengths[j])
        full.extend(rest[s:s + self.batch_size] for s in range(0, len(rest), self.batch_size))
        return [full[i] for i in self._perm(len(full))]

    def __iter__(self):
        batches = self.batches()
        # a partial batch last, so the DataLoader's consecutive chunks of batch_size are exactly these batches
        batches.sort(key=lambda b: len(b) < self.batch_size)
        return iter([i for batch in batches for i in batch])
