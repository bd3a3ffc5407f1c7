"""DSPy modules: the reasoned next-occupation program, the hybrid program and LM-free baselines.

Three lines on the embedded default model::

    from programs import NextOccupation
    prog = NextOccupation.from_pretrained("local:gemma-3-270m")
    pred = prog({"person_id": "1", "jobs": [{"title": "Cashier", "start_year": 2015, "end_year": 2018}]})
"""

from programs.baselines import FrequencyBaseline, MarkovBaseline, ReturnAwareMarkov
from programs.evidence_teacher import EvidenceTeacher
from programs.factory import build_program
from programs.hybrid import HybridNextOccupation
from programs.next_occupation import NextOccupation

__all__ = [
    "EvidenceTeacher",
    "FrequencyBaseline",
    "HybridNextOccupation",
    "MarkovBaseline",
    "NextOccupation",
    "ReturnAwareMarkov",
    "build_program",
]
