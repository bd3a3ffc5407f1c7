"""The GRU sequence baseline: learning a second-order rule, determinism, persistence, interface and CLI parity."""

from __future__ import annotations

import json
import random

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from careers.history import CareerHistory
from careers.splits import DatasetSplits
from programs.baseline_registry import load_baseline
from programs.baselines import FrequencyBaseline, MarkovBaseline
from programs.evaluate import EvalConfig, main, run_evaluation
from programs.factory import build_program
from programs.hybrid import HybridNextOccupation
from programs.sequence_model import SequenceBaseline, career_steps, education_at
from programs.sequence_training import IGNORE, build_sequences

A, B, C, D = "15-1252.00", "15-1253.00", "11-3021.00", "29-1141.00"
TITLES = {A: "Software Developers", B: "Software Quality Assurance Analysts and Testers",
          C: "Computer and Information Systems Managers", D: "Registered Nurses"}
# two cycles over the same three codes: after A comes B in one and C in the other, so the next job depends on the
# job before the current one (second order) -- a first-order chain is at chance where the GRU can be exact
CYCLES = ([A, B, C], [A, C, B])
FAST = {"embed_dim": 16, "edu_dim": 4, "hidden_size": 32, "epochs": 20, "patience": 20, "val_fraction": 0.0,
        "lr": 0.02, "dropout": 0.0, "min_count": 1, "batch_size": 16}


def _careers(n, prefix, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cycle, start = CYCLES[i % 2], rng.randrange(3)
        codes = [cycle[(start + j) % 3] for j in range(5)]
        jobs = [{"title": TITLES[c], "onet_code": c, "start_year": 2000 + 2 * j, "end_year": 2001 + 2 * j}
                for j, c in enumerate(codes)]
        out.append(CareerHistory.from_dict({"person_id": f"{prefix}{i}", "jobs": jobs,
                                            "education": [{"level": "Bachelor's degree"}]}))
    return out


def _examples(careers):
    return [h.prefix(n).to_example(h.jobs[n], occupation=TITLES[h.jobs[n].onet_code])
            for h in careers for n in range(1, len(h.jobs))]


@pytest.fixture(scope="module")
def data():
    return _examples(_careers(40, "t", 0)), _examples(_careers(20, "d", 1))


@pytest.fixture(scope="module")
def fitted(data):
    return SequenceBaseline(k=3, seed=0, **FAST).fit(data[0])


def _accuracy(model, examples):
    return sum(model(states=ex.states, career=ex.career).onet_code == ex.onet_code for ex in examples) / len(examples)


def test_learns_second_order_rule_markov_cannot(data, fitted):
    train, dev = data
    later = [ex for ex in dev if len(ex.states) >= 2]  # the cycle shows from the second job on
    seq, markov = _accuracy(fitted, later), _accuracy(MarkovBaseline(k=3).fit(train), later)
    freq = _accuracy(FrequencyBaseline(k=3).fit(train), later)
    assert seq >= 0.95, (seq, markov, freq)
    assert seq >= markov + 0.3 and seq >= freq + 0.3, (seq, markov, freq)
    assert fitted.train_summary["epochs_run"] == FAST["epochs"] and fitted.train_summary["train_steps"] == len(train)


def test_seeded_training_is_deterministic(data):
    train, dev = data
    opts = FAST | {"epochs": 3}
    one, two = (SequenceBaseline(k=3, seed=7, **opts).fit(train) for _ in range(2))
    other = SequenceBaseline(k=3, seed=8, **opts).fit(train)
    for name, tensor in one.net.state_dict().items():
        assert tensor.equal(two.net.state_dict()[name]), name
    assert not one.net.out.weight.equal(other.net.out.weight)
    assert [one(states=ex.states, career=ex.career).ranked for ex in dev] == \
           [two(states=ex.states, career=ex.career).ranked for ex in dev]


def test_save_load_round_trip(fitted, data, tmp_path, taxonomy):
    path = fitted.save(tmp_path / "model.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    saved = json.loads(path.read_text())
    assert saved["kind"] == "sequence" and saved["params"]["config"]["hidden_size"] == FAST["hidden_size"]
    assert dict(zip(saved["model"]["target_states"], saved["model"]["target_codes"], strict=True)) == {
        A: A, B: B, C: C}
    loaded = load_baseline(path, taxonomy=taxonomy)
    assert isinstance(loaded, SequenceBaseline)
    for ex in data[1]:
        assert loaded(states=ex.states, career=ex.career).ranked == fitted(states=ex.states, career=ex.career).ranked
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="sha256"):
        SequenceBaseline().load(path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        SequenceBaseline().load(path)


def test_interface_matches_markov(fitted, data, taxonomy):
    train, dev = data
    fitted.taxonomy = taxonomy
    markov = MarkovBaseline(k=3, taxonomy=taxonomy).fit(train)
    ex = next(e for e in dev if len(e.states) >= 2)
    pred, ref = fitted(history=ex.history, states=ex.states, career=ex.career), markov(states=ex.states)
    assert set(pred.keys()) == set(ref.keys())
    assert fitted.exclude_current == markov.exclude_current is True  # the cycles never repeat a job
    assert len(pred.ranked) == 2 and TITLES[ex.states[-1]] not in [t for t, _ in pred.ranked]  # current excluded
    assert all(taxonomy.title(taxonomy.code_for_title(t)) == t for t, _ in pred.ranked)
    assert pred.occupation == pred.ranked[0][0] == taxonomy.title(pred.onet_code) and pred.matched is True
    probs = [p for _, p in pred.ranked]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # states only (no tenure/education features), an empty history (frequency back-off), and the errors
    assert fitted(states=ex.states).onet_code in (A, B, C)
    assert fitted(states=[]).onet_code == markov(states=[]).onet_code
    assert fitted(career=ex.career).ranked == pred.ranked
    with pytest.raises(ValueError, match="states"):
        fitted(history="text only")
    with pytest.raises(RuntimeError, match="not fitted"):
        SequenceBaseline()(states=[A])


def test_options_are_validated():
    with pytest.raises(ValueError, match="hidden"):
        SequenceBaseline(hidden=8)
    with pytest.raises(ValueError, match="dropout"):
        SequenceBaseline(dropout=1.5)


def test_features_and_folding(data):
    career = {"jobs": [{"title": "x", "onet_code": A, "start_year": 2000, "end_year": 2003, "age": 30},
                       {"title": "y", "onet_code": B, "start_year": 2005}],
              "education": [{"level": "High school diploma", "start_year": 1990},
                            {"level": "Master's degree", "start_year": 2004}]}
    steps = career_steps([A, B], career)
    assert [s[1] for s in steps] == ["High school diploma", "Master's degree"]
    assert steps[0][2][:2] == [pytest.approx(1.6094379), 0.0] and steps[1][2][:2] == [0.0, 1.0]  # tenure; ongoing
    assert steps[1][2][4:6] == [pytest.approx(1.0986123), 0.0]  # log1p of the 2-year gap
    assert education_at(career["education"], None) == "Master's degree"
    assert career_steps([A], None)[0][1] == "<none>"
    model = SequenceBaseline(min_count=1)
    model.state_counts = {A: 1, B: 1, C: 1}
    model.build_vocabularies(data[0])
    seqs = build_sequences(model, data[0])
    assert len(seqs) == 40 and all(IGNORE not in s.targets for s in seqs)  # 4 prefix examples fold into 1 career


def test_fit_cache_skips_training(data, tmp_path, monkeypatch):
    opts = FAST | {"epochs": 2}
    first = SequenceBaseline(k=3, cache_dir=tmp_path, **opts).fit(data[0])
    assert len(list(tmp_path.glob("sequence-*.safetensors"))) == 1

    def no_training(*_):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr("programs.sequence_model.train_sequence_model", no_training)
    again = SequenceBaseline(k=3, cache_dir=tmp_path, **opts).fit(data[0])
    ex = data[1][3]
    assert again(states=ex.states, career=ex.career).ranked == first(states=ex.states, career=ex.career).ranked
    with pytest.raises(AssertionError, match="cache"):
        SequenceBaseline(k=3, cache_dir=tmp_path, **(opts | {"lr": 0.01})).fit(data[0])


def test_factory_and_hybrid(data, taxonomy):
    opts = FAST | {"epochs": 2}
    model = build_program("sequence", trainset=data[0], taxonomy=taxonomy, k=3, **opts)
    assert isinstance(model, SequenceBaseline) and model.fitted
    hybrid = build_program("hybrid", baseline="sequence", baseline_kwargs={"k": 3, **opts}, trainset=data[0],
                           taxonomy=taxonomy, lm=DummyLM([]))
    assert isinstance(hybrid, HybridNextOccupation) and isinstance(hybrid.baseline, SequenceBaseline)
    ex = data[1][0]
    candidates = hybrid.baseline_candidates(None, ex.history, states=ex.states, career=ex.career)
    assert candidates and all(isinstance(t, str) and 0 <= p <= 1 for t, p in candidates)


def test_evaluate_cli_and_run_evaluation(data, taxonomy, taxonomy_data_dir, tmp_path, capsys):
    splits = DatasetSplits(train=data[0], dev=data[1], test=[], name="cycles")
    options = {k: v for k, v in FAST.items()} | {"epochs": 3}
    res = run_evaluation(EvalConfig(dataset="cycles", program="sequence", output_dir=str(tmp_path), run_name="api",
                                    k=3, baseline_options=options), splits=splits, taxonomy=taxonomy)
    assert res["metrics"]["n"] == len(data[1]) and res["model"]["training"]["epochs_run"] == 3
    assert {"model.json", "model.safetensors", "predictions.jsonl"} <= {p.name for p in (tmp_path / "api").iterdir()}
    fixture = "tests/programs/fixtures/tiny_careers.jsonl"
    rc = main(["--dataset", f"jsonl:{fixture}", "--program", "sequence", "--split", "dev", "--data-dir",
               str(taxonomy_data_dir), "--output-dir", str(tmp_path), "--run-name", "cli", "--k", "3",
               "--baseline_options", "{hidden_size: 16, epochs: 2, min_count: 1}", "--log_level", "WARNING"])
    assert rc == 0 and "AccEM" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["program"] == "sequence"
    assert main(["--program", "markov", "--baseline_options", "{epochs: 2}"]) == 2
    assert main(["--program", "sequence", "--baseline_options", "[1, 2]"]) == 2
    assert dspy.settings.lm is None
