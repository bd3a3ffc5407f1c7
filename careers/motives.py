"""A synthetic world where reasons matter: careers driven by a latent, persistent motive, with exact laws.

:class:`MotiveCareerGenerator` extends :class:`careers.synthetic.SyntheticCareerGenerator`. Each person has a hidden
**motive** per transition, one of :data:`MOTIVES`:

* ``stay`` -- the current occupation again;
* ``climb`` -- a higher Job Zone: related or same-SOC-minor-group occupations with a higher zone (same minor group
  weighted 3x, each weighted by 1 / zone step);
* ``pivot`` -- an O*NET related occupation outside the current SOC minor group (tier weights);
* ``return`` -- an earlier occupation of the history other than the current one (weight 2^-k for the k-th most
  recent distinct one);
* ``educate`` -- a move after more education: related or same-SOC-major-group occupations at least two Job Zones up.

The first motive is uniform; at each later transition it persists with probability ``1 - p_switch`` and otherwise
switches to one of the other motives uniformly (a hidden Markov chain). Given the motive ``m`` and the codes so far,
the next occupation follows ``q_m = (1 - eps) * specific_m + eps * base``, where ``base`` is the second-order chain of
the parent generator and ``specific_m`` the motive's law above (``base`` itself when the motive's set is empty).
So every law is exact and normalized, and the motive shows in the history only through the moves it caused.

Each example carries ``next_distribution`` (the law given the history: ``sum_m P(m | history) q_m``, the posterior
computed exactly by the forward algorithm), ``next_distribution_given_motive`` (``q_{m*}`` for the true motive),
``motive`` and ``motive_posterior``. Prompts are built from ``history`` only; the motive never enters them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import dspy
import numpy as np

from careers.history import CareerHistory
from careers.synthetic import SyntheticCareerGenerator, _codes_of

logger = logging.getLogger(__name__)

MOTIVES = ("stay", "climb", "pivot", "return", "educate")

#: Phrases by which a reason puts a motive forward (lower-case regular expressions; the teacher's and judges' wording).
MOTIVE_CUES: dict[str, re.Pattern[str]] = {
    "stay": re.compile(r"\bstay(?:ing|s)?\b|\bremain(?:ing|s)?\b|\bsteady next step"),
    "climb": re.compile(r"\bclimb|\bupward|\bhigher job zone|\bpromot|\badvanc"),
    "pivot": re.compile(r"\bpivot|\bdifferent field|\bnew field|\bchange of field|\bswitch(?:es|ing)? field"),
    "return": re.compile(r"\breturn(?:s|ing)? to\b|\bgo(?:es|ing)? back to\b|\bback to\b"),
    "educate": re.compile(r"\bwould use (?:it|this|that|the)\b|\b(?:more|further|new) (?:education|schooling|degree)"
                          r"|\bcredential"),
}


class MotiveCareerGenerator(SyntheticCareerGenerator):
    """Careers with a latent motive (module doc); the other arguments are those of the parent generator.

    Args:
        p_switch: Probability that the motive changes at a transition.
        eps: Weight of the base (second-order chain) law mixed into every motive's law.
    """

    def __init__(self, *args: Any, p_switch: float = 0.2, eps: float = 0.1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not 0 <= p_switch <= 1 or not 0 < eps <= 1:
            raise ValueError(f"need 0 <= p_switch <= 1 and 0 < eps <= 1; got {p_switch}, {eps}")
        self.p_switch, self.eps = float(p_switch), float(eps)
        k = len(MOTIVES)
        self.transition = np.full((k, k), self.p_switch / (k - 1))
        np.fill_diagonal(self.transition, 1.0 - self.p_switch)
        self.prior = np.full(k, 1.0 / k)
        self._specific: dict[tuple[str, str], dict[str, float]] = {}

    # ------------------------------------------------------------------ laws
    def _cur_law(self, motive: str, cur: str) -> dict[str, float]:
        key = (motive, cur)
        if key in self._specific:
            return self._specific[key]
        tax, states = self.taxonomy, self._moves
        zone = tax.job_zone(cur)
        weights: dict[str, float] = {}
        if motive == "stay":
            weights = {cur: 1.0}
        elif zone is not None and motive in ("climb", "educate"):
            minor, major = tax.soc_group(cur, "minor"), tax.soc_group(cur, "major")
            pool = {r.code for r in tax.related(cur) if r.code in states}
            pool |= {c for c in states if tax.soc_group(c, "minor" if motive == "climb" else "major")
                     == (minor if motive == "climb" else major)}
            for code in sorted(pool - {cur}):
                z = tax.job_zone(code)
                if z is None:
                    continue
                if motive == "climb" and z > zone:
                    weights[code] = (3.0 if tax.soc_group(code, "minor") == minor else 1.0) / (z - zone)
                elif motive == "educate" and z >= zone + 2:
                    weights[code] = 1.0
        elif motive == "pivot":
            minor = tax.soc_group(cur, "minor")
            for rel in tax.related(cur):
                if rel.code in states and rel.code != cur and tax.soc_group(rel.code, "minor") != minor:
                    weights[rel.code] = weights.get(rel.code, 0.0) + self.tier_weights.get(rel.tier, 1.0)
        total = sum(weights.values())
        law = {c: w / total for c, w in weights.items()} if total > 0 else {}
        self._specific[key] = law
        return law

    def motive_law(self, motive: str, codes: Sequence[str]) -> dict[str, float]:
        """The exact next-occupation law ``q_m`` given motive ``motive`` and the codes so far."""
        if motive not in MOTIVES:
            raise ValueError(f"unknown motive {motive!r}; choose one of {MOTIVES}")
        base = SyntheticCareerGenerator.next_distribution(self, list(codes))
        cur = codes[-1]
        if motive == "return":
            earlier = list(dict.fromkeys(c for c in reversed(codes[:-1]) if c != cur and c in self._moves))
            weights = {c: 0.5 ** k for k, c in enumerate(earlier)}
            total = sum(weights.values())
            specific = {c: w / total for c, w in weights.items()} if total else {}
        else:
            specific = self._cur_law(motive, cur)
        if not specific:
            return base
        law = {c: self.eps * p for c, p in base.items()}
        for c, p in specific.items():
            law[c] = law.get(c, 0.0) + (1.0 - self.eps) * p
        return law

    def motive_posterior(self, codes: Sequence[str]) -> np.ndarray:
        """``P(motive of the next transition | codes)``, exactly (forward algorithm over the observed moves)."""
        codes = list(codes)
        alpha = self.prior.copy()
        for t in range(1, len(codes)):
            like = np.array([self.motive_law(m, codes[:t]).get(codes[t], 0.0) for m in MOTIVES])
            alpha = alpha * like
            total = alpha.sum()
            if total <= 0:
                raise ValueError(f"the codes {codes} have probability 0 under the motive world")
            alpha = (alpha / total) @ self.transition
        return alpha

    def next_distribution(self, history: Any, motive: str | None = None) -> dict[str, float]:
        """The exact next-occupation law given the history (motive marginalized), or given ``motive`` too."""
        codes = _codes_of(history)
        if codes[-1] not in self._moves:
            raise ValueError(f"occupation {codes[-1]!r} is not in the generator's state space")
        if motive is not None:
            return self.motive_law(motive, codes)
        post = self.motive_posterior(codes)
        out: dict[str, float] = {}
        for m, w in zip(MOTIVES, post, strict=True):
            if w <= 0:
                continue
            for c, p in self.motive_law(m, codes).items():
                out[c] = out.get(c, 0.0) + float(w) * p
        return out

    # ------------------------------------------------------------------ sampling
    def sample_path(self, n_jobs: int, rng: np.random.Generator, first: str | None = None
                    ) -> tuple[list[str], list[str]]:
        """``(codes, motives)``: ``motives[t]`` drove the move from ``codes[t]`` to ``codes[t + 1]``.

        ``first`` fixes the first occupation (else uniform over the state space).
        """
        if first is not None and first not in self._moves:
            raise ValueError(f"occupation {first!r} is not in the generator's state space")
        codes = [first or self.states[int(rng.integers(len(self.states)))]]
        motives = [MOTIVES[int(rng.choice(len(MOTIVES), p=self.prior))]]
        while len(codes) < n_jobs:
            codes.append(self._draw(self.motive_law(motives[-1], codes), rng))
            row = self.transition[MOTIVES.index(motives[-1])]
            motives.append(MOTIVES[int(rng.choice(len(MOTIVES), p=row))])
        return codes, motives

    def sample_codes(self, n_jobs: int, rng: np.random.Generator, prefix: Sequence[str] | str | None = None
                     ) -> list[str]:
        """Samples ``n_jobs`` codes with their latent motives (``prefix`` is not supported in this world)."""
        if prefix:
            raise ValueError("MotiveCareerGenerator samples whole paths; prefix is not supported")
        codes, motives = self.sample_path(n_jobs, rng)
        self._last_motives = motives
        return codes

    def generate_person(self, index: int) -> CareerHistory:
        """The ``index``-th person; its motives are kept in :attr:`motives_of` for :meth:`examples`."""
        person = super().generate_person(index)
        self.motives_of = getattr(self, "motives_of", {})
        self.motives_of[person.person_id] = list(self._last_motives)
        return person

    def examples(self, history: CareerHistory, min_history_jobs: int = 1) -> list[dspy.Example]:
        """One example per transition, with both exact laws, the true motive and its posterior."""
        motives = getattr(self, "motives_of", {}).get(history.person_id)
        if motives is None:
            raise ValueError(f"person {history.person_id}: motives unknown; build persons with generate_person")
        out = []
        for i in range(max(1, min_history_jobs), len(history.jobs)):
            target = history.jobs[i]
            codes = [j.onet_code for j in history.jobs[:i]]
            ex = history.prefix(i).to_example(target, occupation=self.taxonomy.title(target.onet_code),
                                              gold_codes=[target.onet_code])
            post = self.motive_posterior(codes)
            ex["next_distribution"] = self.next_distribution(codes)
            ex["next_distribution_given_motive"] = self.motive_law(motives[i - 1], codes)
            ex["motive"] = motives[i - 1]
            ex["motive_posterior"] = {m: round(float(p), 6) for m, p in zip(MOTIVES, post, strict=True)}
            out.append(ex)
        return out


def motives_named(text: str | None) -> set[str]:
    """The motives a reason puts forward, by the phrases of :data:`MOTIVE_CUES` (empty for no text)."""
    low = (text or "").lower()
    return {m for m, cue in MOTIVE_CUES.items() if cue.search(low)}


def bayes_ceilings(examples: Iterable[Any]) -> dict[str, float]:
    """The two Bayes ceilings of exact-match accuracy over motive-world examples.

    Returns:
        ``history_only`` (mean max of ``next_distribution``), ``perfect_reason`` (mean max of
        ``next_distribution_given_motive``, the true motive) and ``n``.
    """
    hist, perfect, n = 0.0, 0.0, 0
    for ex in examples:
        hist += max(ex["next_distribution"].values())
        perfect += max(ex["next_distribution_given_motive"].values())
        n += 1
    if not n:
        raise ValueError("no examples")
    return {"history_only": hist / n, "perfect_reason": perfect / n, "n": n}
