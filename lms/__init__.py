"""In-process local LMs for DSPy: the embedded default model and the local engine.

Public API:

* :func:`load` -- ``lms.load("local:gemma-3-270m")`` (default), ``"local:/path/to/hf_folder"``,
  ``"local:/base+/adapter"``, or any litellm model string (``"openai/gpt-4.1-mini"``) -> ``dspy.LM``.
* :func:`resolve_lm` -- the same from a string, dict or dataclass (teacher/judge/student specs in configs).
* :class:`LocalEngine` -- the engine behind local LMs (batching, prefix reuse, structured output, constrained
  decoding, option ranking); :mod:`lms.hardware` picks its device and dtype, :mod:`lms.progress` shows live progress.
* :func:`rank_options` / :func:`option_logprob` / :func:`option_logprobs` -- log-probabilities of closed-list
  options (e.g. O*NET titles).
* :func:`is_local` -- whether a ``dspy.LM`` runs in-process; :func:`constrain` -- the same local LM with closed-option
  fields added (e.g. ``{"occupation": titles}``).

The embedded model is Google's Gemma 3 270M, used under the Gemma Terms of Use (https://ai.google.dev/gemma/terms);
see ``lms.model_store``.
"""

from lms.local_engine import LocalEngine
from lms.model_store import DEFAULT_SPEC, is_local_spec, parse_local_spec
from lms.resolve import constrain, is_local, load, option_logprob, option_logprobs, rank_options, resolve_lm

__all__ = [
    "DEFAULT_SPEC",
    "LocalEngine",
    "constrain",
    "is_local",
    "is_local_spec",
    "load",
    "option_logprob",
    "option_logprobs",
    "parse_local_spec",
    "rank_options",
    "resolve_lm",
]
