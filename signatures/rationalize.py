"""Rationalization-mode teacher signature: the teacher sees the gold next occupation.

Used by ``compile.optimize --rationalize true`` (off by default, as in the paper): the teacher writes a
reason that explains the actual next move, but the reason must still be grounded in the history only and
must not name the occupation, so it can be used where the gold is unknown (the student's reason step).
"""

from __future__ import annotations

import dspy

from signatures.reasoning import HISTORY_DESC, REASON_DESC


class GenerateReasonFromGold(dspy.Signature):
    """Explain, from the career history alone, the preferences and trajectory that lead this person to the
    occupation they actually took next. Do not name that occupation or invent facts beyond the history."""

    history: str = dspy.InputField(desc=HISTORY_DESC)
    occupation: str = dspy.InputField(desc="The occupation the person actually held next (official O*NET title).")
    reason: str = dspy.OutputField(desc=REASON_DESC)
