"""Hybrid program: a supervised baseline's top-K candidates become an input of the reasoned program.

:class:`HybridNextOccupation` asks a fitted baseline (:mod:`programs.baselines`: frequency, Markov or return-aware
Markov) for its top-``k_candidates`` next occupations with probabilities, renders them with
:func:`signatures.format_candidates` into a ``candidates`` input field, and runs the reasoned program (two-step, joint
or direct) on the ``*WithCandidates`` signatures. With ``answer_set="titles"`` (default) the LM may pick a candidate or
name any other official title; the answer is normalized exactly as in :class:`programs.next_occupation.NextOccupation`.
With ``answer_set="candidates"`` the answer is one of the candidates: a local LM scores each candidate title after the
same prompt (and reason) and ``ranked`` lists the candidates by that score; another LM's answer is kept when it names
a candidate, else the baseline's first candidate answers.

The baselines read past job *states*, not text: call the program with a dict/JSON/:class:`CareerHistory` history (the
states are derived from it), or pass ``states=`` (``dspy.Evaluate`` over
:func:`programs.baselines.examples_with_states`) or ``career=``. Candidates may also be given directly
(``candidates=[(title, prob), ...]``), which bypasses the baseline.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import dspy

import lms
from careers.history import CareerHistory
from programs.baseline_registry import load_baseline
from programs.manifest import safe_child
from programs.next_occupation import NextOccupation
from signatures import (
    GenerateReasonWithCandidates,
    PredictDirectWithCandidates,
    PredictOccupationWithCandidates,
    ReasonAndPredictWithCandidates,
    format_candidates,
    parse_candidates,
)

logger = logging.getLogger(__name__)

BASELINE_FILE = "baseline.json"
ANSWER_SETS = ("titles", "candidates")


class HybridNextOccupation(NextOccupation):
    """The reasoned program with a supervised baseline's candidates as an extra input.

    Args:
        baseline: A fitted baseline module whose ``forward(history, states=None, career=None)`` returns
            ``ranked=[(title, prob), ...]``; may be None when every call passes ``candidates``.
        k_candidates: How many baseline candidates the LM sees.
        answer_set: ``"titles"`` (default: any official title) or ``"candidates"`` (the answer and ``ranked`` are
            the candidates, ordered by the LM; see the module docstring).
        **kwargs: :class:`~programs.next_occupation.NextOccupation` arguments (``mode``, LMs, ``taxonomy``, ``k``).
    """

    def __init__(self, baseline: Any = None, *, k_candidates: int = 5, answer_set: str = "titles", **kwargs: Any):
        if not isinstance(k_candidates, int) or k_candidates < 1:
            raise ValueError(f"k_candidates must be a positive integer, got {k_candidates!r}")
        if answer_set not in ANSWER_SETS:
            raise ValueError(f"answer_set must be one of {ANSWER_SETS}, got {answer_set!r}")
        self.k_candidates = k_candidates
        self.answer_set = answer_set
        super().__init__(**kwargs)
        self.baseline = baseline

    def _build_predictors(self) -> None:
        if self.mode == "two_step":
            self.reasoner = dspy.Predict(GenerateReasonWithCandidates)
            self.predictor = dspy.Predict(PredictOccupationWithCandidates)
        elif self.mode == "joint":
            self.predictor = dspy.Predict(ReasonAndPredictWithCandidates)
        else:
            self.predictor = dspy.Predict(PredictDirectWithCandidates)

    def named_parameters(self):
        # The baseline is fitted, not optimized: keep its (nonexistent) predictors out of optimizers' reach.
        return [(name, p) for name, p in super().named_parameters() if not name.startswith("baseline.")]

    # ------------------------------------------------------------------ candidates
    def baseline_candidates(
        self,
        parsed: CareerHistory | None,
        text: str,
        states: Any = None,
        career: Any = None,
    ) -> list[tuple[str, float]]:
        """The baseline's top ``k_candidates`` ``(title, prob)`` for one history.

        Raises:
            ValueError: Without a baseline, or when neither states nor a structured history are available.
        """
        if self.baseline is None:
            raise ValueError("HybridNextOccupation has no baseline: pass baseline= or call it with candidates=.")
        if states is None and career is None:
            if parsed is None:
                raise ValueError(
                    "The hybrid program needs the past job states for its baseline: call it with a dict/JSON/"
                    "CareerHistory history, or pass states= (see programs.baselines.examples_with_states)."
                )
            career = json.loads(parsed.to_json())
        pred = self.baseline(history=text, states=states, career=career)
        ranked = list(getattr(pred, "ranked", None) or [])
        return [(str(t), float(p)) for t, p in ranked[: self.k_candidates]]

    def extra_inputs(self, history_text: str, parsed: CareerHistory | None, original: Any, **kwargs: Any) -> dict:
        """Adds ``candidates`` (rendered text) from ``kwargs['candidates']`` or the baseline."""
        candidates = kwargs.get("candidates")
        if candidates is None:
            candidates = self.baseline_candidates(parsed, history_text, kwargs.get("states"), kwargs.get("career"))
        elif not isinstance(candidates, str):
            candidates = list(candidates)[: self.k_candidates]
        return {"candidates": format_candidates(candidates)}

    def _finish(self, raw: Any, inputs: dict, prefix: dict | None) -> dspy.Prediction:
        pred = super()._finish(raw, inputs, prefix)
        if self.answer_set == "titles":
            return pred
        titles = [t for t, _ in parse_candidates(inputs.get("candidates"))
                  if self.taxonomy.code_for_title(t)][: self.k_candidates]
        if not titles:
            logger.warning("answer_set='candidates' but no candidate is an official title; the answer is kept.")
            return pred
        ranked = self._rank_candidates(titles, inputs, prefix)
        if ranked is None:  # not a local LM: keep an answer that names a candidate, else the baseline's first
            first = pred.occupation if pred.occupation in titles else titles[0]
            ranked = [(t, 0.0) for t in [first] + [t for t in titles if t != first]]
        top = ranked[0][0]
        if top != pred.occupation:
            pred.method = "candidate"
        pred.occupation, pred.onet_code, pred.matched = top, self.taxonomy.code_for_title(top), True
        pred.ranked, pred.ranking = ranked[: self.k], "candidates"
        return pred

    def _rank_candidates(self, titles: list[str], inputs: dict, prefix: dict | None) -> list[tuple[str, float]] | None:
        """The candidates by the local LM's log-probability after the occupation step's prompt; None when the
        occupation LM is not local (or scoring failed)."""
        lm = self._occupation_lm()
        if not lms.is_local(lm):
            return None
        try:
            scores = lms.option_logprobs(lm, self._predictor_messages(inputs), "occupation", titles,
                                         prefix_fields=prefix)
        except Exception as exc:  # noqa: BLE001 - fall back to the answer / the baseline's order
            logger.warning("Scoring the candidates failed (%s); using the answer or the baseline's order.", exc)
            return None
        order = sorted(range(len(titles)), key=lambda i: -scores[i])  # stable: ties keep the baseline's order
        return [(titles[i], float(scores[i])) for i in order]

    # ------------------------------------------------------------------ persistence
    def manifest(self) -> dict[str, Any]:
        """The base manifest plus ``k_candidates``, ``answer_set`` and the saved baseline file (None when not saved)."""
        out = super().manifest()
        out["k_candidates"] = self.k_candidates
        out["answer_set"] = self.answer_set
        out["baseline"] = getattr(self, "_baseline_file", None)
        return out

    def save(self, path: str | os.PathLike, save_program: bool = False, modules_to_serialize=None) -> None:
        """Saves like :meth:`NextOccupation.save`, plus ``baseline.json`` for a :mod:`programs.baselines` baseline.

        Other baselines (without their own ``save``) are not saved; pass ``baseline=`` to :meth:`load`.
        """
        path = Path(path)
        if save_program or path.suffix in (".json", ".pkl"):
            return super().save(path, save_program=save_program, modules_to_serialize=modules_to_serialize)
        path.mkdir(parents=True, exist_ok=True)
        self._baseline_file = None
        own_save = getattr(type(self.baseline), "save", None)
        if self.baseline is not None and own_save not in (None, dspy.Module.save):  # a baseline's own JSON save
            try:
                self.baseline.save(path / BASELINE_FILE)
                self._baseline_file = BASELINE_FILE
            except Exception as exc:  # noqa: BLE001 - the program state is still saved; say what is missing
                logger.warning("Could not save the hybrid baseline (%s); load() will need baseline=.", exc)
        super().save(path)

    @classmethod
    def _from_manifest(cls, manifest: dict, *, run_dir: Path | None = None, baseline: Any = None,
                       **kwargs: Any) -> HybridNextOccupation:
        if baseline is None and manifest.get("baseline") and run_dir is not None:
            baseline = load_baseline(safe_child(run_dir, manifest["baseline"]), taxonomy=kwargs.get("taxonomy"))
        if baseline is None:
            logger.warning("Loaded a hybrid program without a baseline: pass candidates= to every call.")
        return cls(baseline=baseline, k_candidates=int(manifest.get("k_candidates", 5)),
                   answer_set=manifest.get("answer_set", "titles"),
                   **cls._manifest_options(manifest), **kwargs)
