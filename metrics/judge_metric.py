"""One metric for every DSPy optimizer: accuracy combined with the judge's oracle score of the reason.

:class:`JudgeMetric` follows DSPy's metric contract ``metric(example, pred, trace=None, pred_name=None,
pred_trace=None)``:

* under ``dspy.Evaluate`` (no trace) it returns a float in [0, 1];
* while bootstrapping demos (``trace`` set: BootstrapFewShot, MIPROv2) it returns a bool, ``score >= threshold``;
* when GEPA asks for feedback on one predictor (``pred_name`` set) it returns
  ``dspy.Prediction(score=..., feedback=...)``, the feedback naming the accuracy result, the failing judge criteria
  and the judge's justifications.

The score is ``(w_acc * accuracy + w_judge * oracle) / (w_acc + w_judge)``: ``accuracy`` is AccRM from
:mod:`metrics.accuracy` (1 for an exact hit, ``1/(k+1)`` for the k-th related occupation) and ``oracle`` the judge's
:func:`metrics.judge.oracle_score` of the predicted reason against the gold occupation. A prediction without a
reason (direct mode) or a metric without a judge is scored on accuracy alone.

GEPA's trace-capturing evaluation also calls the metric with a trace; pass ``bool_on_trace=False`` to keep the
float there. Judge calls run with DSPy tracing switched off, so they never enter the program's trace (bootstrapped
demos stay the program's own), and verdicts are cached per (history, reason, gold) so GEPA's per-predictor
feedback calls do not re-judge.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import dspy

from careers.onet import OnetTaxonomy
from metrics.accuracy import AccRM
from metrics.judge import CRITERIA, ReasonJudge

logger = logging.getLogger(__name__)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    try:
        value = obj[name] if not hasattr(obj, "get") else obj.get(name, default)
    except (KeyError, TypeError, AttributeError):
        value = getattr(obj, name, default)
    return default if value is None else value


class JudgeMetric:
    """Accuracy + judged reason quality, in DSPy's metric contract (see the module docstring).

    Args:
        judge: A :class:`~metrics.judge.ReasonJudge` (with its own LM), or None for accuracy only.
        taxonomy: The O*NET taxonomy (for AccRM and gold titles).
        accuracy_weight: Weight of accuracy in the score.
        judge_weight: Weight of the judge's oracle score.
        threshold: The bool returned under a trace is ``score >= threshold``.
        accuracy: A custom ``(example, pred) -> float`` in [0, 1]; default AccRM.
        bool_on_trace: Return a bool when ``trace`` is set (DSPy's bootstrapping convention); False keeps floats.
        cache_size: Judge verdicts kept (LRU) per metric.
    """

    def __init__(
        self,
        judge: ReasonJudge | None,
        taxonomy: OnetTaxonomy | None = None,
        *,
        accuracy_weight: float = 0.5,
        judge_weight: float = 0.5,
        threshold: float = 0.5,
        accuracy: Callable[[Any, Any], float] | None = None,
        bool_on_trace: bool = True,
        cache_size: int = 4096,
    ):
        if accuracy_weight < 0 or judge_weight < 0 or accuracy_weight + judge_weight <= 0:
            raise ValueError("accuracy_weight and judge_weight must be non-negative with a positive sum.")
        self.judge = judge
        self.taxonomy = taxonomy
        self.accuracy_weight = float(accuracy_weight)
        self.judge_weight = float(judge_weight)
        self.threshold = float(threshold)
        if accuracy is None and taxonomy is None:
            raise ValueError("JudgeMetric needs taxonomy= (for AccRM) or an accuracy= function.")
        self.accuracy = accuracy or AccRM(taxonomy).score
        self.bool_on_trace = bool_on_trace
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str, str], dspy.Prediction] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ scoring
    def gold_title(self, example: Any) -> str | None:
        """The gold next occupation's official title (``example.occupation``, else the title of its code)."""
        code = _get(example, "onet_code")
        if code and self.taxonomy is not None and code in self.taxonomy.occupations:
            return self.taxonomy.title(code)
        title = _get(example, "occupation")
        return str(title) if title else None

    def verdict(self, history: str, reason: str, gold: str) -> dspy.Prediction:
        """The judge's verdict on one reason (cached); judge calls are kept out of DSPy traces."""
        key = (history, reason, gold)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with dspy.context(trace=None):
            result = self.judge(history=history, reason=reason, occupation=gold)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def details(self, example: Any, pred: Any) -> dict[str, Any]:
        """Everything the score is made of: ``score``, ``accuracy``, ``oracle`` (or None) and the judge verdict."""
        if pred is None or not hasattr(pred, "get"):
            return {"score": 0.0, "accuracy": 0.0, "oracle": None, "verdict": None, "gold": self.gold_title(example)}
        try:
            accuracy = float(self.accuracy(example, pred))
        except Exception as exc:  # noqa: BLE001 - a malformed prediction is a miss
            logger.warning("Accuracy failed on a prediction (%s); scored 0.", exc)
            accuracy = 0.0
        gold = self.gold_title(example)
        reason = _get(pred, "reason")
        history = _get(example, "history")
        verdict = None
        if self.judge is not None and reason and gold and history and self.judge_weight > 0:
            verdict = self.verdict(str(history), str(reason), gold)
        if verdict is None:
            score = accuracy
            oracle = None
        else:
            oracle = float(verdict.oracle_score)
            total = self.accuracy_weight + self.judge_weight
            score = (self.accuracy_weight * accuracy + self.judge_weight * oracle) / total
        return {"score": score, "accuracy": accuracy, "oracle": oracle, "verdict": verdict, "gold": gold}

    def score(self, example: Any, pred: Any) -> float:
        """The float score in [0, 1]."""
        return self.details(example, pred)["score"]

    # ------------------------------------------------------------------ feedback
    def feedback(self, example: Any, pred: Any, info: dict[str, Any], pred_name: str | None = None) -> str:
        """Text feedback for GEPA: the accuracy result, then failing and passing judge criteria."""
        parts = []
        gold = info["gold"] or "(unknown)"
        answer = _get(pred, "occupation")
        if answer is None:
            parts.append(f"No occupation was produced; the correct next occupation was '{gold}'.")
        elif _get(pred, "matched", True) is False:
            parts.append(f"The answer '{answer}' is not an official O*NET-SOC 2019 title, so it counts as wrong; "
                         f"the correct next occupation was '{gold}'.")
        elif info["accuracy"] >= 1.0:
            parts.append(f"Correct: the predicted occupation '{answer}' is the person's next occupation.")
        elif info["accuracy"] > 0:
            parts.append(f"Partly correct (related-occupation credit {info['accuracy']:.2f}): predicted '{answer}', "
                         f"the actual next occupation was '{gold}'.")
        else:
            parts.append(f"Wrong: predicted '{answer}', the actual next occupation was '{gold}'.")
        verdict = info["verdict"]
        if verdict is None:
            if not _get(pred, "reason"):
                parts.append("No reason was given, so the reason was not judged.")
        else:
            thresholds = getattr(self.judge, "thresholds", {})
            failing, passing = [], []
            for criterion in CRITERIA:
                value = verdict.get(criterion)
                why = (verdict.justifications or {}).get(criterion, "")
                why = "" if why.strip().lower().rstrip(".") in ("none", "n/a", "") else why
                need = thresholds.get(criterion)
                if value is None:
                    failing.append(f"{criterion}: the judge could not score it")
                elif need is not None and value < need:
                    failing.append(f"{criterion} {value}/5 (needs {need})" + (f" - {why}" if why else ""))
                else:
                    passing.append(f"{criterion} {value}/5")
            if failing:
                parts.append("The reason fails on " + "; ".join(failing) + ".")
            if passing:
                parts.append("The reason passes on " + ", ".join(passing) + ".")
        if pred_name and "reason" in pred_name:
            parts.append("Improve the reason: only facts from the history, in chronological order, pointing to the "
                         "preferences and trajectory that lead to the actual next occupation, without naming it.")
        parts.append(f"Score {info['score']:.2f}.")
        return " ".join(parts)

    # ------------------------------------------------------------------ DSPy contract
    def __call__(self, example: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                 pred_trace: Any = None) -> float | bool | dspy.Prediction:
        """Float (Evaluate), bool (``trace`` set), or ``Prediction(score, feedback)`` (``pred_name`` set, GEPA)."""
        info = self.details(example, pred)
        if pred_name is not None:
            return dspy.Prediction(score=info["score"], feedback=self.feedback(example, pred, info, pred_name))
        if trace is not None and self.bool_on_trace:
            return info["score"] >= self.threshold
        return info["score"]

    def __repr__(self) -> str:
        return (f"JudgeMetric(accuracy_weight={self.accuracy_weight}, judge_weight={self.judge_weight}, "
                f"threshold={self.threshold}, judge={'yes' if self.judge is not None else 'no'})")
