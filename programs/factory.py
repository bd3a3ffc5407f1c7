"""Build any program of the project by name, for the evaluate CLI and experiments.

Names: ``frequency``, ``markov``, ``return_markov``, ``sequence`` (LM-free baselines, fitted on ``trainset``; ``sequence``
is the GRU of :mod:`programs.sequence_model`), ``two_step``,
``joint``, ``direct`` (:class:`programs.next_occupation.NextOccupation` modes) and ``hybrid`` (a fitted baseline's
candidates feeding the reasoned program). Baselines are imported lazily, so the LM programs build without them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import dspy

from careers.onet import OnetTaxonomy
from programs.baseline_registry import make_baseline
from programs.hybrid import HybridNextOccupation
from programs.next_occupation import NextOccupation

logger = logging.getLogger(__name__)

BASELINE_NAMES = ("frequency", "markov", "return_markov", "sequence")
LM_NAMES = ("two_step", "joint", "direct")
PROGRAM_NAMES = BASELINE_NAMES + LM_NAMES + ("hybrid",)


def build_baseline(
    name: str,
    *,
    taxonomy: OnetTaxonomy | None = None,
    trainset: Sequence[dspy.Example] | None = None,
    **kwargs: Any,
) -> dspy.Module:
    """Builds a baseline (``frequency``, ``markov``, ``return_markov``, ``sequence``); fits it when given ``trainset``.

    Raises:
        ValueError: For an unknown name.
        ImportError: When :mod:`programs.baselines` is not available.
    """
    if name not in BASELINE_NAMES:
        raise ValueError(f"Unknown baseline {name!r}; choose one of {list(BASELINE_NAMES)}.")

    baseline = make_baseline(name, taxonomy=taxonomy, **kwargs)
    if trainset is not None:
        baseline.fit(list(trainset))
    else:
        logger.info("Baseline %s built without a trainset: fit() or load() it before use.", name)
    return baseline


def build_program(
    name: str,
    *,
    lm: Any = None,
    judge_lm: Any = None,
    taxonomy: OnetTaxonomy | None = None,
    trainset: Sequence[dspy.Example] | None = None,
    **kw: Any,
) -> dspy.Module:
    """Builds a program by name.

    Args:
        name: One of :data:`PROGRAM_NAMES`.
        lm: LM or spec for the LM programs (both steps); ``reasoner_lm``/``predictor_lm`` in ``kw`` override it.
            Ignored by the baselines.
        judge_lm: Accepted so that one call site serves every program; no program uses a judge (the judge belongs to
            :mod:`metrics.judge`), so it is ignored here.
        taxonomy: The O*NET taxonomy (loaded lazily by the LM programs when None).
        trainset: Training examples; required to fit the baselines and the hybrid program's baseline.
        **kw: Program options. Baselines: ``k``, ``alpha``, ... (``sequence``: also ``seed``, ``cache_dir`` and the
            :class:`programs.sequence_model.SequenceConfig` fields such as ``hidden_size``, ``epochs``). LM programs: ``k``, ``data_dir``, ``reasoner_lm``,
            ``predictor_lm``. Hybrid: ``baseline`` (a name, default ``return_markov``, or a fitted baseline),
            ``baseline_kwargs`` (dict), ``k_candidates``, ``mode`` (default ``two_step``), and the LM options.

    Returns:
        The program (a ``dspy.Module``).

    Raises:
        ValueError: For an unknown name, or a hybrid/baseline that needs a trainset and got none.
    """
    if name not in PROGRAM_NAMES:
        raise ValueError(f"Unknown program {name!r}; choose one of {list(PROGRAM_NAMES)}.")
    if judge_lm is not None:
        logger.debug("build_program(%s): judge_lm is not used by programs.", name)
    if name in BASELINE_NAMES:
        if trainset is None:
            raise ValueError(f"The {name} baseline is supervised: pass trainset= to build_program.")
        return build_baseline(name, taxonomy=taxonomy, trainset=trainset, **kw)

    if name in LM_NAMES:
        return NextOccupation(mode=name, lm=lm, taxonomy=taxonomy, **kw)

    baseline = kw.pop("baseline", "return_markov")
    baseline_kwargs = kw.pop("baseline_kwargs", None) or {}
    if isinstance(baseline, str):
        if trainset is None:
            raise ValueError("The hybrid program fits its baseline on the training split: pass trainset=.")
        baseline = build_baseline(baseline, taxonomy=taxonomy, trainset=trainset, **baseline_kwargs)
    kw.setdefault("mode", "two_step")
    return HybridNextOccupation(baseline=baseline, lm=lm, taxonomy=taxonomy, **kw)
