import pytest

from compile.selection import SelectionRule, dpo_pairs, score_summary, select_oracles


def cand(ex, i, f, c, u, score=None, error=None, reason=None):
    return {
        "example_id": ex, "candidate": i, "reason": reason or f"reason {ex} {i}", "history": f"history {ex}",
        "gold_occupation": "Cashiers", "factuality": f, "coherence": c, "utility": u,
        "oracle_score": score if score is not None else ((f or 0) + (c or 0) + (u or 0)) / 3, "error": error,
    }


def test_oracle_is_best_eligible_and_missing_is_reported():
    rule = SelectionRule(thresholds={"factuality": 3, "coherence": 3, "utility": 3})
    cands = [
        cand("a", 0, 5, 5, 2),  # highest score but fails utility
        cand("a", 1, 4, 3, 4),
        cand("a", 2, 3, 3, 3),
        cand("b", 0, 2, 5, 5),
        cand("b", 1, None, 5, 5),  # judge failure
        cand("c", 0, 5, 5, 5, error="timeout"),
    ]
    oracles, missing = select_oracles(cands, rule)
    assert oracles["a"]["candidate"] == 1
    assert sorted(missing) == ["b", "c"]


def test_ties_go_to_utility_then_index():
    rule = SelectionRule()
    oracles, _ = select_oracles([cand("a", 0, 5, 3, 4, score=4), cand("a", 1, 3, 4, 5, score=4),
                                 cand("a", 2, 4, 3, 5, score=4)], rule)
    assert oracles["a"]["candidate"] == 1


def test_dpo_pairs_best_vs_worst_with_gap():
    rule = SelectionRule(min_dpo_gap=1.0)
    cands = [cand("a", 0, 5, 5, 5), cand("a", 1, 1, 1, 1), cand("a", 2, 3, 3, 3),
             cand("b", 0, 4, 4, 4), cand("b", 1, 4, 4, 3.5)]  # gap too small
    pairs = dpo_pairs(cands, rule)
    assert len(pairs) == 1
    chosen, rejected = pairs[0]
    assert (chosen["candidate"], rejected["candidate"]) == (0, 1)


def test_summary_counts_and_rates():
    rule = SelectionRule()
    cands = [cand("a", 0, 5, 5, 5), cand("a", 1, 1, 4, 4), cand("b", 0, None, 3, 3), cand("b", 1, 3, 3, 3, error="x")]
    s = score_summary(cands, rule)
    assert s["candidates"] == 4 and s["generation_errors"] == 1 and s["judge_failures"] == 1
    assert s["judged"] == 2 and s["eligible"] == 1 and s["pass_rate"] == 0.5
    assert s["factuality"]["histogram"]["1"] == 1 and s["factuality"]["pass_rate"] == 0.5


@pytest.mark.parametrize("bad", [{"factuality": 7}, {"fluency": 3}, {"utility": "high"}])
def test_bad_thresholds_are_rejected(bad):
    with pytest.raises(ValueError, match="threshold"):
        SelectionRule(thresholds=bad)
