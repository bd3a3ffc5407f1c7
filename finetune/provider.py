"""A ``dspy.Provider`` that fine-tunes local LMs in-process with the same TRL routine as ``finetune.distill``.

DSPy's built-in ``LocalProvider.finetune`` targets an SGLang GPU server and an older TRL API. With
:class:`TrlProvider`, ``dspy.BootstrapFinetune`` works offline on the local engine::

    import dspy, lms
    from finetune.provider import TrlProvider

    student_lm = lms.load("local:gemma-3-270m", provider=TrlProvider(output_dir="runs/dspy_ft",
                                                                       train_kwargs={"max_steps": 50}))
    program.set_lm(student_lm)
    tuned = dspy.BootstrapFinetune(metric=metric).compile(program, trainset=trainset, teacher=teacher)

``lm.finetune(train_data, "chat", train_kwargs)`` converts DSPy's chat rows (``{"messages": [...]}``) to TRL
prompt/completion rows, writes them as ``sft_joint.jsonl`` into a fresh distill run directory and runs
:func:`finetune.distill.run_distill` (joint mode, one adapter). The job's result is the LM copied onto
``local/<base>+<run>/joint/adapter``: the same local engine serves it (requests are routed on the model name), so the
student keeps the engine's settings (e.g. constrained occupation titles). ``train_kwargs`` may hold any
:class:`finetune.config.DistillConfig` field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import dspy
from dspy.clients.provider import TrainingJob
from dspy.clients.utils_finetune import TrainDataFormat

from finetune.config import DistillConfig
from finetune.data import chat_to_prompt_completion
from finetune.distill import run_distill
from lms.local_engine import model_name_for, spec_for
from lms.model_store import is_local_spec

logger = logging.getLogger(__name__)


class TrlTrainingJob(TrainingJob):
    """Training job of :class:`TrlProvider` (runs in DSPy's thread)."""

    def status(self) -> str:
        """``"running"``, ``"succeeded"`` or ``"failed"``."""
        if not self.done():
            return "running"
        return "failed" if isinstance(self.result(), Exception) else "succeeded"


class TrlProvider(dspy.Provider):
    """Fine-tunes ``local:`` LMs with TRL SFT + LoRA (see the module docstring).

    Args:
        output_dir: Parent folder of the distill run directories it creates.
        train_kwargs: Default :class:`finetune.config.DistillConfig` fields (per-call ``train_kwargs`` override).
    """

    def __init__(self, output_dir: str | Path = "runs/dspy_finetune", train_kwargs: dict[str, Any] | None = None):
        super().__init__()
        self.finetunable = True
        self.TrainingJob = TrlTrainingJob
        self.output_dir = str(output_dir)
        self.train_kwargs = dict(train_kwargs or {})

    @staticmethod
    def is_provider_model(model: str) -> bool:
        return is_local_spec(model)

    def finetune(self, job: TrainingJob, model: str, train_data: list[dict[str, Any]],
                 train_data_format: TrainDataFormat | str | None, train_kwargs: dict[str, Any] | None = None) -> str:
        """Train a LoRA adapter on ``train_data`` and return the student's DSPy model name.

        Raises:
            ValueError: For a non-chat data format, a non-local model, a base that already has an adapter, or
                unknown ``train_kwargs`` keys.
        """
        fmt = getattr(train_data_format, "value", train_data_format)
        if fmt not in (None, TrainDataFormat.CHAT.value):
            raise ValueError(f"TrlProvider trains on chat data (ChatAdapter); got format {fmt!r}")
        if not self.is_provider_model(model):
            raise ValueError(f"TrlProvider fine-tunes local models ('local:...'); got {model!r}")
        spec, _ = spec_for(model)
        if "+" in spec:
            raise ValueError(f"{model!r} already carries an adapter; fine-tune its base or a merged folder")
        rows = chat_to_prompt_completion(train_data)
        kwargs = {**self.train_kwargs, **(train_kwargs or {})}
        known = {f.name for f in dataclasses.fields(DistillConfig)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"Unknown train_kwargs {unknown}; use DistillConfig fields, e.g. max_steps, lora_r")
        run_name = kwargs.pop("run_name", None) or f"dspy-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        data_dir = Path(self.output_dir) / run_name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        data_file = data_dir / "sft_joint.jsonl"
        data_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        kwargs.update(mode="joint", joint_file=str(data_file), base=spec, output_dir=self.output_dir,
                      run_name=run_name, evaluate=False, dpo=False, resume=True)
        kwargs.pop("from_run", None)
        logger.info("TrlProvider: fine-tuning %s on %d rows in %s/%s", spec, len(rows), self.output_dir, run_name)
        results = run_distill(DistillConfig(**kwargs))
        return model_name_for(results["students"]["predictor"])
