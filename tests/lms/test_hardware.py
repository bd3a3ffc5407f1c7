"""The device and dtype rules of lms.hardware, with the machine's capabilities mocked."""

from __future__ import annotations

import pytest

from lms import hardware


def _cpu(monkeypatch, native: bool, speedup: float | None = None):
    info = {"model": "Test CPU", "flags": ["avx2"] + (["avx512_bf16"] if native else []), "cores": 2,
            "torch_capability": "AVX512" if native else "AVX2", "native_bf16": native}
    monkeypatch.setattr(hardware, "cpu_info", lambda: info)
    probes = []

    def probe(refresh=False):
        probes.append(1)
        return {"float32_gflops": 100.0, "bfloat16_gflops": 100.0 * speedup, "bf16_speedup": speedup}

    monkeypatch.setattr(hardware, "cpu_dtype_probe", probe)
    monkeypatch.delenv(hardware.DTYPE_ENV_VAR, raising=False)
    return probes


def test_cpu_without_native_bf16_uses_fp32_without_probing(monkeypatch):
    probes = _cpu(monkeypatch, native=False)
    assert hardware.resolve_dtype(None, "cpu") == "float32"
    assert hardware.resolve_dtype("auto", "cpu") == "float32"
    assert probes == []


def test_cpu_with_native_bf16_uses_bf16_when_the_probe_confirms(monkeypatch):
    _cpu(monkeypatch, native=True, speedup=1.8)
    assert hardware.resolve_dtype(None, "cpu") == "bfloat16"


def test_cpu_flags_claiming_bf16_but_slow_probe_use_fp32(monkeypatch):
    _cpu(monkeypatch, native=True, speedup=0.7)
    dtype, why = hardware.default_dtype("cpu")
    assert dtype == "float32" and "probe" in why


def test_explicit_dtype_and_env_override_the_rule(monkeypatch):
    _cpu(monkeypatch, native=False)
    assert hardware.resolve_dtype("bf16", "cpu") == "bfloat16"
    monkeypatch.setenv(hardware.DTYPE_ENV_VAR, "fp16")
    assert hardware.resolve_dtype(None, "cpu") == "float16"
    assert hardware.resolve_dtype("float32", "cpu") == "float32"  # the argument wins over the environment
    with pytest.raises(ValueError, match="Unknown dtype"):
        hardware.resolve_dtype("int3", "cpu")


def test_gpu_uses_bf16_or_fp16(monkeypatch):
    import torch

    monkeypatch.delenv(hardware.DTYPE_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert hardware.resolve_dtype(None, "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert hardware.resolve_dtype(None, "cuda") == "float16"


def test_device_rule(monkeypatch):
    import torch

    monkeypatch.delenv(hardware.DEVICE_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.resolve_device(None) == "cpu"
    assert hardware.resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        hardware.resolve_device("cuda")
    with pytest.raises(ValueError, match="Unknown device"):
        hardware.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.resolve_device("auto") == "cuda"


def test_probe_is_cached_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("NEXTOCC_CACHE_DIR", str(tmp_path))
    calls = []
    real = hardware.matmul_gflops
    monkeypatch.setattr(hardware, "matmul_gflops", lambda dtype, **k: calls.append(dtype) or real(dtype, size=64,
                                                                                                   seconds=0.01))
    first = hardware.cpu_dtype_probe()
    second = hardware.cpu_dtype_probe()
    assert first == second and len(calls) == 2
    assert list(tmp_path.glob("hardware/cpu-dtype-*.json"))


def test_machine_info_names_the_cpu():
    info = hardware.machine_info()
    assert info["cpu"]["model"] and isinstance(info["cpu"]["flags"], list)
    assert info["torch"]
