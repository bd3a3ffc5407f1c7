"""LM-free supervised baselines: frequency, first-order Markov, and a return-aware Markov chain.

Each baseline is a ``dspy.Module`` that is fitted on labeled training examples (``.fit(trainset)``) and
whose ``forward`` returns the same ``dspy.Prediction`` fields as the LM programs (``occupation``,
``onet_code``, ``ranked``, ``matched``), so ``dspy.Evaluate`` and :mod:`metrics.accuracy` score both alike.

**Inputs.** The baselines work on *state keys* (``example.states``: the past jobs' keys such as
``occ1980:243`` for NLSY79 or an O*NET code, see :attr:`careers.history.Job.state`), not on the rendered
history text. ``forward(history, states=None, career=None)`` uses ``states`` when given, else derives
them from the structured ``career`` dict; with neither it raises. Examples from
:meth:`careers.history.CareerHistory.to_example` mark only ``history`` as input, so pass the baselines
``examples_with_states(examples)`` (the same examples with ``states`` marked as an input as well) when
running ``dspy.Evaluate`` — the text is never parsed back into states.

**Outputs.** A state maps to one O*NET prediction through its *representative* code, learned from the
training golds (the most frequent ``onet_code`` of a ``gold_state``); for NLSY79 that is the first
candidate of the 1980 Census category, so predicting the right state is a set-gold hit. States seen only
in histories take their representative from the career's job codes; a state that looks like an O*NET code
represents itself. Titles come from the taxonomy when one is given, else from the training golds.

Models are saved as JSON (``save``/``load``), never pickled.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dspy

from careers.onet import CODE_RE, OnetTaxonomy

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def examples_with_states(examples: Iterable[dspy.Example]) -> list[dspy.Example]:
    """The examples with ``states`` marked as an input beside ``history`` (what the baselines read).

    Args:
        examples: Examples from :meth:`careers.history.CareerHistory.to_example` (they carry ``states``).

    Raises:
        ValueError: When an example has no ``states`` field.
    """
    out = []
    for i, ex in enumerate(examples):
        if "states" not in ex:
            raise ValueError(f"example {i} (person {ex.get('person_id')}) has no 'states' field.")
        out.append(ex.with_inputs("history", "states"))
    return out


def job_state(job: Mapping[str, Any]) -> str | None:
    """The state key of a job dict of ``example.career['jobs']`` (as :attr:`careers.history.Job.state`)."""
    key = job.get("source_code") or job.get("onet_code") or (job.get("title") or "").lower()
    return key or None


def _job_code(job: Mapping[str, Any]) -> str | None:
    candidates = job.get("onet_candidates") or ()
    return job.get("onet_code") or (candidates[0] if candidates else None)


def states_from_career(career: Mapping[str, Any] | None) -> list[str]:
    """The past job states of a structured career dict (``example.career``)."""
    jobs = (career or {}).get("jobs") or ()
    return [s for s in (job_state(j) for j in jobs) if s]


class _StateBaseline(dspy.Module):
    """Shared machinery: state → O*NET representative, ranking, prediction, JSON persistence.

    Args:
        k: Length of the ranked list returned in ``pred.ranked``.
        alpha: Add-alpha pseudo-count for the smoothed distributions.
        taxonomy: Optional taxonomy for official titles of representative codes.
    """

    kind = "base"

    def __init__(self, k: int = 10, alpha: float = 0.1, taxonomy: OnetTaxonomy | None = None):
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}.")
        self.k = k
        self.alpha = float(alpha)
        self.taxonomy = taxonomy
        self.state_counts: dict[str, int] = {}
        self.representative: dict[str, str] = {}
        self.code_titles: dict[str, str] = {}
        self.exclude_current = False
        self.fitted = False
        self._freq: dict[str, float] | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, trainset: Sequence[dspy.Example]) -> _StateBaseline:
        """Fits the model on labeled examples (fields ``states``, ``gold_state``, ``onet_code``).

        Raises:
            ValueError: When no example has a gold state.
        """
        targets: Counter[str] = Counter()
        reps: dict[str, Counter[str]] = defaultdict(Counter)
        history_reps: dict[str, Counter[str]] = defaultdict(Counter)
        n_self = 0
        rows = []
        for ex in trainset:
            gold = ex.get("gold_state")
            if not gold:
                continue
            states = self._example_states(ex)
            rows.append((states, gold))
            targets[gold] += 1
            n_self += bool(states) and states[-1] == gold
            code = ex.get("onet_code") or next(iter(ex.get("gold_codes") or ()), None)
            if code:
                reps[gold][code] += 1
                if ex.get("occupation"):
                    self.code_titles.setdefault(code, ex.get("occupation"))
            for job in (ex.get("career") or {}).get("jobs") or ():
                state, jcode = job_state(job), _job_code(job)
                if state and jcode:
                    history_reps[state][jcode] += 1
        if not rows:
            raise ValueError("No training example has a gold_state: fit needs labeled examples from to_example().")
        self.state_counts = dict(targets)
        self._freq = None
        self.representative = {s: c.most_common(1)[0][0] for s, c in history_reps.items()}
        self.representative.update({s: c.most_common(1)[0][0] for s, c in reps.items()})
        # consecutive repeats are merged into spells: the next state then never equals the current one
        self.exclude_current = n_self == 0
        self._fit_rows(rows)
        self.fitted = True
        logger.info("%s fitted on %d examples: %d target states", type(self).__name__, len(rows), len(targets))
        return self

    def _fit_rows(self, rows: list[tuple[list[str], str]]) -> None:
        """Model-specific fitting on (past states, gold state) pairs."""

    @staticmethod
    def _example_states(ex: Any) -> list[str]:
        states = ex.get("states")
        return list(states) if states is not None else states_from_career(ex.get("career"))

    # ------------------------------------------------------------------ scoring
    def frequency_distribution(self) -> dict[str, float]:
        """P(state) over training target states, add-alpha smoothed (a fresh dict per call)."""
        if self._freq is None:
            total = sum(self.state_counts.values()) + self.alpha * len(self.state_counts)
            self._freq = {s: (c + self.alpha) / total for s, c in self.state_counts.items()}
        return dict(self._freq)

    def distribution(self, states: Sequence[str]) -> dict[str, float]:
        """P(next state | past states); subclasses refine the frequency distribution."""
        return self.frequency_distribution()

    def rank_states(self, states: Sequence[str]) -> list[tuple[str, float]]:
        """All candidate next states with probabilities, best first (ties broken by state key)."""
        dist = self.distribution(states)
        if self.exclude_current and states:
            dist.pop(states[-1], None)
        return sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))

    def code_of(self, state: str) -> str | None:
        """The representative O*NET code of a state, or None when unknown."""
        if state in self.representative:
            return self.representative[state]
        return state if CODE_RE.match(state) else None

    def title_of(self, code: str) -> str:
        """The official title of a code (taxonomy first, else the training golds, else the code)."""
        if self.taxonomy is not None and code in self.taxonomy.occupations:
            return self.taxonomy.title(code)
        return self.code_titles.get(code, code)

    # ------------------------------------------------------------------ prediction
    def _past_states(self, states: Sequence[str] | None, career: Mapping[str, Any] | None) -> list[str]:
        """The past job states of a call (from ``states``, else from ``career``), once the model is fitted."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(trainset) or load(path) first.")
        if states is None:
            if career is None:
                raise ValueError(
                    f"{type(self).__name__} needs the past job states: call it with states=example.states "
                    "(wrap examples with programs.baselines.examples_with_states for dspy.Evaluate)."
                )
            states = states_from_career(career)
        return [str(s) for s in states]

    def forward(self, history: str | None = None, states: Sequence[str] | None = None,
                career: Mapping[str, Any] | None = None, **kwargs: Any) -> dspy.Prediction:
        """Predicts the next occupation from the past job states.

        Args:
            history: The rendered history (unused; accepted for DSPy's calling convention).
            states: Past job state keys, oldest first (``example.states``).
            career: The structured career dict, used for the states when ``states`` is None.

        Returns:
            ``dspy.Prediction(occupation, onet_code, ranked=[(title, prob), ...], matched, state)``.

        Raises:
            RuntimeError: When called before :meth:`fit`/:meth:`load`.
            ValueError: When neither ``states`` nor ``career`` is given.
        """
        states = self._past_states(states, career)
        return self._prediction(self.rank_states(states))

    def _prediction(self, scored_states: Iterable[tuple[str, float]]) -> dspy.Prediction:
        """The top-``k`` distinct O*NET codes of states sorted best first, as the baselines' ``Prediction``."""
        ranked: list[tuple[str, float]] = []
        best_state = None
        seen: set[str] = set()
        for state, prob in scored_states:
            code = self.code_of(state)
            if code is None or code in seen:
                continue
            seen.add(code)
            best_state = best_state or state
            ranked.append((code, prob))
            if len(ranked) >= self.k:
                break
        if not ranked:
            return dspy.Prediction(occupation=None, onet_code=None, ranked=[], matched=False, state=None)
        code = ranked[0][0]
        return dspy.Prediction(
            occupation=self.title_of(code),
            onet_code=code,
            ranked=[(self.title_of(c), round(p, 6)) for c, p in ranked],
            matched=True,
            state=best_state,
        )

    # ------------------------------------------------------------------ persistence
    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha}

    def _model_state(self) -> dict[str, Any]:
        return {}

    def _load_model_state(self, data: dict[str, Any]) -> None:
        pass

    def save(self, path: str | os.PathLike, **_: Any) -> Path:
        """Writes the fitted model as JSON.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "params": self._params(),
            "state_counts": self.state_counts,
            "representative": self.representative,
            "code_titles": self.code_titles,
            "exclude_current": self.exclude_current,
            "model": self._model_state(),
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def load(self, path: str | os.PathLike, **_: Any) -> _StateBaseline:
        """Restores a model written by :meth:`save` into this instance.

        Raises:
            ValueError: When the file holds another kind of baseline or format version.
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("kind") != self.kind:
            raise ValueError(f"{path} holds a {data.get('kind')!r} baseline, not {self.kind!r}.")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format version {data.get('format_version')}, expected {FORMAT_VERSION}.")
        for name, value in data["params"].items():
            setattr(self, name, value)
        self.state_counts = {str(k): int(v) for k, v in data["state_counts"].items()}
        self.representative = dict(data["representative"])
        self.code_titles = dict(data["code_titles"])
        self.exclude_current = bool(data["exclude_current"])
        self._load_model_state(data["model"])
        self._freq = None
        self.fitted = True
        return self


class FrequencyBaseline(_StateBaseline):
    """Predicts the most frequent next states of the training set, whatever the history."""

    kind = "frequency"


class MarkovBaseline(_StateBaseline):
    """First-order Markov chain P(next | last state), smoothed toward the frequency distribution.

    ``P(s | l) = (c(l, s) + alpha * |V| * P_freq(s)) / (c(l) + alpha * |V|)`` — add-alpha smoothing with the
    frequency distribution as the base (plain add-alpha when that is uniform); a last state unseen in
    training (or an empty history) backs off to ``P_freq``.
    """

    kind = "markov"

    def __init__(self, k: int = 10, alpha: float = 0.1, taxonomy: OnetTaxonomy | None = None):
        super().__init__(k=k, alpha=alpha, taxonomy=taxonomy)
        self.transitions: dict[str, dict[str, int]] = {}

    def _fit_rows(self, rows: list[tuple[list[str], str]]) -> None:
        trans: dict[str, Counter[str]] = defaultdict(Counter)
        for states, gold in rows:
            if states:
                trans[states[-1]][gold] += 1
        self.transitions = {s: dict(c) for s, c in trans.items()}

    def markov_distribution(self, states: Sequence[str]) -> dict[str, float]:
        """P(next | last state) over the training target states."""
        base = self.frequency_distribution()
        row = self.transitions.get(states[-1]) if states else None
        if not row:
            return base
        prior = self.alpha * len(base)
        total = sum(row.values()) + prior
        return {s: (row.get(s, 0) + prior * p) / total for s, p in base.items()}

    def distribution(self, states: Sequence[str]) -> dict[str, float]:
        return self.markov_distribution(states)

    def _model_state(self) -> dict[str, Any]:
        return {"transitions": self.transitions}

    def _load_model_state(self, data: dict[str, Any]) -> None:
        self.transitions = {s: {t: int(c) for t, c in row.items()} for s, row in data["transitions"].items()}


class ReturnAwareMarkov(MarkovBaseline):
    """Markov chain mixed with a move back to an earlier occupation of the same person.

    ``P(s) = (1 - lam) * P_markov(s | last) + lam * U_earlier(s)`` where ``U_earlier`` is uniform over the
    person's earlier distinct states (other than the current one); with no earlier state ``P = P_markov``.
    ``lam`` is the training rate of returns: the share of training examples with an earlier state whose
    gold state is one of them (unless given explicitly).

    Args:
        lam: A fixed mixture weight in [0, 1]; None estimates it at fit time.
    """

    kind = "return_markov"

    def __init__(self, k: int = 10, alpha: float = 0.1, taxonomy: OnetTaxonomy | None = None,
                 lam: float | None = None):
        super().__init__(k=k, alpha=alpha, taxonomy=taxonomy)
        if lam is not None and not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}.")
        self.fixed_lam = lam
        self.lam = lam if lam is not None else 0.0

    @staticmethod
    def earlier_states(states: Sequence[str]) -> list[str]:
        """The distinct earlier states a person could return to (excluding the current state)."""
        current = states[-1] if states else None
        return [s for s in dict.fromkeys(states[:-1]) if s != current]

    def _fit_rows(self, rows: list[tuple[list[str], str]]) -> None:
        super()._fit_rows(rows)
        if self.fixed_lam is not None:
            self.lam = self.fixed_lam
            return
        eligible = [(self.earlier_states(states), gold) for states, gold in rows]
        eligible = [(earlier, gold) for earlier, gold in eligible if earlier]
        returns = sum(gold in earlier for earlier, gold in eligible)
        self.lam = returns / len(eligible) if eligible else 0.0
        logger.info("Return rate on train: %d / %d = %.3f", returns, len(eligible), self.lam)

    def distribution(self, states: Sequence[str]) -> dict[str, float]:
        dist = self.markov_distribution(states)
        earlier = self.earlier_states(states)
        if not earlier or self.lam <= 0.0 or math.isclose(self.lam, 0.0):
            return dist
        out = {s: (1.0 - self.lam) * p for s, p in dist.items()}
        share = self.lam / len(earlier)
        for s in earlier:
            out[s] = out.get(s, 0.0) + share
        return out

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "fixed_lam": self.fixed_lam, "lam": self.lam}


BASELINES: dict[str, type[_StateBaseline]] = {
    cls.kind: cls for cls in (FrequencyBaseline, MarkovBaseline, ReturnAwareMarkov)
}
