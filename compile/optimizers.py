"""DSPy prompt optimizers for the compile baseline, built from :class:`~compile.config.OptimizeConfig`.

``none`` keeps the zero-shot program; ``bootstrap`` is :class:`dspy.BootstrapFewShot`; ``random_search``
is :class:`dspy.BootstrapFewShotWithRandomSearch`; ``mipro`` is :class:`dspy.MIPROv2` (``auto=None``:
``num_candidate_programs`` instruction/demo candidates and as many trials; the teacher LM proposes
instructions); ``gepa`` is :class:`dspy.GEPA` with the teacher as reflection LM. All of them take the same
judge metric (:class:`metrics.judge_metric.JudgeMetric`), which returns a float under evaluation, a bool
while bootstrapping, and a score with feedback for GEPA.

Every optimizer flag reaches the optimizer (:data:`OPTIMIZER_FLAGS` says which optimizer reads which flag;
:class:`~compile.config.OptimizeConfig` rejects a non-default value the chosen optimizer would ignore), and
:func:`describe_changes` says what the optimizer changed: demos per predictor, instruction diffs, candidates
tried and their scores. A compile that changed nothing is reported as such, never silently.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

import dspy

from compile.config import OptimizeConfig
from lms import usage

logger = logging.getLogger(__name__)

OPTIMIZER_ROLES = {"mipro": "proposer", "gepa": "reflection"}


def build_optimizer(config: OptimizeConfig, metric: Any, *, teacher_lm: Any = None) -> Any:
    """The configured optimizer instance, or None for ``optimizer: none``.

    The proposal (MIPROv2) or reflection (GEPA) LM is a copy of the teacher registered under the role
    ``proposer`` / ``reflection`` of the run's ``lm_usage``, so its requests and failures are counted apart.
    """
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
    helper = _role_lm(teacher_lm, OPTIMIZER_ROLES.get(name))
    if name == "mipro":
        return dspy.MIPROv2(metric=metric, prompt_model=helper, task_model=teacher_lm, auto=None,
                            num_candidates=config.num_candidate_programs,
                            max_bootstrapped_demos=config.max_bootstrapped_demos,
                            max_labeled_demos=config.max_labeled_demos, num_threads=config.threads,
                            seed=config.seed, verbose=False)
    if name == "gepa":
        return dspy.GEPA(metric=metric, reflection_lm=helper, max_metric_calls=config.gepa_max_metric_calls,
                         num_threads=config.threads, seed=config.seed, track_stats=True)
    raise ValueError(f"optimizer {name!r} is not one of none, bootstrap, random_search, mipro, gepa.")


def _role_lm(lm: Any, role: str | None) -> Any:
    """A copy of ``lm`` whose calls the current usage tracker counts under ``role``."""
    if lm is None or role is None:
        return lm
    try:
        copied = lm.copy()
    except Exception:  # noqa: BLE001 - an LM that cannot be copied is used as is
        copied = lm
    tracker = usage.current()
    if tracker is not None:
        tracker.register(copied, role, override=True)
    return copied


def compile_program(optimizer: Any, program: dspy.Module, trainset: list, valset: list,
                    config: OptimizeConfig) -> dspy.Module:
    """Compiles ``program`` with ``optimizer`` (a copy of the program is returned unchanged for ``none``)."""
    if optimizer is None:
        return program.deepcopy()
    logger.info("optimizing with %s on %d train / %d val examples", type(optimizer).__name__, len(trainset),
                len(valset))
    with usage.role("optimizer"):
        if isinstance(optimizer, dspy.BootstrapFewShot):
            return optimizer.compile(program.deepcopy(), trainset=trainset)
        if isinstance(optimizer, dspy.MIPROv2):
            return optimizer.compile(program.deepcopy(), trainset=trainset, valset=valset or None,
                                     num_trials=config.num_candidate_programs, minibatch=len(valset) > 35)
        return optimizer.compile(program.deepcopy(), trainset=trainset, valset=valset or trainset)


def _instruction(predictor: Any) -> str:
    return str(getattr(getattr(predictor, "signature", None), "instructions", "") or "")


def _candidates(optimized: Any) -> list[dict[str, Any]]:
    """Candidates the optimizer tried with their scores (random search, MIPROv2, GEPA), best first."""
    tried: list[dict[str, Any]] = []
    for cand in getattr(optimized, "candidate_programs", None) or []:
        if isinstance(cand, dict) and "score" in cand:
            tried.append({"score": cand.get("score"), "full_eval": cand.get("full_eval", True)})
    for cand in getattr(optimized, "mb_candidate_programs", None) or []:
        if isinstance(cand, dict) and "score" in cand:
            tried.append({"score": cand.get("score"), "full_eval": False})
    detailed = getattr(optimized, "detailed_results", None)
    if detailed is not None and not tried:
        for i, score in enumerate(getattr(detailed, "val_aggregate_scores", None) or []):
            tried.append({"candidate": i, "score": score, "full_eval": True})
    for cand in tried:
        if isinstance(cand.get("score"), float):
            cand["score"] = round(cand["score"], 4)
    return tried


def describe_changes(before: dspy.Module, after: dspy.Module, optimizer_name: str) -> dict[str, Any]:
    """What compiling changed: demos and instructions per predictor, and the candidates tried.

    Returns:
        ``{"optimizer", "changed", "predictors": {name: {"demos_before", "demos_after", "instruction_changed",
        "instruction_diff"}}, "candidates_tried": [{"score", ...}], "summary"}``.
    """
    old = dict(before.named_predictors())
    predictors: dict[str, Any] = {}
    changed = False
    for name, pred in after.named_predictors():
        prev = old.get(name)
        was, now = (_instruction(prev) if prev is not None else ""), _instruction(pred)
        demos_before, demos_after = len(getattr(prev, "demos", []) or []), len(getattr(pred, "demos", []) or [])
        entry = {"demos_before": demos_before, "demos_after": demos_after, "instruction_changed": was != now}
        if was != now:
            entry["instruction_diff"] = "\n".join(difflib.unified_diff(
                was.splitlines(), now.splitlines(), "before", "after", lineterm="", n=1))
        changed = changed or was != now or demos_before != demos_after
        predictors[name] = entry
    tried = _candidates(after)
    if optimizer_name == "none":
        summary = "optimizer none: the zero-shot program is used as is."
    elif not changed:
        summary = (f"optimizer {optimizer_name} changed nothing: no demo added and no instruction rewritten"
                   f"{f' ({len(tried)} candidates tried)' if tried else ''}; the optimized program is the zero-shot "
                   "one. Check lm_usage for failed proposal/reflection calls.")
    else:
        parts = [f"{name}: {e['demos_after']} demos" + (", instruction rewritten" if e["instruction_changed"] else "")
                 for name, e in predictors.items()]
        summary = f"optimizer {optimizer_name} changed " + "; ".join(parts) + (
            f" ({len(tried)} candidates tried)" if tried else "")
    return {"optimizer": optimizer_name, "changed": changed, "predictors": predictors, "candidates_tried": tried,
            "summary": summary}
