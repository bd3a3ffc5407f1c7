"""Export of oracle traces as TRL datasets, formatted exactly as the program's ChatAdapter formats them.

Every row is a conversational prompt/completion pair (TRL's ``prompt``/``completion`` format): the
prompt is the list of system/user messages that :meth:`dspy.ChatAdapter.format` produces for the
predictor's signature, demos and inputs, and the completion is the assistant message that
:meth:`dspy.ChatAdapter.format_assistant_message_content` produces for the outputs. Both come from
DSPy's own :meth:`~dspy.ChatAdapter.format_finetune_data`, so a student fine-tuned on these rows sees
at inference exactly the messages it was trained on.

Files written into a compile run directory:

- ``sft_reason.jsonl``: the reason step (history → reason) of the two-step program.
- ``sft_predict.jsonl``: the predictor step (history, reason → occupation).
- ``sft_joint.jsonl``: multitask rows for one student: both steps above, plus the single-call joint
  signature (history → reason, occupation) when the program mode is ``joint``.
- ``sft_direct.jsonl``: the no-reason ablation (history → occupation), when a ``direct`` predictor is given.
- ``dpo_reason.jsonl``: ``prompt``/``chosen``/``rejected`` for the reason step.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dspy

logger = logging.getLogger(__name__)


def _messages(predictor: dspy.Predict, inputs: dict, outputs: dict, adapter: dspy.ChatAdapter) -> list[dict]:
    demos = [dict(d) for d in getattr(predictor, "demos", []) or []]
    data = adapter.format_finetune_data(predictor.signature, demos, inputs, outputs)
    return data["messages"]


def sft_row(predictor: dspy.Predict, inputs: dict, outputs: dict, adapter: dspy.ChatAdapter | None = None) -> dict:
    """One TRL conversational prompt/completion row for a predictor call.

    Args:
        predictor: The DSPy predictor whose signature and demos define the formatting.
        inputs: Input field values (e.g. ``{"history": ...}``).
        outputs: Output field values the student should produce.
        adapter: The adapter used at inference (default :class:`dspy.ChatAdapter`).
    """
    adapter = adapter or dspy.ChatAdapter()
    missing = [f for f in predictor.signature.input_fields if f not in inputs]
    missing += [f for f in predictor.signature.output_fields if f not in outputs]
    if missing:
        raise ValueError(f"SFT row for {predictor.signature.__name__} lacks fields {missing}.")
    msgs = _messages(predictor, inputs, outputs, adapter)
    return {"prompt": msgs[:-1], "completion": msgs[-1:]}


def dpo_row(predictor: dspy.Predict, inputs: dict, chosen: dict, rejected: dict,
            adapter: dspy.ChatAdapter | None = None) -> dict:
    """One TRL conversational preference row (same prompt, chosen vs rejected completion)."""
    adapter = adapter or dspy.ChatAdapter()
    good = sft_row(predictor, inputs, chosen, adapter)
    bad = sft_row(predictor, inputs, rejected, adapter)
    return {"prompt": good["prompt"], "chosen": good["completion"], "rejected": bad["completion"]}


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return n


def export_traces(
    out_dir: str | os.PathLike,
    oracles: Mapping[str, dict],
    pairs: list[tuple[dict, dict]],
    steps: Mapping[str, dspy.Predict],
    *,
    joint: bool,
    adapter: dspy.ChatAdapter | None = None,
) -> dict[str, int]:
    """Writes the SFT and DPO files from oracle traces.

    Args:
        out_dir: The compile run directory.
        oracles: example_id → oracle candidate record (``history``, ``reason``, ``gold_occupation``).
        pairs: (chosen, rejected) candidate records for DPO.
        steps: Predictors by role: ``"reason"`` (history → reason), ``"predict"`` (history, reason →
            occupation), when ``joint``, ``"joint"`` (history → reason, occupation), and optionally ``"direct"``
            (history → occupation, the no-reason ablation; rows for every oracle example).
        joint: Whether to add single-call joint rows to ``sft_joint.jsonl``.
        adapter: The adapter used at inference.

    Returns:
        Row counts per file name.
    """
    adapter = adapter or dspy.ChatAdapter()
    for role in ("reason", "predict") + (("joint",) if joint else ()):
        if role not in steps:
            raise ValueError(f"export_traces needs a predictor for the {role!r} step; got {sorted(steps)}.")
    out = Path(out_dir)
    reason_rows, predict_rows, joint_rows, direct_rows = [], [], [], []
    for record in oracles.values():
        history, reason, gold = record["history"], record["reason"], record["gold_occupation"]
        reason_rows.append(sft_row(steps["reason"], {"history": history}, {"reason": reason}, adapter))
        predict_rows.append(
            sft_row(steps["predict"], {"history": history, "reason": reason}, {"occupation": gold}, adapter)
        )
        if "direct" in steps:
            direct_rows.append(sft_row(steps["direct"], {"history": history}, {"occupation": gold}, adapter))
        if joint:
            joint_rows.append(
                sft_row(steps["joint"], {"history": history}, {"reason": reason, "occupation": gold}, adapter)
            )
    dpo_rows = [
        dpo_row(steps["reason"], {"history": c["history"]}, {"reason": c["reason"]}, {"reason": r["reason"]}, adapter)
        for c, r in pairs
    ]
    counts = {
        "sft_reason.jsonl": _write_jsonl(out / "sft_reason.jsonl", reason_rows),
        "sft_predict.jsonl": _write_jsonl(out / "sft_predict.jsonl", predict_rows),
        "sft_joint.jsonl": _write_jsonl(out / "sft_joint.jsonl", reason_rows + predict_rows + joint_rows),
        "dpo_reason.jsonl": _write_jsonl(out / "dpo_reason.jsonl", dpo_rows),
    }
    if "direct" in steps:
        counts["sft_direct.jsonl"] = _write_jsonl(out / "sft_direct.jsonl", direct_rows)
    logger.info("Exported TRL datasets: %s", counts)
    return counts


def live_request(predictor: dspy.Predict, inputs: dict[str, Any], adapter: dspy.ChatAdapter | None = None) -> list:
    """The messages the program's adapter sends at inference for ``inputs`` (for equality checks)."""
    adapter = adapter or dspy.ChatAdapter()
    demos = [dict(d) for d in getattr(predictor, "demos", []) or []]
    return adapter.format(predictor.signature, demos, inputs)
