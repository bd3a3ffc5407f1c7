"""Hand-computed cases for the accuracy metrics (AccEM, AccRM, Acc@k, MRR, SOC groups)."""

from __future__ import annotations

import dspy
import pytest

from careers.history import CareerHistory
from metrics.accuracy import (
    MRR,
    AccAtK,
    AccEM,
    AccRM,
    SocGroupAccuracy,
    evaluate_predictions,
    gold_codes,
    predicted_code,
    ranked_codes,
)

SWDEV = "15-1252.00"  # Software Developers; related: 1 15-1299.08, 2 15-1251.00, ..., 20 17-3027.00
QA = "15-1253.00"  # Software QA Analysts and Testers; related: 1 15-1252.00, 2 15-1299.08, 3 17-2112.02
MANAGERS_OTHER = "11-9199.00"  # Managers, All Other: no related list
NURSE = "29-1141.00"


def example(code, taxonomy, gold_codes=None):
    history = CareerHistory.from_dict({"person_id": "p1", "jobs": [{"title": "Cook", "start_year": 2000}]})
    return dspy.Example(history=history.to_prompt_text(), occupation=taxonomy.title(code), onet_code=code,
                        gold_codes=gold_codes or [code], person_id="p1", states=["cook"]).with_inputs("history")


def pred(code, taxonomy, **kw):
    return dspy.Prediction(occupation=taxonomy.title(code), onet_code=code, matched=True, **kw)


def test_example_from_history_to_example(taxonomy):
    history = CareerHistory.from_dict({"person_id": "p", "jobs": [
        {"title": "Cook", "start_year": 2000, "onet_code": "35-2014.00"},
        {"title": "Software Developers", "start_year": 2004, "onet_code": SWDEV}]})
    ex = history.prefix(1).to_example(history.jobs[1], occupation="Software Developers")
    assert gold_codes(ex, taxonomy) == [SWDEV]
    assert AccEM(taxonomy)(ex, pred(SWDEV, taxonomy)) == 1.0


def test_exact_match(taxonomy):
    ex = example(SWDEV, taxonomy)
    assert AccEM(taxonomy)(ex, pred(SWDEV, taxonomy)) == 1.0
    assert AccRM(taxonomy)(ex, pred(SWDEV, taxonomy)) == 1.0
    assert AccEM(taxonomy)(ex, pred(NURSE, taxonomy)) == 0.0
    # title only (no code), case-insensitive official title
    assert AccEM(taxonomy)(ex, dspy.Prediction(occupation="software developers")) == 1.0


def test_related_k1_and_k20(taxonomy):
    ex = example(SWDEV, taxonomy)
    assert AccRM(taxonomy)(ex, pred("15-1299.08", taxonomy)) == pytest.approx(0.5)
    assert AccRM(taxonomy)(ex, pred("17-3027.00", taxonomy)) == pytest.approx(1 / 21)
    assert AccRM(taxonomy)(ex, pred(NURSE, taxonomy)) == 0.0
    assert AccEM(taxonomy)(ex, pred("15-1299.08", taxonomy)) == 0.0


def test_gold_without_related_list_falls_back_to_exact(taxonomy):
    assert taxonomy.related(MANAGERS_OTHER) == []
    ex = example(MANAGERS_OTHER, taxonomy)
    assert AccRM(taxonomy)(ex, pred(MANAGERS_OTHER, taxonomy)) == 1.0
    assert AccRM(taxonomy)(ex, pred("11-1021.00", taxonomy)) == 0.0


def test_set_gold(taxonomy):
    ex = example(SWDEV, taxonomy, gold_codes=[SWDEV, QA])
    assert AccEM(taxonomy)(ex, pred(QA, taxonomy)) == 1.0
    # 15-1299.08 is k=1 for SWDEV and k=2 for QA: the best rank counts
    assert AccRM(taxonomy)(ex, pred("15-1299.08", taxonomy)) == pytest.approx(0.5)
    # 17-2112.02 is only on QA's list, at k=3
    assert AccRM(taxonomy)(ex, pred("17-2112.02", taxonomy)) == pytest.approx(0.25)
    assert AccEM(taxonomy)(ex, pred("17-2112.02", taxonomy)) == 0.0


def test_acc_at_k_and_mrr(taxonomy):
    ex = example(SWDEV, taxonomy)
    ranked = [(taxonomy.title(NURSE), 0.5), (taxonomy.title(QA), 0.3), (taxonomy.title(SWDEV), 0.2)]
    p = pred(NURSE, taxonomy, ranked=ranked)
    assert AccAtK(taxonomy, k=1)(ex, p) == 0.0
    assert AccAtK(taxonomy, k=2)(ex, p) == 0.0
    assert AccAtK(taxonomy, k=3)(ex, p) == 1.0
    assert MRR(taxonomy)(ex, p) == pytest.approx(1 / 3)
    # plain titles and dicts are accepted; duplicates are collapsed
    p2 = dspy.Prediction(occupation="x", ranked=[taxonomy.title(QA), {"onet_code": QA}, {"title": "Software Developers"}])
    assert ranked_codes(p2, taxonomy) == [QA, SWDEV]
    assert MRR(taxonomy)(ex, p2) == pytest.approx(0.5)
    # no ranking: falls back to [occupation]
    assert MRR(taxonomy)(ex, pred(SWDEV, taxonomy)) == 1.0
    assert MRR(taxonomy)(ex, pred(QA, taxonomy)) == 0.0


def test_soc_groups(taxonomy):
    ex = example(SWDEV, taxonomy)
    web = "15-1254.00"  # Web Developers: same major (15) and minor (15-1200), same broad 15-1250
    analyst = "15-1211.00"  # same major/minor, other broad (15-1210)
    assert SocGroupAccuracy(taxonomy, "broad")(ex, pred(web, taxonomy)) == 1.0
    assert SocGroupAccuracy(taxonomy, "broad")(ex, pred(analyst, taxonomy)) == 0.0
    assert SocGroupAccuracy(taxonomy, "minor")(ex, pred(analyst, taxonomy)) == 1.0
    assert SocGroupAccuracy(taxonomy, "major")(ex, pred(NURSE, taxonomy)) == 0.0
    # set gold: a hit if any candidate shares the group
    ex2 = example(NURSE, taxonomy, gold_codes=[NURSE, SWDEV])
    assert SocGroupAccuracy(taxonomy, "major")(ex2, pred(analyst, taxonomy)) == 1.0


def test_unmatched_prediction_is_a_miss(taxonomy):
    ex = example(SWDEV, taxonomy)
    flagged = dspy.Prediction(occupation="Software Developers", onet_code=None, matched=False)
    assert predicted_code(flagged, taxonomy) is None
    free_text = dspy.Prediction(occupation="Code Wizard")
    for metric in (AccEM(taxonomy), AccRM(taxonomy), MRR(taxonomy), SocGroupAccuracy(taxonomy)):
        assert metric(ex, flagged) == 0.0
        assert metric(ex, free_text) == 0.0


def test_bootstrap_trace_returns_bool(taxonomy):
    ex = example(SWDEV, taxonomy)
    assert AccRM(taxonomy)(ex, pred(SWDEV, taxonomy), trace=[]) is True
    assert AccRM(taxonomy)(ex, pred("15-1299.08", taxonomy), trace=[]) is False
    assert AccRM(taxonomy, threshold=0.5)(ex, pred("15-1299.08", taxonomy), trace=[]) is True


def test_evaluate_predictions(taxonomy):
    exs = [example(SWDEV, taxonomy), example(SWDEV, taxonomy), example(MANAGERS_OTHER, taxonomy),
           example(SWDEV, taxonomy, gold_codes=[SWDEV, QA])]
    preds = [pred(SWDEV, taxonomy), pred("15-1299.08", taxonomy), dspy.Prediction(occupation="??", matched=False),
             pred(QA, taxonomy)]
    res = evaluate_predictions(exs, preds, taxonomy, ks=(1, 5))
    assert res["n"] == 4
    assert res["AccEM"] == pytest.approx(50.0)
    assert res["AccRM"] == pytest.approx(100 * (1 + 0.5 + 0 + 1) / 4)
    assert res["Acc@1"] == pytest.approx(50.0)
    assert res["MRR"] == pytest.approx(0.5)
    assert res["soc_major"] == pytest.approx(75.0)
    assert res["unmatched"] == pytest.approx(25.0)
    assert [r["AccRM"] for r in res["per_example"]] == [1.0, 0.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="predictions"):
        evaluate_predictions(exs, preds[:2], taxonomy)


def test_metric_under_dspy_evaluate(taxonomy):
    class Echo(dspy.Module):
        def forward(self, history):
            return pred(SWDEV, taxonomy)

    devset = [example(SWDEV, taxonomy), example(NURSE, taxonomy)]
    result = dspy.Evaluate(devset=devset, metric=AccEM(taxonomy), num_threads=1)(Echo())
    assert result.score == pytest.approx(50.0)
