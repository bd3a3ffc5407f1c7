"""Judge signatures: an LM scores a reason on factuality, coherence and utility (1-5 each).

Each judge writes a short justification first and then an integer score from 1 (worst) to 5 (best).
:class:`metrics.judge.ReasonJudge` runs the three judges, validates the scores and combines them into an
oracle score.
"""

from __future__ import annotations

import dspy

SCORE_RANGE = (1, 5)

_SCALE = "An integer from 1 to 5: "


class JudgeFactuality(dspy.Signature):
    """Check whether every claim in a reason about a person's career is supported by their career history.

    A claim is supported when the history states it or it follows directly from what the history states
    (a job held, its years, an employer, a degree, a move between jobs). Years, titles, employers and degrees
    that do not appear in the history, and preferences with no basis in it, are errors.
    """

    history: str = dspy.InputField(desc="The person's career history; the only source of facts.")
    reason: str = dspy.InputField(desc="The reason to check.")
    errors: str = dspy.OutputField(
        desc="Each claim of the reason that the history does not support, separated by semicolons; 'none' if all "
        "claims are supported."
    )
    factuality: int = dspy.OutputField(
        desc=_SCALE + "5 = every claim is supported; 4 = one minor unsupported detail; 3 = some claims unsupported; "
        "2 = mostly unsupported; 1 = contradicts the history or invents the career."
    )


class JudgeCoherence(dspy.Signature):
    """Judge whether a reason about a person's career is internally coherent.

    A coherent reason keeps events in their chronological order, draws causal links that make sense (a
    later job cannot cause an earlier one; skills come from work or study that preceded them), and does not
    contradict itself.
    """

    reason: str = dspy.InputField(desc="The reason to judge.")
    justification: str = dspy.OutputField(desc="One or two sentences naming any temporal or causal flaw.")
    coherence: int = dspy.OutputField(
        desc=_SCALE + "5 = clear order and sound causal logic; 3 = understandable with some gaps or leaps; "
        "1 = events out of order, contradictory or incoherent."
    )


class JudgeUtility(dspy.Signature):
    """Judge how directly a reason about a person's career supports the occupation they actually took next.

    A useful reason points to preferences, skills or a trajectory that make the given occupation a natural
    next step, so that a reader of the reason would be led towards it. A reason that fits many occupations
    equally well, or points elsewhere, is of little use. The reason should not simply name the occupation.
    """

    occupation: str = dspy.InputField(desc="The occupation the person actually held next (official O*NET title).")
    reason: str = dspy.InputField(desc="The reason to judge.")
    justification: str = dspy.OutputField(desc="One or two sentences on how the reason relates to the occupation.")
    utility: int = dspy.OutputField(
        desc=_SCALE + "5 = points directly to this occupation; 3 = compatible but generic; 1 = unrelated or points "
        "to a different kind of work."
    )
