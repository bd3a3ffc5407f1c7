"""What the machine can do: CPU/GPU description, the device rule and the compute dtype rule.

The dtype rule (:func:`resolve_dtype`): an explicit ``dtype=`` or ``$NEXTOCC_DTYPE`` wins; a GPU uses bfloat16
(float16 where bf16 is missing); a CPU uses bfloat16 only when it computes bf16 natively (AVX512-BF16 or AMX) *and*
a short matmul probe confirms bf16 is faster there, else float32. Without native bf16, PyTorch emulates bf16 matmuls
and they run 2-4x slower than float32. The probe result is cached per machine (CPU model, flags, torch version) in
the nextocc cache directory, so it runs once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from lms.cache import cache_dir

logger = logging.getLogger(__name__)

DTYPE_ENV_VAR = "NEXTOCC_DTYPE"
DEVICE_ENV_VAR = "NEXTOCC_DEVICE"
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_REPORTED_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                   "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "neon", "asimd", "sve", "bf16")
_ALIASES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32",
            "fp16": "float16", "float16": "float16", "half": "float16", "float": "float32"}


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model name, the SIMD flags that matter for dtype choice, core count and PyTorch's CPU capability."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - torch missing or too old: capability unknown
        capability = None
    return {"model": model, "flags": sorted(f for f in _REPORTED_FLAGS if f in flags), "cores": os.cpu_count(),
            "torch_capability": capability, "native_bf16": any(f in flags for f in _NATIVE_BF16_FLAGS)}


def gpu_info() -> dict[str, Any] | None:
    """The first CUDA device (name, compute capability, memory, bf16 support), or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "count": torch.cuda.device_count(), "capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1), "bf16": bool(torch.cuda.is_bf16_supported())}


def machine_info() -> dict[str, Any]:
    """CPU, GPU, torch version and thread count: the hardware part of a run directory's provenance."""
    import torch

    return {"cpu": cpu_info(), "gpu": gpu_info(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "platform": platform.platform()}


def resolve_device(requested: str | None = None) -> str:
    """``'cuda'`` or ``'cpu'`` from ``auto`` (default; ``$NEXTOCC_DEVICE``), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ValueError: For an unknown name, or ``cuda`` on a machine where torch sees no GPU.
    """
    import torch

    name = (requested or os.environ.get(DEVICE_ENV_VAR) or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but torch sees no CUDA GPU; use device='auto' or 'cpu'")
        return name
    raise ValueError(f"Unknown device {requested!r}; use 'auto', 'cpu' or 'cuda'")


def canonical_dtype(name: str) -> str:
    """``'bfloat16'``, ``'float32'`` or ``'float16'`` for any common spelling (``bf16``, ``fp32``, ...)."""
    try:
        return _ALIASES[str(name).strip().lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"Unknown dtype {name!r}; use 'auto', 'bfloat16', 'float32' or 'float16'") from None


def matmul_gflops(dtype: str = "float32", size: int = 768, seconds: float = 0.4, device: str = "cpu") -> float:
    """Measured matmul throughput (GFLOP/s) of ``size x size`` products in ``dtype`` on ``device``."""
    import torch

    torch_dtype = getattr(torch, canonical_dtype(dtype))
    a = torch.randn(size, size, device=device).to(torch_dtype)
    b = torch.randn(size, size, device=device).to(torch_dtype)
    torch.matmul(a, b)  # warm-up
    runs, start = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        runs += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and runs >= 2:
            return 2 * size**3 * runs / elapsed / 1e9


def _probe_path() -> Path:
    info = cpu_info()
    import torch

    key = hashlib.sha256(json.dumps([info["model"], info["flags"], torch.__version__]).encode()).hexdigest()[:12]
    return cache_dir() / "hardware" / f"cpu-dtype-{key}.json"


def cpu_dtype_probe(refresh: bool = False) -> dict[str, Any]:
    """fp32 vs bf16 matmul GFLOP/s on this CPU, measured once per machine and cached (see module docstring)."""
    path = _probe_path()
    if path.is_file() and not refresh:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("Ignoring an unreadable dtype probe cache %s", path)
    result = {"cpu": cpu_info()["model"], "float32_gflops": round(matmul_gflops("float32"), 1),
              "bfloat16_gflops": round(matmul_gflops("bfloat16"), 1)}
    result["bf16_speedup"] = round(result["bfloat16_gflops"] / max(result["float32_gflops"], 1e-9), 2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("Could not cache the dtype probe in %s: %s", path, exc)
    return result


def default_dtype(device: str = "cpu") -> tuple[str, str]:
    """The compute dtype for ``device`` by the module's rule, and why (for logs and run directories)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_bf16_supported():
            return "bfloat16", "GPU with bf16"
        return "float16", "GPU without bf16"
    info = cpu_info()
    if not info["native_bf16"]:
        return "float32", f"CPU without native bf16 ({info['torch_capability'] or 'unknown ISA'})"
    probe = cpu_dtype_probe()
    if probe["bf16_speedup"] >= 1.1:
        return "bfloat16", f"CPU with native bf16, probe {probe['bf16_speedup']}x fp32"
    return "float32", f"CPU flags claim bf16 but the probe measured {probe['bf16_speedup']}x fp32"


def resolve_dtype(requested: str | None = None, device: str = "cpu") -> str:
    """The compute dtype name: ``requested`` unless ``None``/``'auto'``, else ``$NEXTOCC_DTYPE``, else the rule."""
    for source, value in (("dtype=", requested), (f"${DTYPE_ENV_VAR}", os.environ.get(DTYPE_ENV_VAR))):
        if value not in (None, "", "auto"):
            dtype = canonical_dtype(value)
            logger.debug("dtype %s from %s", dtype, source)
            return dtype
    dtype, why = default_dtype(device)
    _log_choice(dtype, device, why)
    return dtype


@lru_cache(maxsize=8)
def _log_choice(dtype: str, device: str, why: str) -> None:
    logger.info("Compute dtype %s on %s: %s", dtype, device, why)
