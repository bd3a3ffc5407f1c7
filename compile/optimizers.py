"""DSPy prompt optimizers for the compile baseline, built from :class:`~compile.config.OptimizeConfig`.

``none`` keeps the zero-shot program; ``bootstrap`` is :class:`dspy.BootstrapFewShot`; ``random_search``
is :class:`dspy.BootstrapFewShotWithRandomSearch`; ``mipro`` is :class:`dspy.MIPROv2` (``auto="light"``,
the teacher LM proposes instructions); ``gepa`` is :class:`dspy.GEPA` with the teacher as reflection LM.
All of them take the same judge metric (:class:`metrics.judge_metric.JudgeMetric`), which returns a float
under evaluation, a bool while bootstrapping, and a score with feedback for GEPA.
"""

from __future__ import annotations

import logging
from typing import Any

import dspy

from compile.config import OptimizeConfig

logger = logging.getLogger(__name__)


def build_optimizer(config: OptimizeConfig, metric: Any, *, teacher_lm: Any = None) -> Any:
    """The configured optimizer instance, or None for ``optimizer: none``."""
    name = config.optimizer
    if name == "none":
        return None
    if name == "bootstrap":
        return dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=config.max_bootstrapped_demos,
                                     max_labeled_demos=config.max_labeled_demos, max_rounds=1)
    if name == "random_search":
        return dspy.BootstrapFewShotWithRandomSearch(
            metric=metric, max_bootstrapped_demos=config.max_bootstrapped_demos,
            max_labeled_demos=config.max_labeled_demos, num_candidate_programs=config.num_candidate_programs,
            num_threads=config.threads)
    if name == "mipro":
        return dspy.MIPROv2(metric=metric, prompt_model=teacher_lm, task_model=teacher_lm, auto="light",
                            max_bootstrapped_demos=config.max_bootstrapped_demos,
                            max_labeled_demos=config.max_labeled_demos, num_threads=config.threads,
                            seed=config.seed, verbose=False)
    if name == "gepa":
        return dspy.GEPA(metric=metric, reflection_lm=teacher_lm, max_metric_calls=config.gepa_max_metric_calls,
                         num_threads=config.threads, seed=config.seed)
    raise ValueError(f"optimizer {name!r} is not one of none, bootstrap, random_search, mipro, gepa.")


def compile_program(optimizer: Any, program: dspy.Module, trainset: list, valset: list,
                    config: OptimizeConfig) -> dspy.Module:
    """Compiles ``program`` with ``optimizer`` (a copy of the program is returned unchanged for ``none``)."""
    if optimizer is None:
        return program.deepcopy()
    logger.info("optimizing with %s on %d train / %d val examples", type(optimizer).__name__, len(trainset),
                len(valset))
    if isinstance(optimizer, dspy.BootstrapFewShot):
        return optimizer.compile(program.deepcopy(), trainset=trainset)
    if isinstance(optimizer, dspy.MIPROv2):
        return optimizer.compile(program.deepcopy(), trainset=trainset, valset=valset or None,
                                 minibatch=len(valset) > 35)
    return optimizer.compile(program.deepcopy(), trainset=trainset, valset=valset or trainset)
