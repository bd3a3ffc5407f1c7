"""The completion-only LM head: the fast SFT loss path on CPU.

Gemma 3's 262k-token LM head dominates a CPU training step. TRL's fused LM head scores only the label positions on
Triton devices (CUDA/XPU) but every position elsewhere, so on CPU a plain ``SFTTrainer`` projects every prompt token
through the head and then masks it. :func:`add_completion_head` patches the model so that, with
``completion_head=True``, the backbone's hidden states are sliced to the completion positions *before* ``lm_head``;
the loss is the same token-mean cross-entropy. :class:`FastSFTTrainer` uses it; a token prefix shared by every row of
a batch (DSPy's system prompt) runs once (:func:`shared_prefix_len`), and with ``group_by_prefix`` each batch holds
rows of one DSPy step (:class:`~finetune.prefix_sampler.PrefixGroupedSampler`) so that prefix is the whole system
message.
"""

from __future__ import annotations

import functools
import logging
import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.utils import ModelOutput
from trl import SFTTrainer

from finetune.prefix_sampler import PrefixGroupedSampler, prompt_group_key

logger = logging.getLogger(__name__)
GROUP_COLUMN = "prefix_group"


@dataclass
class CompletionHeadOutput(ModelOutput):
    """Output of a forward with ``completion_head=True``: summed loss and counts over the completion positions."""

    loss_sum: torch.Tensor | None = None
    num_valid: torch.Tensor | None = None
    num_correct: torch.Tensor | None = None


def add_completion_head(model: Any) -> Any:
    """Patch a causal LM so ``model(..., labels=..., completion_head=True)`` runs ``lm_head`` on label positions only.

    The backbone (``model.base_model``) runs on the whole sequence; its last hidden states are shifted against the
    labels and only rows whose label is not ``-100`` go through ``lm_head`` (the module is called, so LoRA on the
    head and DeepSpeed/FSDP hooks still apply). Gemma's ``final_logit_softcapping`` is honoured. Without the flag the
    original forward runs, so generation is unchanged. Apply before wrapping the model with PEFT.

    Returns:
        The same model (patched in place; patching twice is a no-op).
    """
    if getattr(model, "_nextocc_completion_head", False):
        return model
    original_forward = model.forward
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)

    @functools.wraps(type(model).forward)
    def forward(self, *args, completion_head=False, labels=None, num_items_in_batch=None, **kwargs):
        if not completion_head:
            if labels is not None:
                kwargs["labels"] = labels
            if num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            return original_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        for key in ("output_attentions", "output_hidden_states", "return_dict"):
            kwargs.pop(key, None)
        hidden = _backbone_hidden(self, self.base_model, *args, **kwargs)[:, :-1]
        targets = labels[:, 1:].to(hidden.device)
        mask = targets != -100
        logits = self.get_output_embeddings()(hidden[mask]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        target = targets[mask]
        loss_sum = F.cross_entropy(logits, target, reduction="sum")
        correct = (logits.detach().argmax(-1) == target).sum()
        return CompletionHeadOutput(loss_sum=loss_sum, num_valid=mask.sum(), num_correct=correct)

    model.forward = types.MethodType(forward, model)
    model._nextocc_completion_head = True
    return model


MIN_SHARED_PREFIX = 32


def shared_prefix_len(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> int:
    """Length of the token prefix that every row of a right-padded batch starts with (0 for one row)."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    different = (~same).nonzero()
    length = int(different[0]) if len(different) else input_ids.shape[1]
    return min(length, input_ids.shape[1] - 1)


def _backbone_hidden(model: Any, backbone: Any, input_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
    """The backbone's last hidden states; a token prefix shared by every row (DSPy's system prompt) runs once.

    The prefix is computed for one row with its KV cache kept (gradients flow through it), the cache is repeated
    over the batch, and the rows' suffixes continue from it: the same hidden states as one full forward, at the cost
    of the prefix once per batch instead of once per row.
    """
    mask, share = kwargs.get("attention_mask"), getattr(model, "_nextocc_share_prefix", True)
    prefix = shared_prefix_len(input_ids, mask) if share and input_ids is not None and "position_ids" not in kwargs \
        and kwargs.get("inputs_embeds") is None else 0
    if prefix < MIN_SHARED_PREFIX:
        return backbone(input_ids=input_ids, **kwargs).last_hidden_state
    rows, length = input_ids.shape
    rest = {k: v for k, v in kwargs.items() if k not in ("attention_mask", "use_cache")}
    cache = DynamicCache(config=model.config)
    head = backbone(input_ids=input_ids[:1, :prefix], attention_mask=mask[:1, :prefix] if mask is not None else None,
                    cache=cache, use_cache=True, **rest).last_hidden_state
    cache.batch_repeat_interleave(rows)
    positions = torch.arange(prefix, length, device=input_ids.device).expand(rows, -1)
    tail = backbone(input_ids=input_ids[:, prefix:], attention_mask=mask, position_ids=positions, cache=cache,
                    use_cache=True, **rest).last_hidden_state
    return torch.cat([head.expand(rows, -1, -1), tail], dim=1)


class FastSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss uses :func:`add_completion_head` (``completion_head=False`` behaves like TRL's).

    With ``group_by_prefix=True`` the training batches are step-grouped (:class:`PrefixGroupedSampler`, rows of
    similar length inside a group when ``train_sampling_strategy="group_by_length"``). Also counts the non-padding
    tokens it trains on (``trained_tokens``) for throughput reports.
    """

    def __init__(self, *args: Any, completion_head: bool = True, group_by_prefix: bool = False, **kwargs: Any):
        self.completion_head = completion_head
        self.trained_tokens = 0
        model = kwargs.get("model", args[0] if args else None)
        if completion_head and not isinstance(model, str):
            add_completion_head(getattr(model, "get_base_model", lambda: model)())
        data = kwargs.get("train_dataset")
        self.group_by_prefix = bool(group_by_prefix and data is not None and "prompt" in data.column_names)
        if self.group_by_prefix:
            ids: dict[Any, int] = {}
            groups = [ids.setdefault(prompt_group_key(p), len(ids)) for p in data["prompt"]]
            kwargs["train_dataset"] = data.add_column(GROUP_COLUMN, groups)
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        data = self.train_dataset
        if not self.group_by_prefix or data is None or GROUP_COLUMN not in getattr(data, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        if train_dataset is not None and len(train_dataset) != len(data):
            logger.warning("group_by_prefix: the loader's dataset differs from the training set; batches not grouped")
            return super()._get_train_sampler(train_dataset)
        lengths = None
        if self.args.train_sampling_strategy == "group_by_length":
            lengths = [len(ids) for ids in data["input_ids"]]
        return PrefixGroupedSampler(data[GROUP_COLUMN], self.args.train_batch_size, lengths=lengths)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and "attention_mask" in inputs:
            self.trained_tokens += int(inputs["attention_mask"].sum())
        if not self.completion_head:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        inputs.pop("use_cache", None)
        out = model(**inputs, labels=labels, completion_head=True)
        denom = out.num_valid if num_items_in_batch is None else num_items_in_batch
        loss = out.loss_sum / torch.as_tensor(denom, device=out.loss_sum.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        num_valid = self.accelerator.gather_for_metrics(out.num_valid).sum()
        num_correct = self.accelerator.gather_for_metrics(out.num_correct).sum()
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train" and "attention_mask" in inputs:
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, out) if return_outputs else loss
