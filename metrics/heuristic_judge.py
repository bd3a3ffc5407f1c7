"""An LM-free judge of reasons (``judge_lm: heuristic``): factuality, coherence and utility on 1-5 scales.

:class:`HeuristicJudge` returns the same ``dspy.Prediction`` as :class:`metrics.judge.ReasonJudge` (the three scores,
``justifications``, ``failures``, ``oracle_score``, ``passed``), so oracle selection, DPO pairs and the judge metric use
it unchanged. The rules:

* **factuality** -- the share ``f`` of checkable facts that hold: the years, degrees, titles and employers of
  :func:`metrics.grounding.grounding_check`, plus every population statistic ("of N recorded moves from X, P% went next
  to Y") checked against the training split's :class:`careers.transitions.TransitionStats` (N exactly, P within 1 point).
  5 when ``f = 1``, 4 for ``f >= 0.8``, 3 for ``f >= 0.6`` (and when nothing is checkable), 2 for ``f >= 0.3``, else 1.
* **coherence** -- 5 minus one point per problem: a year span that runs backwards, contradictory statements (a stated
  rise and fall of the job zone, "never changed" beside stated changes, two different counts of jobs or changes), a
  repeated sentence or a word repeated three times in a row; a cut-off ending (no final punctuation, or a dangling last
  word) costs two. With ``minority_penalty`` (off by default), a reason that puts forward a move whose stated share is
  under half of the commonest move's from the same state (a minority move called the next step) loses that many
  points. Floor 1.
* **utility** -- the next occupations the reason implies (:func:`implied_occupations`: O*NET titles, or training-split
  state titles, named in forward-looking sentences) against the gold: 5 when they contain the gold (4 when more than
  three are implied), 3 when one is an O*NET related occupation of the gold, 2 when one shares its SOC minor group,
  else 1 (also when nothing is implied). With a local ``predictor_lm``, the gain in the predictor's log-likelihood of
  the gold with the reason over without it (:func:`metrics.grounding.likelihood_utility`; the reason-free value is
  computed once per history) moves the score one point up (gain >= ``gain_step`` nats) or down (gain <=
  ``-gain_step``), within 1-5, for at most ``max_likelihood_calls`` reasons per judge.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dspy

from careers.onet import CODE_RE, OnetTaxonomy, canonical
from careers.transitions import TransitionStats
from metrics.grounding import SPAN_RE, grounding_check, likelihood_utility
from metrics.judge import DEFAULT_THRESHOLDS, DEFAULT_WEIGHTS, _check_weights, oracle_score, passes
from signatures import PredictDirect

logger = logging.getLogger(__name__)

STAT_RE = re.compile(r"\b[Oo]f ([\d,]+) recorded moves from (.+?), (\d+(?:\.\d+)?)% went next to (.+?)(?=\.(?:\s|$)|;|$)")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
FORWARD_CUES = ("next", "likely", "would", "could", "may ", "might", "point", "toward", "expect", "fit", "plausible",
                "option", "step", "return to", "move to", "move there", "climb", "pivot", "staying", "stay ")
REPEAT_CUES = ("stay", "remain", "return", "back to", "again", "same line")
_DANGLING = {"and", "or", "the", "a", "an", "of", "to", "as", "with", "for", "in", "at", "from", "by", "is", "was"}
_MAX_TITLE_WORDS = 14
_JOB_LINE = re.compile(r"^\d+\.\s")


def sentences(text: str) -> list[str]:
    """The sentences of a reason (split after ``.``, ``!`` or ``?`` before a capital or digit)."""
    return [s.strip() for s in _SENTENCE_RE.split(text or "") if s.strip()]


class TitleIndex:
    """Canonical titles (official O*NET titles, and statistics state titles) -> O*NET codes."""

    def __init__(self, taxonomy: OnetTaxonomy, stats: TransitionStats | None):
        self.index: dict[str, tuple[str, ...]] = {}
        if stats is not None:
            for state, title in stats.titles.items():
                codes = stats.state_codes(state)
                if codes:
                    key = canonical(title)
                    self.index[key] = tuple(dict.fromkeys(self.index.get(key, ()) + tuple(codes)))
        for occ in taxonomy.occupations.values():
            self.index[canonical(occ.title)] = (occ.code,)

    def find(self, text: str) -> list[tuple[str, tuple[str, ...]]]:
        """Longest non-overlapping title matches in ``text``, left to right: ``(canonical title, codes)``."""
        words = canonical(text).split()
        out, i = [], 0
        while i < len(words):
            for n in range(min(_MAX_TITLE_WORDS, len(words) - i), 0, -1):
                key = " ".join(words[i:i + n])
                if key in self.index:
                    out.append((key, self.index[key]))
                    i += n
                    break
            else:
                i += 1
        return out


def implied_occupations(reason: str, history: str, index: TitleIndex) -> list[str]:
    """The O*NET codes a reason points to as next occupations (rule in the module doc), in order of mention.

    A title named in a forward-looking sentence counts; the title of the current (last) job counts only when the
    sentence speaks of staying or returning.
    """
    jobs = [line for line in (history or "").splitlines() if _JOB_LINE.match(line.strip())]
    hist = f" {canonical(jobs[-1] if jobs else history)} "
    out: dict[str, None] = {}
    for sentence in sentences(reason):
        low = sentence.lower()
        if not any(cue in low for cue in FORWARD_CUES):
            continue
        repeat = any(cue in low for cue in REPEAT_CUES)
        # statistics sentences name the current job as their population ("moves from X"): not an implication
        text = STAT_RE.sub(lambda m: f"went next to {m.group(4)}", sentence)
        for key, codes in index.find(text):
            if f" {key} " in hist and not repeat:
                continue
            for code in codes:
                out.setdefault(code, None)
    return list(out)


class HeuristicJudge(dspy.Module):
    """LM-free reason judge (rules in the module doc); same verdicts as :class:`metrics.judge.ReasonJudge`.

    Args:
        taxonomy: The O*NET taxonomy (titles, related occupations, SOC groups).
        stats: Transition statistics of the training split, for checking stated population statistics (None: such
            statements count as unverifiable, i.e. not traceable).
        weights: Oracle-score weights.
        thresholds: Per-criterion pass thresholds.
        tolerance: Allowed difference in percentage points of a stated share.
        predictor_lm: Optional local predictor LM for the likelihood gain (module doc); None keeps utility LM-free.
        gain_step: Log-likelihood gain (nats) worth one utility point.
        max_likelihood_calls: Bound on the reasons scored with the predictor (the rest stay LM-free).
        minority_penalty: Coherence points taken off a reason that puts forward a minority move (module doc; 0: off).
    """

    accepts_gold_codes = True

    def __init__(self, taxonomy: OnetTaxonomy, stats: TransitionStats | None = None, *,
                 weights: Mapping[str, float] | None = None, thresholds: Mapping[str, int] | None = None,
                 tolerance: float = 1.0, predictor_lm: Any = None, gain_step: float = 1.0,
                 max_likelihood_calls: int = 10_000, minority_penalty: int = 0):
        super().__init__()
        if not 0 <= int(minority_penalty) <= 4:
            raise ValueError(f"minority_penalty must be an integer in [0, 4] (coherence points), got {minority_penalty!r}")
        self.minority_penalty = int(minority_penalty)
        self.predictor_lm = predictor_lm
        self.gain_step = float(gain_step)
        self.max_likelihood_calls = int(max_likelihood_calls)
        self._baseline: dict[tuple[str, str], float | None] = {}
        self._calls = 0
        self._lock = threading.Lock()
        self.taxonomy = taxonomy
        self.stats = stats
        self.weights = _check_weights(weights if weights is not None else DEFAULT_WEIGHTS)
        passes({}, thresholds)
        self.thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        self.tolerance = float(tolerance)
        self.index = TitleIndex(taxonomy, stats)

    def __deepcopy__(self, memo):
        return self  # stateless apart from shared read-only lookups

    # ------------------------------------------------------------------ criteria
    def _states(self, title: str) -> tuple[str, ...]:
        if self.stats is None:
            return ()
        states = self.stats.states_for_title(title)
        code = self.taxonomy.code_for_title(title)
        if code and code in self.stats.titles and code not in states:
            states = (*states, code)
        return states

    def check_statistics(self, reason: str) -> tuple[int, list[str]]:
        """``(statements, wrong ones)`` among the population statistics a reason states."""
        wrong, n = [], 0
        for m in STAT_RE.finditer(reason or ""):
            n += 1
            total, pct = int(m.group(1).replace(",", "")), float(m.group(3))
            # a title shared by several states is true when it holds for one of them
            ok = any(self.stats.total(src) == total and abs(100 * self.stats.share(src, dst) - pct) <= self.tolerance
                     for src in self._states(m.group(2)) for dst in self._states(m.group(4)))
            if not ok:
                wrong.append(m.group(0))
        return n, wrong

    def minority_moves(self, reason: str) -> list[str]:
        """The stated statistics whose share is under half of the commonest move's (staying excluded) from the same
        state: a statistic's "went next to Y" puts Y forward (:func:`implied_occupations` counts it so too)."""
        if self.stats is None:
            return []
        out = []
        for m in STAT_RE.finditer(reason or ""):
            tops = [self.stats.top_next(src, 1, exclude=[src]) for src in self._states(m.group(2))]
            top = max((t[0][2] for t in tops if t), default=None)
            if top is not None and float(m.group(3)) < 50 * top:
                out.append(m.group(0))
        return out

    def factuality(self, history: str, reason: str) -> tuple[int, str]:
        """The factuality score and its justification."""
        ground = grounding_check(reason, history)
        n_stats, wrong_stats = self.check_statistics(reason)
        facts = len(ground.mentions) + n_stats
        bad = ground.ungrounded_texts + wrong_stats
        if facts == 0:
            return 3, "no checkable fact"
        f = 1.0 - len(bad) / facts
        score = 5 if f >= 0.999 else 4 if f >= 0.8 else 3 if f >= 0.6 else 2 if f >= 0.3 else 1
        why = f"{facts - len(bad)}/{facts} facts traceable" + (f"; not traceable: {bad}" if bad else "")
        return score, why

    def coherence(self, reason: str) -> tuple[int, str]:
        """The coherence score and the problems found."""
        problems = []
        text = (reason or "").strip()
        for a, b in SPAN_RE.findall(text):
            if b.lower() != "present" and int(b) < int(a):
                problems.append(f"span {a}-{b} runs backwards")
        low = text.lower()
        rises = re.findall(r"job zone (?:rose|climbed|went up) from (\d) to (\d)", low)
        falls = re.findall(r"job zone (?:fell|dropped|went down) from (\d) to (\d)", low)
        if (rises and falls) or any(int(b) <= int(a) for a, b in rises) or any(int(b) >= int(a) for a, b in falls):
            problems.append("contradictory job-zone direction")
        changes = {int(x) for x in re.findall(r"\b(\d+) occupation changes?\b", low)}
        jobs = {int(x) for x in re.findall(r"\b(\d+) jobs\b", low)}
        if len(changes) > 1 or len(jobs) > 1:
            problems.append("two different counts")
        if re.search(r"\bnever (?:changed|switched|moved)\b|\balways (?:stayed|worked) in the same\b", low) and (
                any(c > 0 for c in changes) or re.search(r"\b(?:came back|returned|switched|moved from)\b", low)):
            problems.append("'never changed' contradicts stated changes")
        sents = [canonical(s) for s in sentences(text)]
        if len(set(sents)) < len(sents):
            problems.append("repeated sentence")
        if re.search(r"\b(\w+)(?:\W+\1\b){2,}", low):
            problems.append("word repeated three times")
        cut = not text or text[-1] not in ".!?" or (text.rstrip(".!?").split() or [""])[-1].lower() in _DANGLING
        score = 5 - len(problems) - (2 if cut else 0)
        if cut:
            problems.append("cut-off ending")
        if self.minority_penalty and (minority := self.minority_moves(text)):
            score -= self.minority_penalty
            problems.append(f"a minority move put forward: {minority[0]!r}")
        return max(1, score), "; ".join(problems) or "no problem found"

    def _gold(self, occupation: str | None, gold_codes: Sequence[str] | None) -> list[str]:
        codes = [c for c in (gold_codes or []) if isinstance(c, str) and CODE_RE.match(c)]
        if not codes and occupation:
            code = self.taxonomy.code_for_title(occupation) or self.taxonomy.normalize(occupation).code
            codes = [code] if code else []
        return codes

    def utility(self, history: str, reason: str, occupation: str | None,
                gold_codes: Sequence[str] | None = None) -> tuple[int, str, list[str]]:
        """The utility score, its justification and the implied O*NET codes."""
        implied = implied_occupations(reason, history, self.index)
        gold = self._gold(occupation, gold_codes)
        if not implied:
            return 1, "implies no next occupation", implied
        if not gold:
            return 1, "gold occupation unknown", implied
        if set(implied) & set(gold):
            return (5 if len(implied) <= 3 else 4), "implies the gold occupation", implied
        related = {r.code for g in gold for r in self.taxonomy.related(g)}
        related |= {c for c in implied if set(gold) & {r.code for r in self.taxonomy.related(c)}}
        if set(implied) & related:
            return 3, "implies a related occupation of the gold", implied
        minors = {self.taxonomy.soc_group(g, "minor") for g in gold}
        if any(self.taxonomy.soc_group(c, "minor") in minors for c in implied):
            return 2, "implies an occupation in the gold's SOC minor group", implied
        return 1, "implied occupations are unrelated to the gold", implied

    def likelihood_gain(self, history: str, reason: str, occupation: str | None) -> float | None:
        """``log p(gold | history, reason) - log p(gold | history)`` under ``predictor_lm``, or None (no LM, bound
        reached, or scoring unavailable)."""
        if self.predictor_lm is None or not occupation:
            return None
        with self._lock:
            if self._calls >= self.max_likelihood_calls:
                return None
            self._calls += 1

        key = (history, occupation)
        if key not in self._baseline:
            self._baseline[key] = likelihood_utility(self.predictor_lm, history, None, occupation,
                                                     signature=PredictDirect)
        with_reason = likelihood_utility(self.predictor_lm, history, reason, occupation)
        base = self._baseline[key]
        if with_reason is None or base is None or not math.isfinite(with_reason) or not math.isfinite(base):
            return None
        return with_reason - base

    # ------------------------------------------------------------------ DSPy
    def forward(self, history: str, reason: str, occupation: str | None = None,
                gold_codes: Sequence[str] | None = None) -> dspy.Prediction:
        """Judges one reason; ``gold_codes`` (a gold candidate set) refines the utility check when given."""
        history, reason = str(history or ""), str(reason or "")
        fact, fact_why = self.factuality(history, reason)
        coh, coh_why = self.coherence(reason)
        util, util_why, implied = self.utility(history, reason, occupation, gold_codes)
        gain = self.likelihood_gain(history, reason, occupation)
        if gain is not None:
            step = 1 if gain >= self.gain_step else -1 if gain <= -self.gain_step else 0
            util = min(5, max(1, util + step))
            util_why += f"; log-likelihood gain of the gold {gain:+.2f} nats"
        scores = {"factuality": fact, "coherence": coh, "utility": util}
        return dspy.Prediction(**scores, justifications={"factuality": fact_why, "coherence": coh_why,
                                                          "utility": util_why},
                               failures=[], implied=implied, oracle_score=oracle_score(scores, self.weights),
                               passed=passes(scores, self.thresholds))


def gold_supported(implied: Iterable[str], gold_codes: Iterable[str]) -> bool:
    """Whether the implied next occupations contain the gold."""
    return bool(set(implied) & set(gold_codes))
