"""Run artifacts of a distill run: training curves, model cards and merged weights."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from finetune.model_loading import load_model_and_tokenizer
from lms.model_store import is_local_spec, parse_local_spec

logger = logging.getLogger(__name__)


def plot_curves(log_history: list[dict[str, Any]], path: str | Path, title: str = "training") -> str | None:
    """Plot train/eval loss (and learning rate) against the step from ``trainer.state.log_history`` as PNG.

    Returns:
        The PNG path, or None when the history holds no loss.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    dpo = [(h["step"], h["rewards/accuracies"]) for h in log_history if "rewards/accuracies" in h]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", marker=".")
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval loss", marker="o")
    if dpo:
        ax.plot(*zip(*dpo, strict=True), label="DPO reward accuracy", linestyle="--")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}
    for key, value in (metrics.get("throughput") or {}).items():
        out[f"throughput/{key}"] = value
    return out


EMBEDDED_BASE_ID = "google/gemma-3-270m"  # the embedded GGUF is a quantization of this base model


def base_model_id(base: str | None, folder: str | Path | None = None) -> tuple[str | None, str]:
    """``(hub id or None, text naming the base)`` for a model card.

    The embedded ``local:gemma-3-270m`` is Gemma 3 270M; a hub id names itself; a local folder is named by its path
    and, when its ``config.json`` records one, the hub id it came from.
    """
    spec = base or (str(folder) if folder else None)
    if not spec:
        return None, "an unnamed base model"
    parsed = parse_local_spec(spec if is_local_spec(spec) else f"local:{spec}")
    if parsed.is_embedded:
        return EMBEDDED_BASE_ID, f"`{parsed.spec}` (Gemma 3 270M, the embedded GGUF build of {EMBEDDED_BASE_ID})"
    path = Path(parsed.base).expanduser()
    if not path.is_dir():
        return parsed.base, f"`{parsed.base}`"
    origin = None
    with contextlib.suppress(Exception):
        origin = json.loads((path / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    if origin and not Path(origin).expanduser().is_dir() and "/" in origin:
        return origin, f"the local folder `{path.resolve()}` ({origin})"
    return None, f"the local folder `{path.resolve()}`"


def _name_base(text: str, hub_id: str | None, named: str, adapter_dir: Path, base: str | None) -> str:
    """Replaces TRL's ``[None](https://huggingface.co/None)`` base and ``model="None"`` quick start."""
    link = f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else named
    if hub_id and named != f"`{hub_id}`":
        link += f" -- {named}"
    text = text.replace("[None](https://huggingface.co/None)", link)
    if hub_id and text.startswith("---\n") and "\nbase_model:" not in text.split("\n---", 1)[0]:
        text = f"---\nbase_model: {hub_id}\n" + text[4:]
    spec = base if base and is_local_spec(base) else f"local:{base or hub_id}"
    quick = ("## Quick start\n\n```python\nfrom programs import NextOccupation\n\n"
             f'program = NextOccupation.from_pretrained("{spec}+{adapter_dir.resolve()}")\n'
             'print(program(history="1. 2015-2019: Cashier, Grocery store"))\n```\n\n'
             "With PEFT directly: `AutoPeftModelForCausalLM.from_pretrained(\"" + str(adapter_dir.resolve()) + '")`.\n\n')
    return re.sub(r"## Quick start\n.*?(?=## Training procedure)", lambda _: quick, text, count=1, flags=re.S)


def write_model_card(trainer: Any, adapter_dir: str | Path, metrics: dict[str, Any], model_name: str,
                     base: str | None = None) -> Path:
    """TRL's model card (``trainer.create_model_card``) naming the real base model (``base``: the ``--base`` spec)
    and a working quick start, extended with our metrics, written to ``adapter_dir``."""
    adapter_dir = Path(adapter_dir)
    text = ""
    try:
        trainer.create_model_card(model_name=model_name, tags=["nextocc", "distillation", "lora"])
        card = Path(trainer.args.output_dir) / "README.md"
        text = card.read_text(encoding="utf-8") if card.exists() else ""
    except Exception as exc:  # noqa: BLE001 - the card is documentation; never fail a run over it
        logger.warning("TRL model card failed (%s); writing metrics only", exc)
    folder = None
    with contextlib.suppress(Exception):
        folder = trainer.model.peft_config["default"].base_model_name_or_path
    hub_id, named = base_model_id(base, folder)
    if text:
        text = _name_base(text, hub_id, named, adapter_dir, base)
    else:
        text = f"# Model card for {model_name}\n\nA LoRA adapter on {named}.\n"
    rows = "\n".join(f"| {k} | {v} |" for k, v in _scalar_metrics(metrics).items())
    text += ("\n\n## nextocc distillation metrics\n\n| metric | value |\n|---|---|\n" + rows + "\n\n"
             "Base model licence: Gemma Terms of Use (https://ai.google.dev/gemma/terms) when the base is Gemma.\n")
    path = adapter_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    (Path(trainer.args.output_dir) / "README.md").write_text(text, encoding="utf-8")
    return path


def merge_adapter(model_folder: str | Path, adapter_dir: str | Path, out_dir: str | Path,
                  dtype: str = "bfloat16") -> str:
    """Merge a LoRA adapter into the base weights (``merge_and_unload``) and save a servable HF folder.

    The folder (safetensors, config, tokenizer with chat template) loads in vLLM/SGLang/transformers.
    """
    import torch
    from peft import PeftModel

    model, tokenizer = load_model_and_tokenizer(model_folder, dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out_dir = Path(out_dir)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(out_dir))
    for extra in ("nextocc_source.json",):
        src = Path(model_folder) / extra
        if src.exists():
            shutil.copy(src, out_dir / extra)
    (out_dir / "nextocc_merge.json").write_text(
        json.dumps({"base": str(model_folder), "adapter": str(adapter_dir)}, indent=2), encoding="utf-8")
    return str(out_dir)
