"""TransitionStats: counts from labeled examples, titles shared by several states, JSON round trip."""

from __future__ import annotations

import dspy
import pytest

from careers.transitions import TransitionStats


def _ex(pid, jobs, gold_state, gold_codes, occupation="Cashiers"):
    career = {"person_id": pid, "jobs": [{"title": t, "source_code": s, "onet_candidates": list(c)}
                                         for t, s, c in jobs]}
    return dspy.Example(person_id=pid, career=career, gold_state=gold_state, gold_codes=list(gold_codes),
                        occupation=occupation).with_inputs("history")


CASHIER = ("Cashiers", "occ1980:276", ["41-2011.00"])
CLERK = ("Stock clerks", "occ1980:365", ["43-5081.00"])
CLERK2 = ("Stock clerks", "occ1980:366", ["53-7065.00"])  # another source code with the same title


def test_counts_shares_and_titles():
    stats = TransitionStats.fit([_ex("1", [CASHIER], "occ1980:365", ["43-5081.00"]),
                                 _ex("2", [CLERK, CASHIER], "occ1980:365", ["43-5081.00"]),
                                 _ex("3", [CASHIER], "occ1980:366", ["53-7065.00"]),
                                 _ex("4", [CLERK2], "occ1980:276", ["41-2011.00"])])
    assert stats.transitions == 4 and stats.persons == 4
    assert stats.total("occ1980:276") == 3 and stats.count("occ1980:276", "occ1980:365") == 2
    assert stats.share("occ1980:276", "occ1980:366") == pytest.approx(1 / 3)
    assert stats.top_next("occ1980:276", 1) == [("occ1980:365", 2, pytest.approx(2 / 3))]
    assert stats.title("occ1980:276") == "Cashiers"
    assert stats.states_for_title("stock CLERKS") == ("occ1980:365", "occ1980:366")
    assert stats.state_codes("occ1980:366") == ("53-7065.00",)
    assert TransitionStats.from_dict(stats.to_dict()).to_dict() == stats.to_dict()


def test_fit_needs_transitions_and_load_checks_the_format(tmp_path):
    with pytest.raises(ValueError, match="no example"):
        TransitionStats.fit([dspy.Example(person_id="1", history="x")])
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="nextocc-transitions"):
        TransitionStats.load(tmp_path / "bad.json")


def test_judge_accepts_a_true_statistic_on_a_shared_title(taxonomy):
    from metrics.heuristic_judge import HeuristicJudge

    stats = TransitionStats.fit([_ex("1", [CLERK], "occ1980:276", ["41-2011.00"]),
                                 _ex("2", [CLERK2], "occ1980:276", ["41-2011.00"]),
                                 _ex("3", [CLERK2], "occ1980:365", ["43-5081.00"])])
    judge = HeuristicJudge(taxonomy, stats)
    assert judge.check_statistics("Of 2 recorded moves from stock clerks, 50% went next to cashiers.") == (1, [])
    assert judge.check_statistics("Of 1 recorded moves from stock clerks, 100% went next to cashiers.") == (1, [])
    assert judge.check_statistics("Of 3 recorded moves from stock clerks, 50% went next to cashiers.")[1]
