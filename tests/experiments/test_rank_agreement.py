"""benchmarks.rank_agreement on a tiny local model: an exhaustive beam agrees with the exact search."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path

import pytest

from benchmarks import rank_agreement
from lms.local_engine import LocalEngine

ROOT = Path(__file__).resolve().parents[2]
TITLES = ["Registered Nurses", "Nursing Assistants", "Medical Assistants", "Cashiers", "Software Developers"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("_ft_helpers", ROOT / "tests" / "finetune" / "ft_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return f"local:{helpers.build_tiny_model(tmp_path_factory.mktemp('tiny'))}"


def _predictions(path: Path, reason: bool = True) -> str:
    rows = [{"person_id": str(i), "history": f"Jobs: {i + 1}. 2010-2014: Nursing assistant", "error": None,
             **({"reason": "Cares for patients and studied nursing."} if reason else {})} for i in range(3)]
    rows.append({"person_id": "x", "history": "h", "error": "LM down"})  # failed predictions are skipped
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("mode", ["joint", "two_step", "direct"])
def test_an_exhaustive_beam_is_the_exact_ranking(tiny, tmp_path, mode):
    result = rank_agreement.run(tiny, _predictions(tmp_path / "p.jsonl"), mode=mode, n=10, k=3,
                                width=len(TITLES), titles=TITLES)
    assert result["n"] == 3 and result["mode"] == mode
    assert result["top1_agreement"] == 1.0 and result["topk_overlap"] == 1.0
    assert result["exact_nodes_per_prediction"] > 0 and result["beam_s_per_prediction"] >= 0


def test_a_narrow_beam_is_measured_and_bad_inputs_are_named(tiny, tmp_path, capsys):
    narrow = rank_agreement.run(tiny, _predictions(tmp_path / "p.jsonl"), k=3, width=1, titles=TITLES)
    assert 0.0 <= narrow["top1_agreement"] <= 1.0 and 0.0 <= narrow["topk_overlap"] <= 1.0
    engine_width = inspect.signature(LocalEngine.__init__).parameters["rank_width"].default
    assert rank_agreement.run(tiny, _predictions(tmp_path / "d.jsonl"), k=3, titles=TITLES)["width"] == engine_width
    no_reason = _predictions(tmp_path / "q.jsonl", reason=False)
    assert rank_agreement.main(["--model", tiny, "--predictions", no_reason, "--mode", "joint"]) == 2
    assert "has no 'reason'" in capsys.readouterr().out
    assert rank_agreement.main(["--model", tiny, "--predictions", str(tmp_path / "missing.jsonl")]) == 2
