"""DSPy signatures of the reasoned next-occupation method.

* :mod:`signatures.reasoning` — reason generation and occupation prediction (two-step, joint, direct).
* :mod:`signatures.candidates` — hybrid variants with a supervised baseline's candidates as an input.
* :mod:`signatures.judges` — the LM judges of a reason (factuality, coherence, utility).
* :mod:`signatures.rationalize` — the rationalization-mode teacher that sees the gold occupation.
"""

from signatures.candidates import (
    GenerateReasonWithCandidates,
    PredictDirectWithCandidates,
    PredictOccupationWithCandidates,
    ReasonAndPredictWithCandidates,
    format_candidates,
    parse_candidates,
)
from signatures.judges import SCORE_RANGE, JudgeCoherence, JudgeFactuality, JudgeUtility
from signatures.rationalize import GenerateReasonFromGold
from signatures.reasoning import GenerateReason, PredictDirect, PredictOccupation, ReasonAndPredict

__all__ = [
    "GenerateReason",
    "GenerateReasonFromGold",
    "PredictOccupation",
    "ReasonAndPredict",
    "PredictDirect",
    "GenerateReasonWithCandidates",
    "PredictOccupationWithCandidates",
    "ReasonAndPredictWithCandidates",
    "PredictDirectWithCandidates",
    "format_candidates",
    "parse_candidates",
    "JudgeFactuality",
    "JudgeCoherence",
    "JudgeUtility",
    "SCORE_RANGE",
]
