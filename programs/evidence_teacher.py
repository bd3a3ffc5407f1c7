"""An LM-free teacher that writes candidate reasons from verifiable evidence.

:class:`EvidenceTeacher` stands where the teacher LM stands (``teacher_lm: evidence`` in compile configs,
``teacher=`` in Python). Fitted on the training split only (:meth:`EvidenceTeacher.fit`), it writes, for one
history, reasons built from facts that can be checked:

* the trajectory: titles and years as written in the history, tenure, number of jobs and of occupation changes,
  returns to an earlier occupation, staying within one SOC major group, the O*NET Job Zone direction;
* the person's education against the typical education (O*NET scale RL) of the current and candidate occupations;
* O*NET Related Occupations of the current job, with their tiers;
* transition statistics of the training split (:class:`careers.transitions.TransitionStats`; off with
  ``statistics=False``, since a student cannot read them in the history);
* with ``moves=True``, the kind of the last move (:mod:`careers.moves`: a climb, a pivot, a return...), the pattern
  that continues it first among the candidates, and the gold explained by the kind of move it would be.

Candidates differ in the pattern they put forward (``common`` move, ``return``, ``related`` pivot, ``climb``,
``credential``-driven move, ``stay``, ``pivot``) and so in the next occupations they imply; with the gold known,
the last candidate is the ``rationalization`` that explains the gold from the history. History titles and years are
copied verbatim; O*NET titles of implied occupations are written in lower case, so every capitalized phrase, year
and degree of a reason occurs in the history and passes :func:`metrics.grounding.grounding_check` by construction.

With ``rewrite_lm`` (``teacher_lm: evidence+<lm spec>``) an LM rewrites the evidence as prose; a rewrite that fails
the grounding check or drops an implied occupation is rejected and the evidence text is kept.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import dspy

from careers.education import RL_WORDS, education_category
from careers.history import CareerHistory
from careers.moves import last_move_sentence, move_kind, move_kinds
from careers.onet import CODE_RE, OnetTaxonomy, canonical
from careers.transitions import TransitionStats, job_codes, job_state
from metrics.grounding import grounding_check

logger = logging.getLogger(__name__)

PATTERNS = ("common", "return", "related", "climb", "credential", "stay", "pivot")
#: The patterns that continue each kind of move (:mod:`careers.moves`), the first applicable one is used.
CONTINUES = {"stay": ("stay",), "return": ("return",), "climb": ("climb",), "climb2": ("credential", "climb"),
             "pivot": ("pivot",)}
TIER_WORDS = {"Primary-Short": "closely related", "Primary-Long": "related", "Supplemental": "loosely related"}


class RewriteEvidence(dspy.Signature):
    """Rewrite the evidence about a person's career as two or three sentences of natural prose.

    Keep every title, year, number and occupation exactly as written; add no fact; keep lower-case occupation
    names in lower case."""

    history: str = dspy.InputField(desc="The person's career history.")
    evidence: str = dspy.InputField(desc="Verified facts and the next occupations they point to.")
    reason: str = dspy.OutputField(desc="The evidence as short natural prose (at most 80 words).")


def _span(job: Mapping[str, Any]) -> str:
    s, e = job.get("start_year"), job.get("end_year")
    if s is None and e is None:
        return ""
    if s is None or e is None or s == e:
        return str(s if s is not None else e)
    return f"{s}-{e}"


class EvidenceTeacher(dspy.Module):
    """Writes evidence-based candidate reasons (module doc); ``forward`` returns ``Prediction(reason, ...)``.

    Args:
        taxonomy: The O*NET taxonomy.
        stats: Transition statistics of the training split (None: reasons without population statistics).
        seed: Seed of the wording choices (combined with the person and the candidate index).
        rewrite_lm: Optional LM that rewrites the evidence as prose (grounding-checked).
        max_implied: Most occupations one reason implies.
        max_tokens: Length budget of a reason in tokens of ``tokenizer``; optional facts are left out beyond it.
        tokenizer: The student's tokenizer (``tokenizers.Tokenizer`` or a transformers tokenizer); None estimates
            one token per 3 characters (an over-estimate for the Gemma 3 tokenizer on these reasons).
        statistics: Whether reasons may cite the training split's transition statistics (facts a student cannot
            read in the history); without them ``stats`` only names states.
        moves: Whether reasons state the kind of the last move (:mod:`careers.moves`), put the pattern that
            continues it first, and explain the gold by the kind of move it would be.
    """

    def __init__(self, taxonomy: OnetTaxonomy, stats: TransitionStats | None = None, *, seed: int = 0,
                 rewrite_lm: Any = None, max_implied: int = 3, max_tokens: int = 80, tokenizer: Any = None,
                 statistics: bool = True, moves: bool = False):
        super().__init__()
        self.taxonomy = taxonomy
        self.stats = stats
        self.seed = int(seed)
        self.rewrite_lm = rewrite_lm
        self.max_implied = int(max_implied)
        self.max_tokens = int(max_tokens)
        self.tokenizer = tokenizer
        self.statistics, self.moves = bool(statistics), bool(moves)
        self.rewriter = dspy.Predict(RewriteEvidence) if rewrite_lm is not None else None

    @classmethod
    def fit(cls, trainset: Sequence[Any], taxonomy: OnetTaxonomy, **kwargs: Any) -> EvidenceTeacher:
        """A teacher whose transition statistics come from ``trainset`` (the training split only)."""
        return cls(taxonomy, TransitionStats.fit(trainset), **kwargs)

    def __deepcopy__(self, memo):
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            shared = key in ("taxonomy", "stats", "rewrite_lm", "tokenizer")
            new.__dict__[key] = value if shared else copy.deepcopy(value, memo)
        return new

    def length(self, text: str) -> int:
        """The length of ``text`` in student tokens (estimated without a tokenizer)."""
        if self.tokenizer is None:
            return int(len(text) / 3.0 + 0.999)
        ids = self.tokenizer.encode(text)
        ids = getattr(ids, "ids", ids)
        return len(ids)

    # ------------------------------------------------------------------ facts
    def _rep(self, job: Mapping[str, Any]) -> str | None:
        codes = [c for c in job_codes(job) if c in self.taxonomy.occupations]
        if codes:
            return codes[0]
        match = self.taxonomy.normalize(str(job.get("title") or ""))
        return match.code

    def _otitle(self, code: str) -> str:
        return self.taxonomy.title(code).lower()

    def _context(self, career: Mapping[str, Any]) -> dict[str, Any]:
        jobs = [j for j in career.get("jobs") or [] if j.get("title")]
        if not jobs:
            raise ValueError("EvidenceTeacher needs a history with at least one job")
        states = [job_state(j) for j in jobs]
        reps = [self._rep(j) for j in jobs]
        cur = jobs[-1]
        changes = sum(1 for a, b in zip(states, states[1:], strict=False) if a != b)
        returns = [i for i in range(2, len(states)) if states[i] in states[:i - 1] and states[i] != states[i - 1]]
        edu = list(career.get("education") or [])
        level = edu[-1].get("level") if edu else None
        return {"jobs": jobs, "states": states, "reps": reps, "cur": cur, "cur_state": states[-1],
                "cur_code": reps[-1], "changes": changes, "returns": returns, "level": level,
                "edu_cat": education_category(level), "kinds": move_kinds(self.taxonomy, reps)}

    def _continuing(self, ctx: dict, names: list[str]) -> list[str]:
        """``names`` with the pattern that continues the last move's kind first (with ``moves``)."""
        if not self.moves or not ctx["kinds"]:
            return names
        first = next((p for p in CONTINUES.get(ctx["kinds"][-1], ()) if p in names), None)
        return names if first is None else [first] + [p for p in names if p != first]

    def _trajectory(self, ctx: dict, rng: random.Random) -> tuple[list[str], list[str]]:
        """Main trajectory sentences (alternative wordings) and optional extra facts (return, zone, SOC group)."""
        jobs, cur = ctx["jobs"], ctx["cur"]
        title, span = cur["title"], _span(cur)
        n = len(jobs)
        when = f" ({span})" if span else " at present"
        if n == 1:
            options = [f"The history shows one job, as {title}{when}.",
                       f"So far this person has held one job, {title}{when}."]
        else:
            first = _span(jobs[0]).split("-")[0]
            since = f" since {first}" if first else ""
            changes = ctx["changes"]
            moves = "occupation change" if changes == 1 else "occupation changes"
            options = [f"The history lists {n} jobs{since} with {changes} {moves}, the latest as {title}{when}.",
                       f"After {n} jobs and {changes} {moves}{since}, the current job is {title}{when}.",
                       f"This person has held {n} jobs{since}; the most recent is {title}{when}."]
        extras = []
        if ctx["returns"]:
            back = jobs[ctx["returns"][-1]]
            year = _span(back).split("-")[0]
            extras.append(f"They came back to {back['title']}{' in ' + year if year else ''} after other work.")
        codes = [c for c in ctx["reps"] if c]
        zones = [self.taxonomy.job_zone(c) for c in codes]
        if len(codes) >= 2 and zones[0] is not None and zones[-1] is not None:
            a, b = zones[0], zones[-1]
            extras.append(f"The job zone {'rose' if b > a else 'fell'} from {a} to {b}." if a != b
                          else f"Every step stayed near job zone {b}.")
        majors = {self.taxonomy.soc_group(c, "major") for c in codes}
        if len(codes) >= 3 and len(majors) == 1:
            group = self.taxonomy.group_titles.get(next(iter(majors)), "")
            if group:
                extras.append(f"All jobs fall within {group.lower()}.")
        rng.shuffle(options)
        return options, extras

    def _education(self, ctx: dict, code: str | None) -> tuple[str, int | None]:
        """A sentence on the person's education against the typical education of ``code``; and the comparison."""
        cat, level = ctx["edu_cat"], ctx["level"]
        typical = self.taxonomy.typical_education(code) if code else None
        if cat is None or typical is None or not level:
            return "", None
        diff = (cat > typical) - (cat < typical)
        rel = {1: "more schooling than", 0: "about the schooling", -1: "less schooling than"}[diff]
        what = "typical of" if diff == 0 else "is typical of"
        return (f"Their education ({level.lower()}) is {rel} {what} {self._otitle(code)}, where most workers have "
                f"{RL_WORDS[typical]}."), diff

    # ------------------------------------------------------------------ patterns
    def _stat_sentence(self, ctx: dict, next_state: str, rng: random.Random) -> str:
        stats = self.stats
        total, share = stats.total(ctx["cur_state"]), stats.share(ctx["cur_state"], next_state)
        cur_title, nxt = self.state_title(ctx["cur_state"]), self.state_title(next_state).rstrip(".")
        pct = round(100 * share)
        return rng.choice([f"Of {total:,} recorded moves from {cur_title}, {pct}% went next to {nxt}.",
                           f"In the training records, of {total:,} recorded moves from {cur_title}, {pct}% went "
                           f"next to {nxt}."])

    def state_title(self, state: str) -> str:
        """The lower-case title of a statistics state: the O*NET title of a code, else the training title."""
        if CODE_RE.match(state) and state in self.taxonomy.occupations:
            return self._otitle(state)
        return (self.stats.title(state) if self.stats else state).lower()

    def _state_code(self, state: str) -> str | None:
        codes = self.stats.state_codes(state) if self.stats else ()
        return codes[0] if codes else None

    def _pattern(self, name: str, ctx: dict, rng: random.Random) -> tuple[str, list[str]] | None:
        """``(sentence, implied codes)`` for one pattern, or None when it does not apply."""
        cur_code, jobs = ctx["cur_code"], ctx["jobs"]
        related = self.taxonomy.related(cur_code) if cur_code else []
        zone = self.taxonomy.job_zone(cur_code) if cur_code else None
        k = self.max_implied
        if name == "common":
            if not self.statistics or self.stats is None or not self.stats.total(ctx["cur_state"]):
                return None
            top = self.stats.top_next(ctx["cur_state"], 1, exclude=[ctx["cur_state"]])
            if not top or not self._state_code(top[0][0]):
                return None
            code = self._state_code(top[0][0])
            return (self._stat_sentence(ctx, top[0][0], rng) + "\n" + rng.choice(
                [f"The common next step is work as {self._otitle(code)}.",
                 f"That makes {self._otitle(code)} the likely next move."]), [code])
        if name == "return":
            earlier = [i for i in range(len(jobs) - 1) if ctx["states"][i] != ctx["cur_state"] and ctx["reps"][i]]
            if not earlier:
                return None
            i = earlier[-1]
            code = ctx["reps"][i]
            when = _span(jobs[i])
            return (f"Having worked as {jobs[i]['title']}{' in ' + when if when else ''}, a return to "
                    f"{self._otitle(code)} is a plausible next step.", [code])
        if name == "related":
            if not related:
                return None
            top = related[:k]
            tier = TIER_WORDS.get(top[0].tier, "related")
            names = " or ".join(self._otitle(r.code) for r in top[:2])
            return (rng.choice([f"O*NET lists {names} as {tier} to the current work, so a move there would fit.",
                                f"The next step could be {names}, which O*NET rates {tier} to this work."]),
                    [r.code for r in top[:2]])
        if name in ("climb", "credential", "pivot"):
            if not related or cur_code is None:
                return None
            minor = self.taxonomy.soc_group(cur_code, "minor")
            if name == "climb":
                picks = [r for r in related if zone is not None and (self.taxonomy.job_zone(r.code) or 0) > zone]
                picks.sort(key=lambda r: (self.taxonomy.soc_group(r.code, "minor") != minor, r.index))
                if not picks:
                    return None
                code = picks[0].code
                return (f"A climb to job zone {self.taxonomy.job_zone(code)}, for example as {self._otitle(code)}, "
                        "would continue upward.", [code])
            if name == "credential":
                cat = ctx["edu_cat"]
                typical = self.taxonomy.typical_education(cur_code)
                if cat is None or typical is None or cat <= typical:
                    return None
                picks = [r for r in related if (self.taxonomy.typical_education(r.code) or 0) > typical
                         and (self.taxonomy.typical_education(r.code) or 99) <= cat]
                if not picks:
                    return None
                code = picks[0].code
                sentence, _ = self._education(ctx, cur_code)
                need = RL_WORDS[self.taxonomy.typical_education(code)]
                return (sentence + f" Work as {self._otitle(code)}, where most have {need}, would use it.", [code])
            picks = [r for r in related if self.taxonomy.soc_group(r.code, "minor") != minor]
            if not picks:
                return None
            code = picks[0].code
            return (f"A pivot to a different field, such as {self._otitle(code)}, is the next option.", [code])
        if name == "stay":
            if cur_code is None:
                return None
            span = _span(ctx["cur"])
            years = ""
            if "-" in span:
                a, b = span.split("-")
                years = f"{int(b) - int(a) + 1} years in this line of work, "
            steady = f"staying as {self._otitle(cur_code)} is the steady next step."
            return (f"With {years}{steady}" if years else steady[0].upper() + steady[1:], [cur_code])
        raise ValueError(f"unknown pattern {name!r}; choose one of {PATTERNS}")

    def _rationalization(self, ctx: dict, gold_code: str, gold_codes: Sequence[str],
                         rng: random.Random) -> tuple[str, list[str]]:
        """The evidence that explains the gold next occupation from the history."""
        gold_set = set(gold_codes) | {gold_code}
        jobs, title = ctx["jobs"], self._otitle(gold_code)
        earlier = [i for i in range(len(jobs) - 1) if set(job_codes(jobs[i]) or [ctx["reps"][i]]) & gold_set]
        if earlier and ctx["states"][earlier[-1]] != ctx["cur_state"]:
            i = earlier[-1]
            when = _span(jobs[i])
            return (f"Having worked as {jobs[i]['title']}{' in ' + when if when else ''}, a return to {title} "
                    "is the likely next step.", [gold_code])
        cur_code = ctx["cur_code"]
        if cur_code in gold_set or set(job_codes(ctx["cur"])) & gold_set:
            return f"Staying as {title} is the most likely next step.", [gold_code]
        kind = move_kind(self.taxonomy, [*ctx["reps"], gold_code], len(ctx["reps"])) if self.moves else None
        last = ctx["kinds"][-1] if ctx["kinds"] else None
        if kind in ("climb", "climb2"):
            further = "further " if last in ("climb", "climb2") else ""
            return (f"A {further}climb to {title}, in job zone {self.taxonomy.job_zone(gold_code)}, is the likely "
                    "next step.", [gold_code])
        if kind == "pivot":
            return (f"A {'further ' if last == 'pivot' else ''}pivot to a different field, as {title}, is the likely "
                    "next step.", [gold_code])
        if self.statistics and self.stats is not None and self.stats.total(ctx["cur_state"]):
            for state, _, _ in self.stats.top_next(ctx["cur_state"], 50):
                if set(self.stats.state_codes(state)) & gold_set:
                    return (self._stat_sentence(ctx, state, rng) + f"\nThat points to {title} next.", [gold_code])
        for rel in self.taxonomy.related(cur_code) if cur_code else []:
            if rel.code in gold_set:
                tier = TIER_WORDS.get(rel.tier, "related")
                return f"O*NET rates {title} {tier} to the current work, so it is the likely next move.", [gold_code]
        zone, gzone = (self.taxonomy.job_zone(cur_code) if cur_code else None), self.taxonomy.job_zone(gold_code)
        edu, _ = self._education(ctx, gold_code)
        if zone is not None and gzone is not None and gzone != zone:
            way = "up" if gzone > zone else "down"
            return ((edu + " " if edu else "") + f"A move {way} from job zone {zone} to {gzone}, as {title}, "
                    "fits this path.", [gold_code])
        return (edu + " " if edu else "") + f"A move to {title} is the likely next step.", [gold_code]

    # ------------------------------------------------------------------ API
    def _rng(self, person: str, candidate: int) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}:{person}:{candidate}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def applicable_patterns(self, career: Mapping[str, Any] | CareerHistory) -> list[str]:
        """The patterns that apply to a history, in the teacher's order."""
        ctx = self._context(self._career(career))
        return self._continuing(ctx, [p for p in PATTERNS if self._pattern(p, ctx, random.Random(0)) is not None])

    @staticmethod
    def _career(value: Any) -> dict:
        if isinstance(value, CareerHistory):
            return value.model_dump()
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError(f"career must be a CareerHistory or its dict (example.career), got {type(value).__name__}")

    def forward(self, history: Any = None, career: Any = None, *, occupation: str | None = None,
                onet_code: str | None = None, gold_codes: Sequence[str] | None = None, candidate: int = 0,
                n: int = 4, rationalize: bool = False, pattern: str | None = None) -> dspy.Prediction:
        """Writes candidate ``candidate`` of ``n`` for one history.

        Args:
            history: The rendered history (the LM teacher's input; used by the rewrite LM).
            career: The structured history (``example.career`` or a :class:`CareerHistory`); a CareerHistory or
                dict given as ``history`` also works.
            occupation, onet_code, gold_codes: The gold (oracle generation); needed when ``rationalize``.
            candidate: The candidate index (0-based): the pattern is the ``candidate``-th applicable one.
            n: Candidates per history; with ``rationalize`` the last (``n - 1``) is the rationalization.
            rationalize: Whether the last candidate explains the gold.
            pattern: Force one pattern (or ``"rationalization"``).

        Returns:
            ``dspy.Prediction(reason, pattern, implied, evidence, rewritten)``; ``implied`` lists O*NET codes.
        """
        if career is None and isinstance(history, (CareerHistory, Mapping)):
            career, history = history, None
        career = self._career(career)
        ctx = self._context(career)
        rng = self._rng(str(career.get("person_id", "")), candidate)
        gold = onet_code or (self.taxonomy.code_for_title(occupation) if occupation else None)
        gold = gold or (list(gold_codes)[0] if gold_codes else None)
        if pattern is None:
            if rationalize and gold and candidate == n - 1:
                pattern = "rationalization"
            else:
                names = self._continuing(ctx, [p for p in PATTERNS if self._pattern(p, ctx, random.Random(0)) is not None]
                                         ) or ["stay"]
                pattern = names[candidate % len(names)]
        if pattern == "rationalization":
            if not gold:
                raise ValueError("rationalization needs the gold occupation (occupation=, onet_code= or gold_codes=)")
            body, implied = self._rationalization(ctx, gold, gold_codes or [gold], rng)
        else:
            found = self._pattern(pattern, ctx, rng)
            if found is None:
                raise ValueError(f"pattern {pattern!r} does not apply to this history")
            body, implied = found
        mains, extras = self._trajectory(ctx, rng)
        if pattern != "credential":
            edu, _ = self._education(ctx, ctx["cur_code"])
            extras.append(edu)
        extras = [e for e in extras if e]
        rng.shuffle(extras)
        # a statistics sentence names its next occupation itself: the sentence after it may go when space is short
        bodies = [body.replace("\n", " "), body.split("\n")[0]] if "\n" in body else [body]
        if self.moves and (move := last_move_sentence([j["title"] for j in ctx["jobs"]], ctx["kinds"])):
            bodies = [f"{move} {b}" for b in bodies] + bodies  # the last move's kind goes first when it fits
            first = _span(ctx["jobs"][0]).split("-")[0]
            mains.append(f"The history lists {len(ctx['jobs'])} jobs{' since ' + first if first else ''}.")
        main = mains[0]
        span = _span(ctx["cur"])
        mains = mains + [f"The latest job is {ctx['cur']['title']} ({span})." if span
                         else f"{ctx['cur']['title']} is the latest job."]
        fitting = [(m, b) for b in bodies for m in mains if self.length(m + " " + b) <= self.max_tokens]
        if fitting:
            main, body = fitting[0]
        parts = [main]
        for extra in extras[:2]:
            if self.length(" ".join(parts + [extra, body])) <= self.max_tokens:
                parts.append(extra)
        parts.append(body)
        evidence = " ".join(p for p in parts if p)
        reason, rewritten = evidence, False
        if self.rewriter is not None and history is not None:
            reason, rewritten = self._rewrite(str(history), evidence, implied)
        return dspy.Prediction(reason=reason, pattern=pattern, implied=list(implied), evidence=evidence,
                               rewritten=rewritten)

    def _rewrite(self, history: str, evidence: str, implied: list[str]) -> tuple[str, bool]:
        try:
            with dspy.context(lm=self.rewrite_lm):
                text = str(self.rewriter(history=history, evidence=evidence).reason or "").strip()
        except Exception as exc:  # noqa: BLE001 - a failed rewrite keeps the evidence
            logger.warning("Evidence rewrite failed (%s); keeping the evidence text.", exc)
            return evidence, False
        keeps = all(canonical(self.taxonomy.title(c)) in canonical(text) for c in implied)
        if not text or not keeps or grounding_check(text, history).score < 1.0:
            logger.info("Evidence rewrite rejected (ungrounded or an implied occupation dropped).")
            return evidence, False
        return text, True

    def candidates(self, example: Any, n: int = 4, *, rationalize: bool = False) -> list[dspy.Prediction]:
        """``n`` candidate reasons for one example (``career``, and the gold for ``rationalize``)."""
        return [self(history=example.get("history"), career=example["career"], occupation=example.get("occupation"),
                     onet_code=example.get("onet_code"), gold_codes=example.get("gold_codes"), candidate=i, n=n,
                     rationalize=rationalize) for i in range(n)]
