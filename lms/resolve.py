"""Resolve model specs into ``dspy.LM`` objects, and score closed-list options with a local LM.

Every CLI accepts the same strings: ``local:gemma-3-270m`` (embedded default), ``local:/path[+/adapter]``, or a
litellm model (``openai/gpt-4.1-mini``, ``ollama_chat/qwen3:8b``, ``hosted_vllm/<name>`` with ``api_base``). API keys
are only read from environment variables named by ``api_key_env``; they are never stored in configs or saved state.

Per-role specs (``teacher_lm``, ``judge_lm``, ``lm``, ``predictor_lm`` in every CLI and YAML) are a string or a mapping
``{model, api_base, api_key_env, max_tokens, temperature, num_retries}`` (:func:`lm_spec`); on the command line a
mapping is written as YAML flow text: ``--judge_lm '{model: openai/gpt-4.1-mini, api_key_env: OPENAI_API_KEY}'``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
import re
from typing import Any

import dspy

from lms.chat_template import normalize_messages
from lms.constrained import score_options
from lms.local_engine import AsyncLocalEngine, LocalEngine, model_name_for, spec_for
from lms.model_store import DEFAULT_SPEC, is_local_spec, load_local_model, parse_local_spec

logger = logging.getLogger(__name__)

_ENGINE_KWARGS = tuple(name for name in inspect.signature(LocalEngine.__init__).parameters if name not in ("self", "model"))


def load(spec: str = DEFAULT_SPEC, **kwargs: Any) -> dspy.LM:
    """Build a ``dspy.LM`` from a spec string.

    Args:
        spec: ``local:gemma-3-270m`` (default), ``local:/path/to/hf_folder``, ``local:/base+/adapter``, or a litellm
            model string.
        **kwargs: For local specs, :class:`LocalEngine` options (``constrained_fields``, ``dtype``,
            ``batch_window_ms``, ``max_batch_size``, ``max_field_tokens``, ``default_max_tokens``, ``seed``,
            ``structured_output``) and ``dspy.LM`` options (``temperature`` -- default 0.0, greedy --,
            ``max_tokens``, ``cache``, ...). For remote specs, everything goes to ``dspy.LM``.

    Returns:
        The LM. A local LM's model name is ``local/<spec>@<fingerprint>`` so DSPy's cache key identifies the weights.

    Raises:
        ValueError: For an empty or malformed spec.
        FileNotFoundError: For a local model or adapter folder that does not exist.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if not is_local_spec(spec):
        if "/" not in spec:
            raise ValueError(f"Model spec {spec!r} is neither 'local:<model>' nor a litellm '<provider>/<model>' name")
        return dspy.LM(spec, **kwargs)
    if spec.startswith("local/"):
        spec = "local:" + spec[len("local/"):]
    engine_kwargs = {key: kwargs.pop(key) for key in _ENGINE_KWARGS if key in kwargs}
    engine = LocalEngine(parse_local_spec(spec).spec, **engine_kwargs)
    loaded = load_local_model(engine.model, dtype=engine.dtype)
    kwargs.setdefault("temperature", 0.0)
    return dspy.LM(model_name_for(engine.model, loaded.fingerprint, engine.revision()), engine=engine,
                   async_engine=AsyncLocalEngine(engine), **kwargs)


LM_SPEC_KEYS = ("model", "api_base", "api_key_env", "max_tokens", "temperature", "num_retries", "cache")
_REMOTE_ONLY = {"api_base", "api_key_env", "num_retries"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lm_spec(value: Any, *, role: str = "lm", api_base: str | None = None, **defaults: Any) -> str | dict | None:
    """Validates one role's LM spec from a config or flag and fills shared defaults.

    Args:
        value: None, a spec string, YAML flow text of a mapping (``"{model: ..., api_base: ...}"``) or a mapping with
            keys of :data:`LM_SPEC_KEYS`.
        role: The config key (``teacher_lm``, ``judge_lm``, ...) named in errors.
        api_base: A CLI-wide ``--api_base`` for remote specs that give none.
        **defaults: Further defaults (e.g. ``max_tokens``: a local model takes it as its per-call budget too), used
            when the spec gives none; ``api_base``-like remote-only keys are never added to a local spec.

    Returns:
        None, the spec string (local models, or a remote model without options) or a mapping for
        :func:`resolve_lm`. No key is read here; ``api_key_env`` is resolved when the LM is built.

    Raises:
        ValueError: For an unknown key, an ``api_key`` value, a missing model, a bad environment variable name, or
            remote-only options on a local model.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            import yaml

            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"{role}: not a valid YAML mapping ({exc}).") from None
        elif not text:
            raise ValueError(f"{role}: the LM spec is empty.")
        else:
            value = {"model": text}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, dict):
        raise ValueError(f"{role}: an LM spec is a string or a mapping, got {type(value).__name__}.")
    if "api_key" in value:
        raise ValueError(f"{role}: do not put API keys in LM specs; set api_key_env to the name of an environment "
                         "variable that holds the key.")
    unknown = sorted(set(value) - set(LM_SPEC_KEYS))
    if unknown:
        raise ValueError(f"{role}: unknown LM spec key(s) {unknown}; allowed: {list(LM_SPEC_KEYS)}.")
    model = value.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"{role}: the LM spec needs a 'model' string, got {model!r}.")
    out = {k: v for k, v in value.items() if v is not None}
    out["model"] = model.strip()
    key_env = out.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.match(key_env)):
        raise ValueError(f"{role}: api_key_env must name an environment variable (e.g. OPENAI_API_KEY), got "
                         f"{key_env!r}.")
    local = is_local_spec(out["model"])
    if local:
        bad = sorted(set(out) & _REMOTE_ONLY)
        if bad:
            raise ValueError(f"{role}: {bad} are meaningless for the local model {out['model']!r}.")
    elif api_base and "api_base" not in out:
        out["api_base"] = api_base
    for key, default in defaults.items():
        if default is not None and not (local and key in _REMOTE_ONLY):
            out.setdefault(key, default)
    return out["model"] if set(out) == {"model"} else out


def lm_model(spec: Any) -> str | None:
    """The model string of a spec (string or mapping), for reports and comparisons."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return spec.get("model")
    return getattr(spec, "model", None)


def resolve_lm(spec: Any, **load_kwargs: Any) -> dspy.BaseLM | None:
    """Resolve a teacher/judge/student spec into a ``dspy.LM``: the one LM resolver of every CLI and program.

    Args:
        spec: None (returned as is: the step uses DSPy's configured LM), a ``dspy.BaseLM`` (returned as is), a spec
            string, YAML flow text of a mapping, or a dict/dataclass with ``model`` and optionally ``temperature``,
            ``max_tokens``, ``api_base``, ``api_key_env`` (name of the env var holding the key), ``cache`` and any
            other :func:`load` keyword.
        **load_kwargs: Further :func:`load` options (e.g. ``constrained_fields`` for a local model); the spec's own
            keys win.

    Returns:
        The LM, or None for a None spec.

    Raises:
        ValueError: If the spec has no model, or ``api_key_env`` names an unset variable.
    """
    if spec is None or isinstance(spec, dspy.BaseLM):
        return spec
    if isinstance(spec, str) and spec.strip().startswith("{"):
        spec = lm_spec(spec)
    if isinstance(spec, str):
        return load(spec, **load_kwargs)
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        spec = dataclasses.asdict(spec)
    if not isinstance(spec, dict):
        raise ValueError(f"Cannot resolve an LM from {type(spec).__name__}; pass a string, dict or dataclass")
    options = {**load_kwargs, **{key: value for key, value in spec.items() if value is not None}}
    model = options.pop("model", None)
    if not model:
        raise ValueError(f"LM spec has no 'model': {spec!r}")
    if "api_key" in options:
        raise ValueError("Do not put API keys in LM specs; set 'api_key_env' to the name of an environment variable")
    key_env = options.pop("api_key_env", None)
    if key_env:
        if is_local_spec(model):
            raise ValueError(f"api_key_env is meaningless for the local model {model!r}")
        if not os.environ.get(key_env):
            raise ValueError(f"LM spec for {model!r} reads its API key from ${key_env}, which is not set")
        options["api_key"] = os.environ[key_env]
    if is_local_spec(model) and "api_base" in options:
        raise ValueError(f"api_base is meaningless for the local model {model!r}")
    return load(model, **options)


def constrain(lm: Any, fields: dict[str, list[str]]) -> Any:
    """A local LM whose engine also constrains ``fields`` (name -> allowed strings) to their options.

    Fields the engine already constrains keep their own options. Returns ``lm`` itself when it is not local or has
    nothing to add; otherwise a new ``dspy.LM`` with the same engine settings and LM options plus the new fields, on
    the same loaded weights (the model registry loads them once).
    """
    if not is_local(lm):
        return lm
    engine = _engine(lm)
    new = {name: list(options) for name, options in fields.items() if name not in engine.constrained_fields}
    if not new:
        return lm
    state = engine.dump_state()
    state["constrained_fields"] = {**engine.constrained_fields, **new}
    model = state.pop("model")
    return load(model, **state, **lm.kwargs, model_type=lm.model_type, cache=lm.cache, num_retries=lm.num_retries,
                callbacks=lm.callbacks, provider=lm.provider)


def spec_string(lm: Any) -> str | None:
    """The spec string that rebuilds ``lm`` (for manifests), or None when it cannot be told (e.g. DummyLM).

    A string is returned as is, a mapping gives its ``model``, a local LM its ``local:...`` spec.
    """
    if lm is None or isinstance(lm, str):
        return lm
    if isinstance(lm, dict):
        return lm.get("model")
    model = getattr(lm, "model", None)
    if not isinstance(model, str):
        return None
    if is_local(lm):
        try:
            return spec_for(model)[0]
        except ValueError:
            return None
    if type(lm) is dspy.LM:
        return model
    return None


def is_local(lm: Any) -> bool:
    """Whether ``lm`` is a ``dspy.LM`` running on a :class:`LocalEngine` in this process."""
    return isinstance(getattr(lm, "_engine_spec", None), LocalEngine)


def _engine(lm: Any) -> LocalEngine:
    if not is_local(lm):
        raise ValueError(f"{getattr(lm, 'model', lm)!r} is not a local LM; option scoring needs lms.load('local:...')")
    return lm._engine_spec


def rank_options(lm: dspy.LM, messages: list[dict], field: str, k: int = 5,
                 prefix_fields: dict[str, str] | None = None) -> list[tuple[str, float]]:
    """Top-k allowed options of a constrained output field with their total log-probabilities.

    Thread-safe. ``messages`` are exactly what the ChatAdapter sends, e.g.
    ``dspy.ChatAdapter().format(signature, demos=[], inputs={...})``. The score of an option is
    ``log P(option tokens, end | prompt)`` where the prompt is the chat-templated messages followed, in the open
    assistant turn, by the output fields before ``field`` (each ``[[ ## name ## ]]\\n<value>\\n\\n``; values from
    ``prefix_fields`` or, when None, generated greedily by the engine as in a normal call) and the header
    ``[[ ## field ## ]]\\n``; "end" is a newline or end-of-turn token. The search follows the engine's ``ranking``:
    a beam over the option trie (default; exact scores, approximate top-k) or the exact best-first search; a prompt the
    engine has already answered by ranking returns the kept ranking.

    Args:
        lm: A local LM from :func:`load` whose engine has ``constrained_fields[field]`` (or a Literal field).
        messages: ChatAdapter messages.
        field: The constrained output field.
        k: Number of options to return.
        prefix_fields: Values of the output fields preceding ``field`` (skip generating them).

    Returns:
        ``[(option, logprob), ...]``, best first.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return _engine(lm).rank(lm.model, normalize_messages(messages), field, k, prefix_fields)


def option_logprob(lm: dspy.LM, messages: list[dict], field: str, option: str,
                   prefix_fields: dict[str, str] | None = None) -> float:
    """Total log-probability of one option (e.g. the gold occupation), scored after the same prefix as
    :func:`rank_options`. Returns ``-inf`` when ``option`` is not in the allowed list."""
    return option_logprobs(lm, messages, field, [option], prefix_fields)[0]


def option_logprobs(lm: dspy.LM, messages: list[dict], field: str, options: list[str],
                    prefix_fields: dict[str, str] | None = None) -> list[float]:
    """Total log-probabilities of several options after one shared prefix (as :func:`option_logprob`, which scores
    one), e.g. to choose among a short candidate list. ``-inf`` for an option that is not in the allowed list."""
    import torch

    engine = _engine(lm)
    loaded, ids, trie = engine.field_prefix(lm.model, normalize_messages(messages), field, prefix_fields)
    wanted = [o.strip() if isinstance(o, str) else "" for o in options]
    known = list(dict.fromkeys(o for o in wanted if o in trie.token_ids))
    if not known:
        return [-math.inf] * len(wanted)

    def run() -> list[float]:
        with loaded.lock, torch.inference_mode():
            return score_options(loaded.model, ids, trie, known)

    scores = dict(zip(known, engine.run_on_worker(run), strict=True))
    return [scores.get(o, -math.inf) for o in wanted]
