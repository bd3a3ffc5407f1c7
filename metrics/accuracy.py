"""Accuracy metrics for next-occupation prediction: AccEM, AccRM, Acc@k, MRR and SOC-group accuracy.

Semantics (the paper's):

* **AccEM** — exact match of official O*NET titles. Titles are compared through their O*NET-SOC codes
  (official titles are unique, so this is the same as comparing the titles). A *set gold*
  (``example.gold_codes`` with several codes, e.g. NLSY79's 1980 Census category) is hit when the
  predicted code is in the set.
* **AccRM** — 1 for an exact hit; ``1/(k+1)`` when the prediction is the k-th entry (O*NET Related
  Occupations Index, 1-20) of the gold's related list, so k=1 scores 0.5 and k=20 scores 1/21; else 0.
  A gold that has no related list (mostly "All Other" codes) falls back to exact match. For a set gold the
  related lists of all candidates are pooled and the best (smallest) index counts.
* **Acc@k** and **MRR** — over ``pred.ranked`` (a list of ``(title, score)`` pairs, titles, or dicts with
  ``onet_code``/``title``; best first); without a ranking the list is ``[pred.occupation]``. MRR is the
  reciprocal rank of the first hit in the list (0 when absent).
* **SOC group accuracy** — the predicted code shares the SOC major/minor/broad group with the gold (with
  any gold candidate for a set gold).

A prediction is resolved to an O*NET code by :func:`predicted_code`: ``pred.matched is False`` means the
program's normalizer found no official title, and such a prediction scores as a miss everywhere; otherwise
``pred.onet_code`` is used, else the exact (case/punctuation-insensitive) official title of
``pred.occupation``. The metrics never fuzzy-match: normalization is the program's job.

Every metric is a callable object built with a taxonomy and follows DSPy's metric protocol
``metric(example, pred, trace=None, pred_name=None, pred_trace=None)``: it returns a float score during
evaluation and, when ``trace`` is not None (bootstrapping), a bool (``score >= threshold``).
:func:`evaluate_predictions` scores a whole split at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from careers.onet import CODE_RE, OnetTaxonomy, canonical

logger = logging.getLogger(__name__)

SOC_GROUP_LEVELS = ("major", "minor", "broad")


# ---------------------------------------------------------------------- field access
def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Reads a field of a dspy.Example / dspy.Prediction / dict / object, with a default."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    try:
        value = getattr(obj, name)
    except (AttributeError, KeyError):
        return default
    return default if value is None else value


def _valid_code(code: Any, taxonomy: OnetTaxonomy) -> str | None:
    if isinstance(code, str):
        code = code.strip()
        if code in taxonomy.occupations:
            return code
    return None


def _title_code(title: Any, taxonomy: OnetTaxonomy) -> str | None:
    if not isinstance(title, str) or not title.strip():
        return None
    if CODE_RE.match(title.strip()):
        return _valid_code(title, taxonomy)
    return taxonomy.code_for_title(title)


def gold_codes(example: Any, taxonomy: OnetTaxonomy) -> list[str]:
    """The gold candidate set of an example: ``gold_codes``, else ``[onet_code]``, else the gold title's code.

    Args:
        example: A labeled ``dspy.Example`` (or dict) from :meth:`careers.history.CareerHistory.to_example`.
        taxonomy: The O*NET taxonomy.

    Returns:
        Distinct O*NET codes, in the example's order; empty when the gold is not an official occupation.
    """
    codes = _get(example, "gold_codes") or []
    if isinstance(codes, str):
        codes = [codes]
    out = [c for c in dict.fromkeys(_valid_code(c, taxonomy) for c in codes) if c]
    if not out:
        code = _valid_code(_get(example, "onet_code"), taxonomy) or _title_code(_get(example, "occupation"), taxonomy)
        out = [code] if code else []
    return out


def predicted_code(pred: Any, taxonomy: OnetTaxonomy) -> str | None:
    """The O*NET code of a prediction, or None for an unmatched prediction (scored as a miss).

    ``pred.matched is False`` → None; else a valid ``pred.onet_code``; else the exact official title of
    ``pred.occupation`` (case/punctuation-insensitive); else None.
    """
    if pred is None or _get(pred, "matched", True) is False:
        return None
    return _valid_code(_get(pred, "onet_code"), taxonomy) or _title_code(_get(pred, "occupation"), taxonomy)


def _ranked_entry_code(entry: Any, taxonomy: OnetTaxonomy) -> str | None:
    if isinstance(entry, Mapping):
        return _valid_code(entry.get("onet_code") or entry.get("code"), taxonomy) or _title_code(
            entry.get("title") or entry.get("occupation"), taxonomy
        )
    if isinstance(entry, (tuple, list)):
        entry = entry[0] if entry else None
    return _title_code(entry, taxonomy)


def ranked_codes(pred: Any, taxonomy: OnetTaxonomy) -> list[str | None]:
    """The ranked predicted codes, best first, duplicates removed; unresolvable entries stay as None.

    Uses ``pred.ranked`` when present (entries: title, ``(title, score)``, or a dict with ``onet_code`` or
    ``title``), else ``[predicted_code(pred)]``. An unresolvable entry keeps its rank position, as a miss.
    """
    ranked = _get(pred, "ranked") if pred is not None else None
    if not ranked:
        return [predicted_code(pred, taxonomy)]
    out: list[str | None] = []
    seen: set[str] = set()
    for entry in ranked:
        code = _ranked_entry_code(entry, taxonomy)
        if code is not None and code in seen:
            continue
        if code is not None:
            seen.add(code)
        out.append(code)
    return out


# ---------------------------------------------------------------------- scores
def exact_score(gold: Sequence[str], code: str | None) -> float:
    """1.0 when ``code`` is in the gold set, else 0.0."""
    return 1.0 if code is not None and code in gold else 0.0


def related_score(gold: Sequence[str], code: str | None, taxonomy: OnetTaxonomy) -> float:
    """AccRM credit of one prediction: 1 exact, ``1/(k+1)`` for the best related index k, else 0."""
    if code is None:
        return 0.0
    if code in gold:
        return 1.0
    ranks = [k for g in gold if (k := taxonomy.related_rank(g, code)) is not None]
    return 1.0 / (min(ranks) + 1) if ranks else 0.0


def soc_score(gold: Sequence[str], code: str | None, taxonomy: OnetTaxonomy, level: str) -> float:
    """1.0 when ``code`` shares the SOC group at ``level`` with any gold code."""
    if code is None or not gold:
        return 0.0
    group = taxonomy.soc_group(code, level)
    return 1.0 if any(taxonomy.soc_group(g, level) == group for g in gold) else 0.0


def reciprocal_rank(gold: Sequence[str], codes: Sequence[str | None]) -> float:
    """1/r for the first rank r (1-based) whose code is in the gold set; 0.0 when none is."""
    for r, code in enumerate(codes, 1):
        if code is not None and code in gold:
            return 1.0 / r
    return 0.0


def hit_at_k(gold: Sequence[str], codes: Sequence[str | None], k: int) -> float:
    """1.0 when any of the top ``k`` codes is in the gold set."""
    return 1.0 if any(c is not None and c in gold for c in codes[:k]) else 0.0


# ---------------------------------------------------------------------- DSPy metrics
class OccupationMetric:
    """Base of the DSPy metrics: a taxonomy-bound callable ``metric(example, pred, trace=None, ...)``.

    Args:
        taxonomy: The O*NET taxonomy.
        threshold: During bootstrapping (``trace`` is not None) the metric returns ``score >= threshold``.
    """

    name = "metric"

    def __init__(self, taxonomy: OnetTaxonomy, threshold: float = 1.0):
        self.taxonomy = taxonomy
        self.threshold = threshold
        self.__name__ = self.name

    def score(self, example: Any, pred: Any) -> float:
        """The score of one prediction in [0, 1]."""
        raise NotImplementedError

    def __call__(self, example: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                 pred_trace: Any = None) -> float | bool:
        value = self.score(example, pred)
        if trace is not None:
            return value >= self.threshold
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold})"


class AccEM(OccupationMetric):
    """Exact match of the official O*NET title (set gold: predicted code in the gold set)."""

    name = "AccEM"

    def score(self, example: Any, pred: Any) -> float:
        gold = gold_codes(example, self.taxonomy)
        code = predicted_code(pred, self.taxonomy)
        if not gold and code is None and _get(pred, "matched", True) is not False:
            # neither side is an O*NET occupation: fall back to the canonical title strings
            g, p = _get(example, "occupation"), _get(pred, "occupation")
            return 1.0 if isinstance(g, str) and isinstance(p, str) and g and canonical(g) == canonical(p) else 0.0
        return exact_score(gold, code)


class AccRM(OccupationMetric):
    """Related-match accuracy: 1 exact, ``1/(k+1)`` for the k-th related occupation of the gold, else 0."""

    name = "AccRM"

    def score(self, example: Any, pred: Any) -> float:
        return related_score(gold_codes(example, self.taxonomy), predicted_code(pred, self.taxonomy), self.taxonomy)


class AccAtK(OccupationMetric):
    """Hit when any of the top ``k`` ranked predictions is (in) the gold."""

    def __init__(self, taxonomy: OnetTaxonomy, k: int = 5, threshold: float = 1.0):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        self.k = k
        self.name = f"Acc@{k}"
        super().__init__(taxonomy, threshold)

    def score(self, example: Any, pred: Any) -> float:
        return hit_at_k(gold_codes(example, self.taxonomy), ranked_codes(pred, self.taxonomy), self.k)


class MRR(OccupationMetric):
    """Reciprocal rank of the first gold hit in the ranked predictions (bootstrapping: a top-1 hit)."""

    name = "MRR"

    def score(self, example: Any, pred: Any) -> float:
        return reciprocal_rank(gold_codes(example, self.taxonomy), ranked_codes(pred, self.taxonomy))


class SocGroupAccuracy(OccupationMetric):
    """Hit when the prediction shares the SOC group (``major``, ``minor`` or ``broad``) with the gold."""

    def __init__(self, taxonomy: OnetTaxonomy, level: str = "major", threshold: float = 1.0):
        if level not in SOC_GROUP_LEVELS + ("detailed",):
            raise ValueError(f"level must be one of {SOC_GROUP_LEVELS + ('detailed',)}, got {level!r}.")
        self.level = level
        self.name = f"soc_{level}"
        super().__init__(taxonomy, threshold)

    def score(self, example: Any, pred: Any) -> float:
        return soc_score(gold_codes(example, self.taxonomy), predicted_code(pred, self.taxonomy), self.taxonomy,
                         self.level)


# ---------------------------------------------------------------------- batch evaluation
def score_example(example: Any, pred: Any, taxonomy: OnetTaxonomy, ks: Iterable[int] = (1, 5, 10)) -> dict[str, Any]:
    """All scores of one prediction (values in [0, 1]) plus the resolved gold and predicted codes."""
    gold = gold_codes(example, taxonomy)
    code = predicted_code(pred, taxonomy)
    codes = ranked_codes(pred, taxonomy)
    row: dict[str, Any] = {
        "gold_codes": gold,
        "pred_code": code,
        "matched": code is not None,
        "AccEM": AccEM(taxonomy).score(example, pred),
        "AccRM": related_score(gold, code, taxonomy),
    }
    for k in ks:
        row[f"Acc@{k}"] = hit_at_k(gold, codes, k)
    row["MRR"] = reciprocal_rank(gold, codes)
    for level in SOC_GROUP_LEVELS:
        row[f"soc_{level}"] = soc_score(gold, code, taxonomy, level)
    return row


def evaluate_predictions(
    examples: Sequence[Any],
    preds: Sequence[Any],
    taxonomy: OnetTaxonomy,
    ks: Iterable[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Scores predictions against labeled examples.

    Args:
        examples: Labeled examples (``dspy.Example`` or dicts with ``occupation``/``onet_code``/``gold_codes``).
        preds: One prediction per example (``dspy.Prediction``, dict or None for a failed call → miss).
        taxonomy: The O*NET taxonomy.
        ks: The cut-offs of Acc@k.

    Returns:
        ``{"n", "AccEM", "AccRM", "Acc@k"..., "MRR", "soc_major", "soc_minor", "soc_broad", "unmatched",
        "per_example"}``: accuracies (AccEM, AccRM, Acc@k, soc_*) and the unmatched share in percent,
        MRR as a fraction in [0, 1], ``per_example`` a list of :func:`score_example` rows.

    Raises:
        ValueError: When the two sequences differ in length.
    """
    if len(examples) != len(preds):
        raise ValueError(f"{len(examples)} examples but {len(preds)} predictions.")
    ks = tuple(sorted(set(ks)))
    rows = [score_example(ex, pred, taxonomy, ks) for ex, pred in zip(examples, preds, strict=True)]
    n = len(rows)

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / n if n else 0.0

    result: dict[str, Any] = {"n": n, "AccEM": 100 * mean("AccEM"), "AccRM": 100 * mean("AccRM")}
    for k in ks:
        result[f"Acc@{k}"] = 100 * mean(f"Acc@{k}")
    result["MRR"] = mean("MRR")
    for level in SOC_GROUP_LEVELS:
        result[f"soc_{level}"] = 100 * mean(f"soc_{level}")
    result["unmatched"] = 100 * (sum(not r["matched"] for r in rows) / n if n else 0.0)
    result["per_example"] = rows
    logger.info("Scored %d predictions: AccEM %.2f%%, AccRM %.2f%%", n, result["AccEM"], result["AccRM"])
    return result
