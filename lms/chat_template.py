"""Chat templates for local models: the Gemma 3 turn format and prompt rendering.

The embedded Gemma 3 270M is the *base* model and its GGUF file carries no usable chat template, so the standard
Gemma 3 turn template is set on its tokenizer: ``<bos><start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n``.
Gemma has no system role; a system prompt is folded into the first user turn.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim "
    "+ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# Generic fallback for tokenizers without any template (e.g. test tokenizers).
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


def token_id(tokenizer: Any, token: str) -> int | None:
    """The id of one vocabulary token, or None when the vocabulary lacks it.

    Looks the token up directly: ``get_vocab()`` builds a Python dict of the whole vocabulary (262k entries for Gemma)
    on every call.
    """
    index = tokenizer.convert_tokens_to_ids(token)
    if isinstance(index, int) and index >= 0 and tokenizer.convert_ids_to_tokens(index) == token:
        return index
    return None


def is_gemma_tokenizer(tokenizer: Any) -> bool:
    """Whether the tokenizer knows Gemma's turn tokens."""
    return token_id(tokenizer, "<start_of_turn>") is not None and token_id(tokenizer, "<end_of_turn>") is not None


def ensure_chat_template(tokenizer: Any, force: bool = False) -> None:
    """Set a chat template on ``tokenizer`` when it has none (or always with ``force``).

    Gemma tokenizers get the Gemma 3 turn template; others a plain role-tagged template.

    Args:
        tokenizer: A transformers tokenizer.
        force: Replace an existing template (used for the GGUF base model, whose template is not the chat one).
    """
    if getattr(tokenizer, "chat_template", None) and not force:
        return
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE if is_gemma_tokenizer(tokenizer) else PLAIN_CHAT_TEMPLATE


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn (eos and, for Gemma, ``<end_of_turn>``)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for token in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>"):
        index = token_id(tokenizer, token)
        if index is not None:
            ids.add(index)
    return sorted(ids)


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], assistant_prefix: str = "") -> str:
    """Render chat messages into the prompt text the model continues.

    Args:
        tokenizer: Tokenizer with a chat template.
        messages: OpenAI-style ``{"role", "content"}`` dicts (system, user, assistant).
        assistant_prefix: Text already written in the open assistant turn.

    Returns:
        The prompt string, ending inside the assistant turn (special tokens included as text).
    """
    if not messages:
        raise ValueError("render_prompt needs at least one message")
    clean = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    text = tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
    return text + assistant_prefix


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Validate OpenAI-style messages and flatten their content to text."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    out = []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(f"Each message needs a 'role': {message!r}")
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        out.append({"role": message["role"], "content": str(content)})
    return out


def request_messages(request: Any) -> list[dict[str, str]]:
    """Flatten a canonical ``dspy.lm15.Request`` into role/content dicts (system first)."""
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(p, "text", "") or "" for p in request.system)
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        role = message.role if message.role in ("user", "assistant", "system") else "user"
        messages.append({"role": role, "content": message.text or ""})
    return messages
