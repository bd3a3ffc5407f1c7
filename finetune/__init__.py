"""Distillation of oracle traces into a small model with TRL + PEFT; Optuna studies.

Modules:

* :mod:`finetune.distill` -- ``python -m finetune.distill``: SFT (+ DPO, merge, before/after evaluation);
  :func:`finetune.distill.run_distill` is the importable entry point.
* :mod:`finetune.config` -- :class:`~finetune.config.DistillConfig` and ``--config``/flag parsing.
* :mod:`finetune.trainer` -- the shared SFT routine, the DPO stage and CPU-safe defaults.
* :mod:`finetune.completion_head` -- the completion-only LM head (fast path of the SFT loss on CPU).
* :mod:`finetune.model_loading` -- the base model and tokenizer for training; the checkpoint to resume from.
* :mod:`finetune.artifacts` -- training curves, model cards, merged weights.
* :mod:`finetune.run_reader` -- reads a distill run directory (students, mode, evaluation) for its consumers.
* :mod:`finetune.provider` -- :class:`~finetune.provider.TrlProvider`, a ``dspy.Provider`` for ``BootstrapFinetune``.
* :mod:`finetune.evaluate_student` -- the student in the DSPy program, before vs after.
* :mod:`finetune.study` -- ``python -m finetune.study``: Optuna studies over distill runs.
* :mod:`finetune.benchmark` -- fast vs plain training throughput.
* :mod:`finetune.demo_data` -- a small exported dataset for demos and benchmarks.
"""
