"""Hybrid student traces: cross-fitted candidates, baseline.json and sft_hybrid_joint.jsonl in a compile run."""

from __future__ import annotations

import json
import os

import pytest
from dspy.utils.dummies import DummyLM

from compile.candidates import example_id
from compile.config import OptimizeConfig
from compile.hybrid_export import HYBRID_FILE, cross_fitted_candidates, person_fold, ranked_reason
from compile.optimize import compile_data, run_optimize
from finetune.data import row_step
from programs.baseline_registry import load_baseline
from programs.factory import build_baseline
from signatures import parse_candidates

DATA = os.environ.get("NEXTOCC_DATA_DIR", "/work/shared/data")
pytestmark = pytest.mark.skipif(not os.path.isdir(DATA), reason="data mirror not available")


def config(tmp_path, **kw):
    base = dict(dataset="synthetic", data_dir=DATA, synthetic_persons=160, motives=True, n_train=24, n_dev=0,
                n_test=0, candidates_per_person=2, optimizer="none", threads=1, output_dir=str(tmp_path),
                run_name="hy", teacher_lm="evidence", judge_lm="heuristic", predict_candidates=False,
                rationalize=True, eval_judge=False, mode="joint", hybrid_baseline="return_markov")
    base.update(kw)
    return OptimizeConfig(**base)


def test_compile_exports_hybrid_traces_and_the_full_baseline(tmp_path):
    cfg = config(tmp_path)
    res = run_optimize(cfg, teacher_lm=DummyLM([{"occupation": "Cashiers"}]))
    run = tmp_path / "hy"
    rows = [json.loads(x) for x in (run / HYBRID_FILE).read_text().splitlines()]
    oracles = res["oracles"]
    assert res["exports"][HYBRID_FILE] == len(rows) == 3 * oracles
    assert res["hybrid_export"]["examples"] == oracles and 0 <= res["hybrid_export"]["gold_in_candidates"] <= oracles
    assert f"Hybrid rows: {oracles} oracle examples" in (run / "data_card.md").read_text()
    assert sorted({row_step(r) for r in rows}) == ["occupation", "reason", "reason+occupation"]
    user = rows[0]["prompt"][-1]["content"]
    assert "[[ ## candidates ## ]]" in user and "(p=" in user
    # the joint rows' completions carry the oracle reason and gold, as in sft_joint.jsonl
    plain = [json.loads(x) for x in (run / "sft_joint.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows] == [r["completion"] for r in plain]
    # baseline.json is the return-aware Markov chain fitted on the whole training split
    splits = compile_data(cfg)[0]
    saved = load_baseline(run / "baseline.json")
    full = build_baseline("return_markov", trainset=list(splits.train), k=5)
    ex = splits.train[0]
    assert saved(history=ex.history, states=ex.states).ranked == full(history=ex.history, states=ex.states).ranked


def test_ranked_reasons_keep_in_candidate_golds_and_open_with_their_rank(tmp_path):
    res = run_optimize(config(tmp_path, n_train=40, hybrid_reasons="ranked"),
                       teacher_lm=DummyLM([{"occupation": "Cashiers"}]))
    run = tmp_path / "hy"
    rows = [json.loads(x) for x in (run / HYBRID_FILE).read_text().splitlines()]
    hy = res["hybrid_export"]
    assert hy["reasons"] == "ranked" and 0 < hy["examples"] == hy["gold_in_candidates"] < res["oracles"]
    assert len(rows) == 3 * hy["examples"]
    card = (run / "data_card.md").read_text()
    assert f"Hybrid rows: {hy['examples']} oracle examples" in card and "reasons `ranked` (only those" in card
    plain = [(r["prompt"][-1]["content"], r["completion"][0]["content"].split("[[ ## reason ## ]]")[1].split("[[")[0])
             for r in map(json.loads, (run / "sft_joint.jsonl").read_text().splitlines())
             if row_step(r) == "reason+occupation"]
    ranks = set()
    for row in (r for r in rows if row_step(r) == "reason+occupation"):
        user, done = row["prompt"][-1]["content"], row["completion"][0]["content"]
        history, shown = user.split("[[ ## candidates ## ]]")
        listed = [title for title, _ in parse_candidates(shown)]
        gold = done.split("[[ ## occupation ## ]]")[1].split("[[")[0].strip()
        reason = done.split("[[ ## reason ## ]]")[1].split("[[")[0].strip()
        rank = listed.index(gold) + 1  # every kept row's gold is a candidate
        ranks.add(rank)
        oracles = {text.strip() for prompt, text in plain if prompt.startswith(history)}
        assert any(reason == ranked_reason(text, rank) for text in oracles)
    assert reason.startswith(f"Of the candidates, the history points to number {rank}. ")
    assert len(ranks) >= 2  # the rank is read from each row, not a constant


def test_candidates_are_cross_fitted_without_the_persons_fold(tmp_path):
    cfg = config(tmp_path)
    splits, train, _, _ = compile_data(cfg)
    got = cross_fitted_candidates(train, splits.train, "return_markov", k=5, folds=3, seed=0)
    assert set(got) == {example_id(ex) for ex in train}
    ex = train[0]
    fold = person_fold(ex.get("person_id"), 3, 0)
    rest = [e for e in splits.train if person_fold(e.get("person_id"), 3, 0) != fold]
    assert all(e.get("person_id") != ex.get("person_id") for e in rest)
    expected = build_baseline("return_markov", trainset=rest, k=5)(history=ex.history, states=ex.states).ranked
    assert got[example_id(ex)] == [(str(t), float(p)) for t, p in expected]
    # in-sample candidates differ: the person's own transition is in the fit
    in_sample = build_baseline("return_markov", trainset=list(splits.train), k=5)
    assert any(got[example_id(e)] != [(str(t), float(p)) for t, p in in_sample(history=e.history,
                                                                                states=e.states).ranked]
               for e in train)


def test_person_folds_are_stable_and_seeded():
    assert person_fold("p1", 5, 0) == person_fold("p1", 5, 0)
    assert {person_fold(f"p{i}", 5, 0) for i in range(200)} == set(range(5))
    assert [person_fold(f"p{i}", 5, 0) for i in range(50)] != [person_fold(f"p{i}", 5, 1) for i in range(50)]


@pytest.mark.parametrize("kw,match", [({"hybrid_baseline": "nearest"}, "hybrid_baseline"),
                                      ({"hybrid_folds": 1}, "hybrid_folds"),
                                      ({"hybrid_k_candidates": 0}, "hybrid_k_candidates"),
                                      ({"hybrid_reasons": "compare"}, "hybrid_reasons")])
def test_config_rejects_bad_hybrid_settings(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **kw)


def test_no_hybrid_export_by_default(tmp_path):
    cfg = config(tmp_path, hybrid_baseline=None, n_train=6)
    run_optimize(cfg, teacher_lm=DummyLM([{"occupation": "Cashiers"}]))
    assert not (tmp_path / "hy" / HYBRID_FILE).exists() and not (tmp_path / "hy" / "baseline.json").exists()
    assert "Hybrid rows" not in (tmp_path / "hy" / "data_card.md").read_text()
