"""The LLM judge of reasons: factuality, coherence and utility (1-5 each) and the oracle score.

:class:`ReasonJudge` runs three judges (:mod:`signatures.judges`) with its own LM. Each score must be an integer
from 1 to 5. A judge whose answer does not parse, or whose score is not an integer in range, is retried once with a
new ``rollout_id`` and a raised temperature (so a cached or greedy answer is not simply repeated); a second failure
is recorded in ``failures`` and the score is None. The judge never raises on a bad judge answer.

**Oracle score.** :func:`oracle_score` maps each score ``s`` to ``(s - 1) / 4`` in [0, 1] and returns the weighted
mean over the criteria, with configurable ``weights`` (default equal, :data:`DEFAULT_WEIGHTS`). A criterion whose
score is missing (a judge failure) counts as 0, so a reason with a failed judge never looks better than one that
was judged. :func:`passes` checks per-criterion minimum scores (:data:`DEFAULT_THRESHOLDS`: 4 on each criterion);
the best-judged reasons (passing, highest oracle score) become oracle reasons for distillation.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import dspy

from careers.history import neutralize_markers
from lms import usage
from lms.resolve import resolve_lm
from signatures.judges import SCORE_RANGE, JudgeCoherence, JudgeFactuality, JudgeUtility

logger = logging.getLogger(__name__)

CRITERIA = ("factuality", "coherence", "utility")
DEFAULT_WEIGHTS: dict[str, float] = {"factuality": 1.0, "coherence": 1.0, "utility": 1.0}
DEFAULT_THRESHOLDS: dict[str, int] = {"factuality": 4, "coherence": 4, "utility": 4}
RETRY_TEMPERATURE = 0.7
_JUSTIFICATION_FIELD = {"factuality": "errors", "coherence": "justification", "utility": "justification"}


def validate_score(value: Any, low: int = SCORE_RANGE[0], high: int = SCORE_RANGE[1]) -> int | None:
    """The score as an int when it is an integer in ``[low, high]`` (``4``, ``"4"``, ``4.0``), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("+-").isdigit():
            return None
        value = int(text)
    if not isinstance(value, int):
        return None
    return value if low <= value <= high else None


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    unknown = set(weights) - set(CRITERIA)
    if unknown:
        raise ValueError(f"Unknown criteria {sorted(unknown)}; the criteria are {list(CRITERIA)}.")
    out = {c: float(weights.get(c, 0.0)) for c in CRITERIA}
    if any(w < 0 for w in out.values()) or sum(out.values()) <= 0:
        raise ValueError(f"Weights must be non-negative with a positive sum, got {dict(weights)}.")
    return out


def oracle_score(scores: Mapping[str, Any], weights: Mapping[str, float] | None = None) -> float:
    """Combines the three 1-5 scores into one number in [0, 1].

    Args:
        scores: ``{"factuality": int|None, "coherence": int|None, "utility": int|None}`` (or a Prediction with
            these fields). Missing or invalid scores count as 0.
        weights: Per-criterion non-negative weights (default equal); criteria left out get weight 0.

    Returns:
        ``sum_c w_c * (s_c - 1) / 4 / sum_c w_c``.

    Raises:
        ValueError: For unknown criteria or weights that are negative or sum to 0.
    """
    w = _check_weights(weights if weights is not None else DEFAULT_WEIGHTS)
    low, high = SCORE_RANGE
    total = 0.0
    for criterion, weight in w.items():
        score = validate_score(_get(scores, criterion))
        if score is not None:
            total += weight * (score - low) / (high - low)
    return total / sum(w.values())


def passes(scores: Mapping[str, Any], thresholds: Mapping[str, int] | None = None) -> bool:
    """Whether every thresholded criterion has a valid score at or above its threshold.

    Args:
        scores: The criterion scores (see :func:`oracle_score`).
        thresholds: Minimum score per criterion (default :data:`DEFAULT_THRESHOLDS`); criteria left out are not
            checked.

    Raises:
        ValueError: For unknown criteria.
    """
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    unknown = set(thresholds) - set(CRITERIA)
    if unknown:
        raise ValueError(f"Unknown criteria {sorted(unknown)}; the criteria are {list(CRITERIA)}.")
    for criterion, minimum in thresholds.items():
        score = validate_score(_get(scores, criterion))
        if score is None or score < minimum:
            return False
    return True


def _get(scores: Any, key: str) -> Any:
    if isinstance(scores, Mapping):
        return scores.get(key)
    try:
        return scores[key]
    except (KeyError, TypeError, IndexError):
        return getattr(scores, key, None)


class ReasonJudge(dspy.Module):
    """Scores a reason on factuality (vs. the history), coherence, and utility (vs. the gold next occupation).

    Args:
        lm: The judge's LM, or a spec string/dict (see :func:`lms.resolve_lm`); None uses DSPy's configured LM.
        weights: Oracle-score weights (see :func:`oracle_score`).
        thresholds: Per-criterion pass thresholds (see :func:`passes`).
        retries: Extra attempts per judge after an invalid answer (default 1).
        adapter: The adapter for judge calls; default a ChatAdapter without the JSON fallback, so one attempt is
            one LM call.
    """

    def __init__(
        self,
        lm: Any = None,
        *,
        weights: Mapping[str, float] | None = None,
        thresholds: Mapping[str, int] | None = None,
        retries: int = 1,
        adapter: Any = None,
    ):
        super().__init__()
        if lm is not None and not isinstance(lm, dspy.BaseLM):
            lm = resolve_lm(lm)
        self.lm = lm
        self.weights = _check_weights(weights if weights is not None else DEFAULT_WEIGHTS)
        passes({}, thresholds)  # validates the criteria names
        self.thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        self.retries = max(0, int(retries))
        self.adapter = adapter or dspy.ChatAdapter(use_json_adapter_fallback=False)
        self.factuality = dspy.Predict(JudgeFactuality)
        self.coherence = dspy.Predict(JudgeCoherence)
        self.utility = dspy.Predict(JudgeUtility)
        self._rollout = 0

    def __deepcopy__(self, memo):
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key == "lm" else copy.deepcopy(value, memo)
        return new

    def _judge_one(self, criterion: str, inputs: dict[str, str]) -> tuple[int | None, str, str | None]:
        """Runs one judge with validation and retries: ``(score or None, justification, failure or None)``."""
        predictor = getattr(self, criterion)
        problem = None
        for attempt in range(1 + self.retries):
            config = {}
            if attempt:
                self._rollout += 1
                config = {"rollout_id": self._rollout, "temperature": RETRY_TEMPERATURE}
                usage.record_retry()
            try:
                out = predictor(**inputs, config=config)
            except Exception as exc:  # noqa: BLE001 - a broken judge answer is a recorded failure, never a crash
                problem = f"unparseable answer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                logger.info("Judge %s attempt %d failed: %s", criterion, attempt + 1, problem)
                continue
            raw = out.get(criterion)
            score = validate_score(raw)
            justification = str(out.get(_JUSTIFICATION_FIELD[criterion]) or "").strip()
            if score is not None:
                return score, justification, None
            problem = f"score {raw!r} is not an integer from {SCORE_RANGE[0]} to {SCORE_RANGE[1]}"
            usage.discard_last_reply()  # a re-run must ask the LM again, not get this reply from DSPy's cache
            usage.record_error(f"{criterion}: {problem}", parse=True)
            logger.info("Judge %s attempt %d invalid: %s", criterion, attempt + 1, problem)
        failure = f"{criterion}: {problem} after {1 + self.retries} attempts"
        logger.warning("Judge failure: %s", failure)
        return None, "", failure

    def forward(self, history: str, reason: str, occupation: str) -> dspy.Prediction:
        """Judges one reason.

        Args:
            history: The rendered career history the reason was written from.
            reason: The reason to judge.
            occupation: The gold next occupation (official title), seen only by the utility judge.

        Returns:
            ``dspy.Prediction(factuality, coherence, utility, justifications, failures, oracle_score, passed)``
            (scores are int or None; ``justifications`` maps criterion -> text).
        """
        # inputs are data: DSPy field markers inside them ([[ ## name ## ]]) are rewritten as [name]
        history, occupation = (neutralize_markers(v) if isinstance(v, str) else v for v in (history, occupation))
        reason = neutralize_markers("" if reason is None else str(reason))
        inputs = {
            "factuality": {"history": history, "reason": reason},
            "coherence": {"reason": reason},
            "utility": {"occupation": occupation, "reason": reason},
        }
        scores: dict[str, int | None] = {}
        justifications: dict[str, str] = {}
        failures: list[str] = []
        settings = {"adapter": self.adapter}
        if self.lm is not None:
            settings["lm"] = self.lm
        with dspy.context(**settings):
            for criterion in CRITERIA:
                score, justification, failure = self._judge_one(criterion, inputs[criterion])
                scores[criterion] = score
                justifications[criterion] = justification
                if failure:
                    failures.append(failure)
        return dspy.Prediction(
            **scores,
            justifications=justifications,
            failures=failures,
            oracle_score=oracle_score(scores, self.weights),
            passed=passes(scores, self.thresholds),
        )
