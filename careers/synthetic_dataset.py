"""The synthetic dataset: O*NET-grounded synthetic careers split by person (``load_dataset("synthetic")``).

:func:`load_synthetic` draws careers from :class:`careers.synthetic.SyntheticCareerGenerator`, or with ``motives``
from :class:`careers.motives.MotiveCareerGenerator`, and splits them by person.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from careers.motives import MotiveCareerGenerator, bayes_ceilings
from careers.onet import OnetTaxonomy
from careers.splits import DEFAULT_FRACTIONS, DatasetSplits, check_fractions
from careers.synthetic import SyntheticCareerGenerator, bayes_optimal_accuracy


def load_synthetic(
    data_dir: str | os.PathLike | None = None,
    n_persons: int = 2000,
    seed: int = 0,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    min_history_jobs: int = 1,
    taxonomy: OnetTaxonomy | None = None,
    motives: bool = False,
    **generator_kwargs: Any,
) -> DatasetSplits:
    """Generates ``n_persons`` synthetic careers and splits their transitions by person.

    Args:
        data_dir: Data directory with ``onet/`` and ``soc/`` (ignored when ``taxonomy`` is given).
        n_persons: Number of persons.
        seed: Generator seed and split seed.
        fractions: Train/dev/test shares of persons.
        min_history_jobs: Fewest jobs before a transition for it to become an example.
        taxonomy: A loaded taxonomy (else loaded from ``data_dir``).
        motives: Use the latent-motive world (:class:`careers.motives.MotiveCareerGenerator`, which adds
            ``next_distribution_given_motive``, ``motive`` and ``motive_posterior`` to every example and the
            ``perfect_reason_accuracy`` ceiling to ``stats``); False keeps the second-order chain.
        **generator_kwargs: Passed to :class:`SyntheticCareerGenerator` (``p_stay``, ``p_return``, ...).

    Returns:
        :class:`DatasetSplits` named ``"synthetic"``; ``stats["bayes_optimal_accuracy"]`` over all examples.
    """
    if n_persons < 1:
        raise ValueError(f"n_persons must be positive, got {n_persons}")
    fr = check_fractions(fractions)
    tax = taxonomy or OnetTaxonomy.load(data_dir)
    if motives:
        gen = MotiveCareerGenerator(tax, seed, **generator_kwargs)
    else:
        gen = SyntheticCareerGenerator(tax, seed, **generator_kwargs)
    examples = gen.generate(n_persons, min_history_jobs)
    stats = {"persons": n_persons, "transitions": len(examples), "motives": bool(motives),
             "bayes_optimal_accuracy": round(bayes_optimal_accuracy(examples), 4) if examples else None}
    if motives and examples:
        stats["perfect_reason_accuracy"] = round(bayes_ceilings(examples)["perfect_reason"], 4)
    return DatasetSplits.from_examples(examples, seed=seed, fractions=fr, name="synthetic", stats=stats)
