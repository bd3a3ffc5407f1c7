"""Education levels as O*NET's Required Level of Education categories (scale RL, 1-12)."""

from __future__ import annotations

#: O*NET RL categories in words that carry no degree keyword of the grounding check.
RL_WORDS = {1: "less than a diploma", 2: "a diploma", 3: "a post-secondary award", 4: "some college",
            5: "a two-year degree", 6: "a four-year degree", 7: "post-baccalaureate study", 8: "an advanced degree",
            9: "post-graduate study", 10: "a professional degree", 11: "the top research degree",
            12: "research training beyond that"}
_LEVEL_KEYS = (("post-doctoral", 12), ("doctor", 11), ("phd", 11), ("professional", 10), ("post-master", 9),
               ("master", 8), ("graduate degree", 8), ("some graduate", 7), ("post-baccalaureate", 7),
               ("bachelor", 6), ("associate", 5), ("some college", 4), ("certificate", 3), ("less than", 1),
               ("high school", 2), ("ged", 2))


def education_category(level: str | None) -> int | None:
    """The O*NET RL category (1-12) of an education level as written in a history, or None."""
    text = (level or "").lower()
    for key, cat in _LEVEL_KEYS:
        if key in text:
            return cat
    return None
