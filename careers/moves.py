"""The kind of each move of a career, read from O*NET: stays, returns, climbs, pivots, steps down.

A move ``a -> b`` between two O*NET codes is classified by the first rule that holds:

* ``stay`` -- ``b`` is ``a``;
* ``return`` -- ``b`` occurred earlier in the history (before ``a``);
* ``climb`` -- ``b`` has a higher Job Zone (``climb2`` when it is two or more zones higher);
* ``pivot`` -- ``b`` is an O*NET Related Occupation of ``a`` outside ``a``'s SOC minor group;
* ``down`` -- ``b`` has a lower Job Zone;
* ``move`` -- anything else (or a code without a Job Zone).

These are facts of the history and of O*NET only; they are the observable side of the persistent motives of the
synthetic world (:mod:`careers.motives`), so a reason that names the kind of the last moves carries the evidence an
exact posterior over motives uses.
"""

from __future__ import annotations

from collections.abc import Sequence

from careers.onet import OnetTaxonomy

KINDS = ("stay", "return", "climb", "climb2", "pivot", "down", "move")
#: How a reason states each kind of move (lower case; the phrases :data:`careers.motives.MOTIVE_CUES` recognizes).
KIND_PHRASES = {"stay": "staying in the same occupation", "return": "a return to earlier work",
                "climb": "a climb to a higher job zone", "climb2": "a climb of two or more job zones",
                "pivot": "a pivot to a different field", "down": "a step down to a lower job zone",
                "move": "a change to other work"}


def move_kind(taxonomy: OnetTaxonomy, codes: Sequence[str | None], index: int) -> str:
    """The kind of the move from ``codes[index - 1]`` to ``codes[index]`` (module doc); ``move`` for unknown codes.

    Raises:
        ValueError: ``index`` does not name a move (it must be in ``1 .. len(codes) - 1``).
    """
    if not 1 <= index < len(codes):
        raise ValueError(f"index {index} names no move of {len(codes)} codes; use 1 .. {len(codes) - 1}")
    a, b = codes[index - 1], codes[index]
    if a is None or b is None:
        return "move"
    if a == b:
        return "stay"
    if b in codes[: index - 1]:
        return "return"
    za, zb = taxonomy.job_zone(a), taxonomy.job_zone(b)
    if za is not None and zb is not None and zb > za:
        return "climb2" if zb - za >= 2 else "climb"
    related = {r.code for r in taxonomy.related(a)}
    if b in related and taxonomy.soc_group(b, "minor") != taxonomy.soc_group(a, "minor"):
        return "pivot"
    if za is not None and zb is not None and zb < za:
        return "down"
    return "move"


def move_kinds(taxonomy: OnetTaxonomy, codes: Sequence[str | None]) -> list[str]:
    """The kind of every move of ``codes`` (one fewer than the codes)."""
    return [move_kind(taxonomy, codes, i) for i in range(1, len(codes))]


def last_move_sentence(titles: Sequence[str], kinds: Sequence[str]) -> str:
    """A sentence on the kind of the last move between history titles ('' for a history of one job).

    Args:
        titles: The history's job titles, as written.
        kinds: :func:`move_kinds` of the same jobs.
    """
    if not kinds:
        return ""
    if len(kinds) != len(titles) - 1:
        raise ValueError(f"{len(kinds)} move kinds for {len(titles)} titles; need one fewer kind than titles")
    again = ", like the move before it" if len(kinds) >= 2 and kinds[-2] == kinds[-1] else ""
    if kinds[-1] == "stay":
        return f"Their last move, to {titles[-1]}, was {KIND_PHRASES['stay']}{again}."
    return f"Their last move, from {titles[-2]} to {titles[-1]}, was {KIND_PHRASES[kinds[-1]]}{again}."
