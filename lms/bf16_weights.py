"""A float32 model's tied token embedding held in bfloat16 where its values are exactly bfloat16 numbers.

The embedded Gemma 3 270M ships bfloat16 weights; loaded in float32 (the dtype rule on a CPU without native bf16),
its 262,144 x 640 tied embedding / LM head takes 671 MB, a third of the process. Every one of those numbers is a
bfloat16 value, so holding the matrix in bfloat16 (335 MB) and widening what is used to float32 loses nothing: the
embedding widens the rows it looks up, the head widens chunks of rows before its float32 matmul, so every output is
the float32 model's. :func:`store_tied_embedding_bf16` swaps the two modules in at load (inference only: the weight
becomes a frozen buffer). :func:`restore_float32` puts the model's own float32 modules back -- the loader does where
the exact head decodes every step (widening all its rows took 87 against 47 ms at batch 1 on a 2-core AVX2 EPYC);
where an int8 copy proposes each step's tokens (:mod:`lms.quant_head`) only the ranking's normaliser widens rows,
1.06-1.08x its float32 time at 160-256 hidden states. :func:`full_precision` restores them for a block (a baseline
timed on the plain model).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

_CHUNK = 4096  # head rows widened to float32 per matmul


class Bf16Embedding(nn.Module):
    """A token embedding whose bfloat16 table is widened to float32 per looked-up row (then scaled, as Gemma's)."""

    def __init__(self, weight: torch.Tensor, padding_idx: int | None = None, embed_scale: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = padding_idx
        self.register_buffer("embed_scale", embed_scale, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(input_ids, self.weight, self.padding_idx).float()
        return out if self.embed_scale is None else out * self.embed_scale.float()


class Bf16Head(nn.Module):
    """A bias-free LM head whose bfloat16 rows are widened to float32 chunk by chunk for a float32 matmul."""

    compute_dtype = torch.float32

    def __init__(self, weight: torch.Tensor, chunk: int = _CHUNK):
        super().__init__()
        self.register_buffer("weight", weight)
        self.out_features, self.in_features = weight.shape
        self.bias, self.chunk = None, chunk

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, self.in_features).to(self.compute_dtype)
        out = flat.new_empty((flat.shape[0], self.out_features))
        buffer = flat.new_empty((self.chunk, self.in_features))  # one widened chunk, reused (no allocation per chunk)
        for start in range(0, self.out_features, self.chunk):
            part = self.weight[start:start + self.chunk]
            rows = buffer[: part.shape[0]].copy_(part)
            torch.matmul(flat, rows.T, out=out[:, start:start + part.shape[0]])
        return out.reshape(*hidden.shape[:-1], self.out_features)


def compute_dtype(head: Any) -> torch.dtype:
    """The dtype an LM head computes in: float32 for a bfloat16-held :class:`Bf16Head`, else its weight's."""
    return getattr(head, "compute_dtype", head.weight.dtype)


def store_tied_embedding_bf16(model: Any) -> int:
    """Hold a float32 CPU model's tied embedding / LM head in bfloat16 when every value is a bfloat16 number.

    Returns:
        Bytes saved (0 when the model does not qualify: not float32 on the CPU, untied, a head with a bias, an
        embedding class other than ``nn.Embedding`` or Gemma's scaled one, or values that bfloat16 would round).
    """
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    why = _unsupported(embedding, head)
    if why:
        logger.debug("Tied embedding kept in float32: %s", why)
        return 0
    weight = head.weight.detach()
    compact = torch.empty(weight.shape, dtype=torch.bfloat16)
    for start in range(0, weight.shape[0], 8 * _CHUNK):
        part = weight[start:start + 8 * _CHUNK]
        compact[start:start + part.shape[0]] = part
        if not torch.equal(compact[start:start + part.shape[0]].float(), part):
            logger.debug("Tied embedding kept in float32: its values are not all bfloat16 numbers")
            return 0
    scale = getattr(embedding, "embed_scale", None)
    held_embedding = Bf16Embedding(compact, embedding.padding_idx, None if scale is None else scale.detach().clone())
    held_head = Bf16Head(compact)
    # the model's own modules are kept, unregistered, for restore_float32; their float32 table is freed
    object.__setattr__(held_embedding, "original", embedding)
    object.__setattr__(held_head, "original", head)
    embedding.weight = head.weight = _empty_like(weight)
    model.set_input_embeddings(held_embedding)
    model.set_output_embeddings(held_head)
    saved = weight.numel() * (weight.element_size() - compact.element_size())
    logger.info("Tied embedding held in bfloat16 (its values are bfloat16 numbers; computed in float32): %.0f MB saved",
                saved / 2**20)
    return saved


def restore_float32(model: Any) -> bool:
    """Put the model's own float32 embedding and LM head back (a float32 copy of the table, tied, as loaded).

    Returns:
        False when the model's embedding is not held in bfloat16 (nothing to restore).
    """
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not isinstance(head, Bf16Head) or not isinstance(embedding, Bf16Embedding):
        return False
    weight = nn.Parameter(head.weight.float(), requires_grad=False)
    embedding.original.weight = head.original.weight = weight
    model.set_input_embeddings(embedding.original)
    model.set_output_embeddings(head.original)
    return True


@contextlib.contextmanager
def full_precision(model: Any) -> Iterator[None]:
    """Within the block, ``model`` has its own float32 embedding and LM head again (:func:`restore_float32`); the
    bfloat16-held ones come back after it. A no-op for a model whose embedding is not held in bfloat16."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not restore_float32(model):
        yield
        return
    try:
        yield
    finally:
        embedding.original.weight = head.original.weight = _empty_like(embedding.original.weight)
        model.set_input_embeddings(embedding)
        model.set_output_embeddings(head)


def _empty_like(weight: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(weight.new_empty((0, weight.shape[1])), requires_grad=False)


def _unsupported(embedding: Any, head: Any) -> str | None:
    if type(head) is not nn.Linear or head.bias is not None:
        return f"the head is a {type(head).__name__}{' with a bias' if getattr(head, 'bias', None) is not None else ''}"
    scaled = isinstance(embedding, nn.Embedding) and type(embedding).__name__.endswith("ScaledWordEmbedding") \
        and hasattr(embedding, "embed_scale")
    if type(embedding) is not nn.Embedding and not scaled:
        return f"the embedding is a {type(embedding).__name__}"
    if embedding.max_norm is not None:
        return "the embedding renormalises rows (max_norm)"
    if head.weight is not embedding.weight:
        return "the embedding and the head are not tied"
    if head.weight.dtype != torch.float32 or head.weight.device.type != "cpu":
        return f"the weights are {head.weight.dtype} on {head.weight.device}"
    return None
