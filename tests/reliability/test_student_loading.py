"""Security: a local student (HF folder: config + safetensors) loads through ``lms`` without unpickling.

Uses the tiny random model of ``tests/lms/tiny_lm_factory.py`` (never the real Gemma weights).
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

FACTORY = Path(__file__).resolve().parents[1] / "lms" / "tiny_lm_factory.py"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    if not FACTORY.is_file():
        pytest.skip("tests/lms/tiny_lm_factory.py is not there")
    spec = importlib.util.spec_from_file_location("rel_tiny_lm_factory", FACTORY)
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    return Path(factory.build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture
def refuse_unpickling(monkeypatch):
    import torch

    def refuse(*a, **k):
        raise AssertionError("a student load tried to unpickle")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *a, **k):
            refuse()

    for mod, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(mod, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)


def test_student_folder_loads_from_safetensors_only(tiny_dir, refuse_unpickling):
    lms = pytest.importorskip("lms")
    assert list(tiny_dir.glob("*.safetensors")) and not list(tiny_dir.glob("*.bin"))
    lm = lms.load(f"local:{tiny_dir}")
    assert lms.is_local(lm)
    from lms.model_store import load_local_model

    loaded = load_local_model(f"local:{tiny_dir}")
    assert loaded.model is not None


def test_student_folder_with_only_a_pickle_checkpoint_is_refused(tiny_dir, tmp_path, monkeypatch):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(1) or real(*a, **k))
    from lms.model_store import load_local_model

    with pytest.raises((ValueError, OSError, FileNotFoundError)):
        load_local_model(f"local:{folder}")
    assert calls == []
