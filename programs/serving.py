"""Keeping the O*NET constraint when the occupation step runs on a served model (vLLM's OpenAI-compatible server).

In-process, the local engine constrains the ``occupation`` field to the official titles and ranks them exactly
(``ranking="exact"``). A served student (``hosted_vllm/<name>``) gets the same constraint server-side: every
occupation request carries vLLM structured-output parameters in its body (litellm's ``extra_body``):

* a step whose only output is ``occupation`` (two-step predictor, direct): a **choice** over the complete
  ChatAdapter replies, one per title (``[[ ## occupation ## ]]\\n<title>\\n\\n[[ ## completed ## ]]``), so the reply
  still parses and is always an official title;
* the joint step (``reason`` then ``occupation``): a **regex** with free reason text and the title alternatives.

``style`` picks the parameter names: ``"structured_outputs"`` (vLLM >= 0.10.2: ``{"structured_outputs": {"choice":
[...]}}``) or ``"guided_choice"`` (older servers: ``{"guided_choice": [...]}`` / ``{"guided_regex": ...}``). A served
model's ``ranked`` list comes from the normalized answer (``ranking="text"``: the top-1 is constrained, ranks 2..k
are string-similar titles, so Acc@k/MRR are not comparable with ``exact`` rows); ``metrics.json`` records the
ranking method of every row (:func:`programs.scoring.score_program`).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import dspy

logger = logging.getLogger(__name__)

STYLES = ("auto", "structured_outputs", "guided_choice", "off")
SERVED_PREFIXES = ("hosted_vllm/",)
REASON_MAX_CHARS = 2000


def is_served(lm: Any) -> bool:
    """Whether ``lm`` is a ``dspy.LM`` on a vLLM OpenAI-compatible server (``hosted_vllm/...``)."""
    model = getattr(lm, "model", None)
    return isinstance(model, str) and model.startswith(SERVED_PREFIXES)


def _reply(signature: type[dspy.Signature], values: dict[str, str]) -> str:
    return dspy.ChatAdapter().format_assistant_message_content(signature, values)


@lru_cache(maxsize=16)
def _choices(signature: type[dspy.Signature], titles: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_reply(signature, {"occupation": t}) for t in titles)


@lru_cache(maxsize=16)
def _regex(signature: type[dspy.Signature], titles: tuple[str, ...]) -> str:
    marker = "\x00REASON\x00"
    template = _reply(signature, {"reason": marker, "occupation": "\x00TITLE\x00"})
    head, _, rest = template.partition(marker)
    middle, _, tail = rest.partition("\x00TITLE\x00")
    alternatives = "|".join(re.escape(t) for t in sorted(titles, key=len, reverse=True))
    return (re.escape(head) + f"[^\\[]{{1,{REASON_MAX_CHARS}}}" + re.escape(middle) + f"(?:{alternatives})"
            + re.escape(tail))


def constraint_body(signature: type[dspy.Signature], titles: Any, style: str = "structured_outputs"
                    ) -> dict[str, Any] | None:
    """The request-body fields that constrain ``signature``'s ``occupation`` output to ``titles`` on vLLM.

    Returns:
        ``{"structured_outputs": {"choice": [...]}}`` / ``{"structured_outputs": {"regex": ...}}`` (or the
        ``guided_*`` forms), or None when the signature has no ``occupation`` output or ``style`` is ``"off"``.
    """
    if style == "off" or "occupation" not in signature.output_fields:
        return None
    if style not in ("structured_outputs", "guided_choice"):
        raise ValueError(f"server constraint style must be one of {STYLES}, got {style!r}")
    titles = tuple(sorted(set(titles)))
    outputs = list(signature.output_fields)
    if outputs == ["occupation"]:
        choices = list(_choices(signature, titles))
        return {"structured_outputs": {"choice": choices}} if style == "structured_outputs" else \
            {"guided_choice": choices}
    if outputs == ["reason", "occupation"]:
        regex = _regex(signature, titles)
        return {"structured_outputs": {"regex": regex}} if style == "structured_outputs" else {"guided_regex": regex}
    logger.warning("No server-side constraint for outputs %s; the occupation answer is normalized only", outputs)
    return None


def request_config(lm: Any, signature: type[dspy.Signature], titles: Any, style: str = "auto") -> dict[str, Any]:
    """The ``config=`` of a predictor call: ``{"extra_body": ...}`` for a served LM, ``{}`` otherwise."""
    if style == "off" or lm is None or not is_served(lm):
        return {}
    body = constraint_body(signature, titles, "structured_outputs" if style == "auto" else style)
    return {"extra_body": body} if body else {}
