"""An int8 copy of the LM head that proposes each greedy decoding step's candidate tokens; the exact head then
scores only those.

At the batch sizes of decoding, the full-vocabulary LM head of a small model is memory-bound (Gemma 3 270M: a
262,144 x 640 fp32 matrix, 671 MB read per step) and reads more than all its decoder layers. A per-channel int8 copy run
through PyTorch's fbgemm/x86 dynamic-quantized linear reads a quarter of that. Its logits are approximate, so it only
ranks the vocabulary: the ``refine`` best tokens of each row get their exact logits from the model's own head and the
greedy pick is the best of those. The pick equals the full head's whenever the exact best token is among the
``refine`` proposed -- on 1,032 positions of the embedded model its rank under the int8 logits was at most 6th, and
the default ``refine`` is 64. Sampling with a temperature alone draws by the Gumbel-max trick through the same
proposals (:mod:`lms.next_token`); top-k/top-p sampling, ranking and constrained rows keep the exact head.

The choice (:func:`resolve_head`): ``head=`` or ``$NEXTOCC_HEAD`` (``'auto'``, ``'int8'``, ``'exact'``); ``auto`` uses
int8 on a CPU with an fp32 model and a head of at least 16M weights where a short probe at load measures it at least
1.2x faster than the exact head.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
import weakref
from typing import Any

logger = logging.getLogger(__name__)

HEAD_ENV_VAR = "NEXTOCC_HEAD"
HEAD_MODES = ("auto", "int8", "exact")
REFINE = 64
MIN_SPEEDUP = 1.2
MIN_AUTO_WEIGHTS = 1 << 24  # 'auto' copies heads of at least 16M weights (64 MB in fp32), where memory traffic rules

_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class Int8Head:
    """A per-channel int8 copy of a linear LM head (fbgemm/x86 dynamic quantization) plus the exact head it refines.

    Args:
        head: The model's output embedding (``nn.Linear``, fp32, on the CPU).
        refine: Candidate tokens per row whose exact logits are computed.
    """

    def __init__(self, head: Any, refine: int = REFINE):
        import torch

        if refine < 1:
            raise ValueError(f"refine must be >= 1, got {refine}.")
        bias = getattr(head, "bias", None)
        with warnings.catch_warnings():  # torch.ao's quantized tensors are deprecated in favour of torchao, whose
            warnings.simplefilter("ignore")  # int8 matmul has no fast kernel on an AVX2 CPU (measured 100x slower)
            quantized = _quantize_rows(head.weight.detach())
            self._packed = torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach())
        self.head, self.refine = head, refine
        self._version = head.weight._version

    @property
    def current(self) -> bool:
        """False once the exact head's weights changed in place (training) after the copy was made."""
        return self.head.weight._version == self._version

    def approximate(self, hidden):
        """Approximate fp32 logits ``[rows, vocab]`` of the int8 copy."""
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # activations quantized per call, 7-bit as fbgemm needs on x86
            return torch.ops.quantized.linear_dynamic(hidden.float().contiguous(), self._packed, True)

    def greedy_logits(self, hidden, banned: list[list[int] | None] | None = None, noise: float | None = None):
        """Logits ``[rows, vocab]``: each row's ``refine`` best tokens under the int8 copy (after ``banned`` tokens
        are removed) carry their exact logits, every other token ``-inf``. With ``noise`` (a temperature) the logits
        are divided by it and Gumbel-perturbed (the same noise for the int8 copy and the exact head): the argmax is
        then a sample (the Gumbel-max trick)."""
        import torch

        from lms.constrained import head_row_logits  # torch at first use: model_store and runkit import this module

        logits = self.approximate(hidden)
        perturbation = None
        if noise is not None:
            perturbation = torch.empty_like(logits).exponential_().log_().neg_()
            logits.div_(noise).add_(perturbation)
        for i, tokens in enumerate(banned or ()):
            if tokens:
                logits[i, tokens] = float("-inf")
        index = logits.topk(min(self.refine, logits.shape[-1]), dim=-1).indices
        exact = head_row_logits(self.head, hidden, index)
        if perturbation is not None:
            exact = exact / noise + perturbation.gather(1, index)
        if banned:
            exact = exact.masked_fill(logits.gather(1, index) == float("-inf"), float("-inf"))
        return logits.fill_(float("-inf")).scatter_(1, index, exact)


def _quantize_rows(weight, chunk: int = 16384):
    """Symmetric per-row int8 quantization of a float32 (or bfloat16-held) head, ``chunk`` rows widened at a time
    (no float32 copy of a bfloat16 head is made); the same tensor as ``torch.quantize_per_channel`` of the whole."""
    import torch

    scales = torch.empty(weight.shape[0], dtype=torch.double)
    values = torch.empty(weight.shape, dtype=torch.int8)
    for start in range(0, weight.shape[0], chunk):
        part = weight[start:start + chunk].float()
        part_scales = (part.abs().amax(dim=1) / 127).clamp(min=1e-12).double()  # one scale per token
        scales[start:start + part.shape[0]] = part_scales
        values[start:start + part.shape[0]] = torch.quantize_per_channel(
            part, part_scales, torch.zeros_like(part_scales, dtype=torch.long), 0, torch.qint8).int_repr()
    return torch._make_per_channel_quantized_tensor(values, scales, torch.zeros_like(scales, dtype=torch.long), 0)


def resolve_head(requested: str | None = None) -> str:
    """The head mode: ``requested`` unless None/``'auto'``, else ``$NEXTOCC_HEAD``, else ``'auto'``."""
    for source, value in (("head=", requested), (f"${HEAD_ENV_VAR}", os.environ.get(HEAD_ENV_VAR))):
        if value not in (None, ""):
            mode = str(value).strip().lower()
            if mode not in HEAD_MODES:
                raise ValueError(f"{source} must be one of {', '.join(HEAD_MODES)}; got {value!r}.")
            if mode != "auto":
                return mode
    return "auto"


def attach(model: Any, mode: str | None = None, refine: int = REFINE) -> str:
    """Give ``model``'s greedy decoding an int8 head where ``mode`` (see :func:`resolve_head`) asks for one.

    Returns:
        The head in use: ``'int8'`` or ``'exact'``, with the reason logged.

    Raises:
        RuntimeError: If ``mode`` is ``'int8'`` and the model or this torch build cannot have one.
    """
    mode = resolve_head(mode)
    if mode == "exact":
        return "exact"
    why = _unsupported(model, refine)
    if why:
        if mode == "int8":
            raise RuntimeError(f"head='int8' is not available: {why}. Use head='exact' or 'auto'.")
        logger.info("LM head exact: %s", why)
        return "exact"
    if mode == "auto" and model.get_output_embeddings().weight.numel() < MIN_AUTO_WEIGHTS:
        logger.info("LM head exact: too small to gain from an int8 copy")
        return "exact"
    head = Int8Head(model.get_output_embeddings(), refine)
    if mode == "auto":
        speedup = _probe(head)
        if speedup < MIN_SPEEDUP:
            logger.info("LM head exact: the int8 copy measured only %.2fx its speed here", speedup)
            return "exact"
        logger.info("LM head int8 for greedy decoding (probe: %.2fx the exact head, %d refined tokens)", speedup,
                    refine)
    with _LOCK:
        _HEADS[model] = head
    return "int8"


def int8_head(model: Any) -> Int8Head | None:
    """The int8 head attached to ``model``, or None (none attached, or its weights changed since)."""
    head = _HEADS.get(model)
    if head is not None and not head.current:
        logger.warning("The LM head changed after its int8 copy was made; decoding with the exact head")
        with _LOCK:
            _HEADS.pop(model, None)
        return None
    return head


def _unsupported(model: Any, refine: int) -> str | None:
    import torch

    head = model.get_output_embeddings()
    compute_dtype = getattr(head, "compute_dtype", None)  # lms.bf16_weights.Bf16Head: bfloat16-held, float32 math
    if not isinstance(head, torch.nn.Linear) and compute_dtype is None:
        return f"the output embedding is a {type(head).__name__}, not a Linear"
    if head.weight.device.type != "cpu":
        return f"the model is on {head.weight.device}, and fbgemm int8 runs on the CPU only"
    if (compute_dtype or head.weight.dtype) != torch.float32:
        return f"the model computes in {compute_dtype or head.weight.dtype}, not float32"
    engines = set(torch.backends.quantized.supported_engines)
    if not engines & {"fbgemm", "x86"}:
        return f"this torch build has no fbgemm/x86 quantized engine (has {sorted(engines)})"
    if head.weight.shape[0] <= refine:
        return f"the vocabulary ({head.weight.shape[0]}) is no larger than the {refine} tokens refined"
    return None


def _probe(head: Int8Head, rows: int = 8, repeats: int = 3) -> float:
    """How many times faster the int8 head's greedy logits are than the exact head's full logits at ``rows``."""
    import torch

    # a generator of its own: loading a model must not shift the global random stream of what runs after it
    hidden = torch.randn(rows, head.head.weight.shape[1], generator=torch.Generator().manual_seed(0))

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        return best(lambda: head.head(hidden)) / max(best(lambda: head.greedy_logits(hidden)), 1e-9)
