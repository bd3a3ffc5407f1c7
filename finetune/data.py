"""Datasets of a distill run: the compile run's TRL files, and DSPy fine-tuning data converted to TRL rows.

A compile run (:mod:`compile.export`) writes conversational rows exactly as DSPy's ChatAdapter formats them:
``{"prompt": [system, user], "completion": [assistant]}`` (SFT) and ``{"prompt", "chosen", "rejected"}`` (DPO).
:func:`chat_to_prompt_completion` turns DSPy's ``BootstrapFinetune`` data (``{"messages": [...]}``) into the same
prompt/completion rows, so ``finetune.distill`` and :class:`finetune.provider.TrlProvider` train the same student.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SFT_FILES = {"joint": "sft_joint.jsonl", "reason": "sft_reason.jsonl", "predict": "sft_predict.jsonl",
             "direct": "sft_direct.jsonl", "hybrid": "sft_hybrid_joint.jsonl"}
MODE_ROLES = {"joint": ["joint"], "two_model": ["reason", "predict"], "direct": ["direct"], "hybrid": ["hybrid"]}
DPO_FILE = "dpo_reason.jsonl"


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: expected a non-empty list of chat messages, got {type(messages).__name__}.")
    for msg in messages:
        if not isinstance(msg, dict) or "role" not in msg or not isinstance(msg.get("content"), str):
            raise ValueError(f"{where}: every message needs 'role' and string 'content', got {msg!r:.200}.")


def read_rows(path: str | Path, kind: str = "sft") -> list[dict[str, Any]]:
    """Read and validate a TRL conversational JSONL file.

    Args:
        path: The file.
        kind: ``"sft"`` (prompt/completion) or ``"dpo"`` (prompt/chosen/rejected).

    Returns:
        The rows.

    Raises:
        FileNotFoundError: If the file does not exist (the message names it).
        ValueError: For malformed rows (file and line named) or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Dataset file not found: {path}")
    keys = ("prompt", "completion") if kind == "sft" else ("prompt", "chosen", "rejected")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {i}: not valid JSON ({exc.msg}).") from None
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{path}, line {i}: missing {missing}; expected keys {list(keys)}.")
        for key in keys:
            _check_messages(row[key], f"{path}, line {i}, {key!r}")
        rows.append({k: row[k] for k in keys})
    if not rows:
        raise ValueError(f"Dataset file {path} holds no rows.")
    return rows


def resolve_files(config: Any) -> dict[str, Path]:
    """Map dataset roles (joint/reason/predict/direct/dpo) to files from ``from_run`` and explicit overrides.

    Only roles needed by ``config.mode`` (and ``config.dpo``) are returned; each must exist.

    Raises:
        FileNotFoundError: Naming the first missing file.
    """
    roles = list(MODE_ROLES[config.mode])
    if config.dpo:
        roles.append("dpo")
    explicit = {"joint": config.joint_file, "reason": config.reason_file, "predict": config.predict_file,
                "direct": config.direct_file, "hybrid": config.hybrid_file, "dpo": config.dpo_file}
    files: dict[str, Path] = {}
    for role in roles:
        if explicit[role]:
            path = Path(explicit[role])
        elif config.from_run:
            run = Path(config.from_run)
            if not run.is_dir():
                raise FileNotFoundError(f"Compile run directory not found: {run}")
            path = run / (DPO_FILE if role == "dpo" else SFT_FILES[role])
        else:
            raise FileNotFoundError(f"No {role} dataset: give --from_run or --{role}_file.")
        if not path.is_file():
            hint = " (compile with --hybrid_baseline return_markov to export it)" if role == "hybrid" else ""
            raise FileNotFoundError(f"Dataset file for the {role} step not found: {path}{hint}")
        files[role] = path
    return files


_FIELD_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")


def row_step(row: dict[str, Any]) -> str:
    """The program step a TRL row trains, named by the output fields of its completion (``reason``, ``occupation``,
    ``reason+occupation`` for a joint single-call row); rows without field markers are ``other``."""
    completion = row.get("completion") or row.get("chosen") or []
    text = " ".join(m.get("content", "") for m in completion if isinstance(m, dict)) if isinstance(completion, list) \
        else str(completion)
    fields = [f for f in dict.fromkeys(_FIELD_MARKER.findall(text)) if f != "completed"]
    return "+".join(fields) or "other"


def select_steps(rows: list[dict[str, Any]], steps: Sequence[str] | None, source: str = "rows") -> list[dict[str, Any]]:
    """The rows whose :func:`row_step` is in ``steps`` (all rows when ``steps`` is None).

    Raises:
        ValueError: If no row is left, naming the steps ``source`` does hold.
    """
    if steps is None:
        return list(rows)
    keep = [r for r in rows if row_step(r) in steps]
    if not keep:
        held = dict(Counter(row_step(r) for r in rows))
        raise ValueError(f"train_steps {list(steps)} keeps no row of {source}, whose rows train {held}; pick "
                         "train_steps from those (or null for every row).")
    logger.info("train_steps %s: %d of %d rows of %s", list(steps), len(keep), len(rows), source)
    return keep


def cap_rows(rows: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """At most ``n`` rows sampled across the whole file, stratified by :func:`row_step` (seeded).

    Each step keeps a share of ``n`` proportional to its rows (largest remainders; every step keeps at least one row
    when ``n`` allows), so a capped ``sft_joint.jsonl`` still trains both steps. Rows keep their file order.
    """
    import random

    if not n or n >= len(rows):
        return list(rows)
    strata: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        strata.setdefault(row_step(row), []).append(i)
    quota = {k: n * len(v) / len(rows) for k, v in strata.items()}
    take = {k: int(q) for k, q in quota.items()}
    if n >= len(strata):
        for k in take:
            take[k] = max(1, take[k])
    while sum(take.values()) > n:  # the at-least-one rule overshot: trim the largest strata
        k = max(take, key=lambda s: (take[s], s))
        take[k] -= 1
    for k in sorted(quota, key=lambda s: (-(quota[s] - int(quota[s])), s)):
        if sum(take.values()) >= n:
            break
        if take[k] < len(strata[k]):
            take[k] += 1
    rng = random.Random(seed)
    keep = sorted(i for k, idx in strata.items() for i in rng.sample(idx, min(take[k], len(idx))))
    logger.info("max_train_rows %d of %d rows, by step: %s", len(keep), len(rows),
                {k: min(take[k], len(v)) for k, v in strata.items()})
    return [rows[i] for i in keep]


def split_rows(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic train/eval split (eval gets ``round(n * eval_fraction)`` rows, at least 1 when > 0)."""
    import random

    if eval_fraction <= 0 or len(rows) < 2:
        return list(rows), []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(rows) * eval_fraction))
    eval_idx = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in eval_idx], [r for i, r in enumerate(rows) if i in eval_idx]


def chat_to_prompt_completion(data: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert DSPy chat fine-tuning data to TRL prompt/completion rows.

    DSPy's ``BootstrapFinetune`` passes ``{"messages": [system, user, ..., assistant]}`` items (from
    ``ChatAdapter.format_finetune_data``); the last assistant message is the completion, everything before it the
    prompt -- the same split as :func:`compile.export.sft_row`. Items already in prompt/completion form pass through.

    Raises:
        ValueError: If an item has no final assistant message.
    """
    rows = []
    for i, item in enumerate(data):
        if "prompt" in item and "completion" in item:
            rows.append({"prompt": item["prompt"], "completion": item["completion"]})
            continue
        messages = item.get("messages")
        _check_messages(messages, f"train_data[{i}]['messages']")
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise ValueError(f"train_data[{i}]: the last message must be the assistant's answer.")
        clean = [{"role": m["role"], "content": m["content"]} for m in messages]
        rows.append({"prompt": clean[:-1], "completion": clean[-1:]})
    return rows
