"""The prompt of a request answered by a gRPC engine: a validated OpenAI chat or
completions body, or an SGLang ``/generate`` body, turned into the token ids the engine
takes. Sans-I/O: a tokenizer entry (smg/text/registry.py) and a body in, a ``Prompt``
out.

Rules:
- **Chat** renders the messages with the model's chat template (the entry's compiled
  ``chat_template``; none → ``PromptError`` 400 ``chat_template_missing``), passing
  ``tools`` (not when ``tool_choice`` is ``"none"``), ``documents``,
  ``chat_template_kwargs`` and ``continue_final_message`` (which turns the generation
  prompt off, as HF does); a template that raises is a 400 ``invalid_request`` naming
  the template's message. The rendered text is tokenized **without** added special
  tokens: the template wrote them.
- **Completions** take ``prompt`` as a string (tokenized with the tokenizer's own
  special tokens, as vLLM and SGLang do), a list of token ids, or a list of one of
  those; several prompts in one request are refused (400 ``batch_prompt_unsupported``:
  one engine request carries one prompt).
- **/generate** takes ``text`` or ``input_ids`` (exactly one) and its nested
  ``sampling_params``; ``generate_body`` rewrites them as the completions-level body
  the request builder reads (``max_new_tokens`` → ``max_tokens``, ``min_new_tokens`` →
  ``min_tokens``, ``return_logprob``/``top_logprobs_num`` → ``logprobs``), so one
  builder serves the three APIs.
- **Embeddings** take ``input`` as a string, a list of strings, a list of token ids or a
  list of such lists (OpenAI's four forms), at most ``MAX_EMBEDDING_INPUTS`` of them,
  none empty; strings are tokenized with the tokenizer's special tokens (an embedding
  model reads its ``[CLS]``/bos). One ``Prompt`` per input, in order.
- Token ids given by the client must lie in the tokenizer's vocabulary (400
  ``invalid_token_id``): an engine indexing its embedding table with them would fail
  the whole batch.
- Tokenization goes through the entry's L0/L1 cache when one is configured.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smg.errors import SmgError
from smg.text.chat_template import TemplateError

__all__ = ["MAX_EMBEDDING_INPUTS", "Prompt", "PromptError", "chat_prompt", "completion_prompt", "embedding_prompts",
           "generate_body", "generate_prompt"]

#: OpenAI's bound on the inputs of one embeddings request
MAX_EMBEDDING_INPUTS = 2048


class PromptError(SmgError, ValueError):
    """The body cannot become a prompt; answered ``status`` with ``code``."""

    status_hint = 400

    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True)
class Prompt:
    ids: list[int]
    text: str = ""   # the text the ids came from ("" when the client sent ids)


def _encode(entry, text: str, add_special_tokens: bool) -> list[int]:
    cache = entry.cache
    if cache is not None:
        return list(cache.encode(text, add_special_tokens=add_special_tokens))
    return entry.tokenizer.encode(text, add_special_tokens=add_special_tokens)


def _check_ids(ids: Any, vocab: int, param: str) -> list[int]:
    if not ids:
        raise PromptError(f"'{param}' must not be empty", "invalid_request", param)
    for t in ids:
        if type(t) is not int or not 0 <= t < vocab:
            raise PromptError(f"'{param}' holds {t!r}, not a token id of this model (0..{vocab - 1})",
                              "invalid_token_id", param)
    return list(ids)


def chat_prompt(body: Mapping[str, Any], entry) -> Prompt:
    template = entry.chat_template
    if template is None:
        raise PromptError(f"the tokenizer of model '{entry.name}' has no chat template; start the gateway "
                          "with --chat-template", "chat_template_missing")
    tools = body.get("tools")
    if body.get("tool_choice") == "none":
        tools = None
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise PromptError("'chat_template_kwargs' must be an object", "invalid_type", "chat_template_kwargs")
    cont = bool(body.get("continue_final_message", False))
    try:
        text = template.render(body["messages"], tools=tools, documents=body.get("documents"),
                               add_generation_prompt=not cont, continue_final_message=cont,
                               chat_template_kwargs=kwargs)
    except TemplateError as e:
        raise PromptError(f"the chat template failed on these messages: {e}") from None
    return Prompt(_encode(entry, text, False), text)


def _one_prompt(value: Any, entry, param: str) -> Prompt:
    if isinstance(value, str):
        return Prompt(_encode(entry, value, True), value)
    if isinstance(value, list) and value and all(type(t) is int for t in value):
        return Prompt(_check_ids(value, entry.tokenizer.vocab_size, param))
    raise PromptError(f"'{param}' must be a string or a list of token ids", "invalid_type", param)


def completion_prompt(body: Mapping[str, Any], entry) -> Prompt:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not all(type(t) is int for t in prompt):
        if len(prompt) != 1:
            raise PromptError("a request to a gRPC worker carries one prompt; send the prompts as separate "
                              "requests", "batch_prompt_unsupported", "prompt")
        prompt = prompt[0]
    return _one_prompt(prompt, entry, "prompt")


_GENERATE_RENAMED = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}
_GENERATE_KEPT = ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
                  "repetition_penalty", "stop", "stop_token_ids", "n", "ignore_eos", "skip_special_tokens",
                  "spaces_between_special_tokens", "no_stop_trim", "json_schema", "regex", "ebnf", "seed",
                  "sampling_seed", "logit_bias")


def generate_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The completions-level body the request builder reads, for a ``/generate`` body."""
    params = body.get("sampling_params") or {}
    if not isinstance(params, Mapping):
        raise PromptError("'sampling_params' must be an object", "invalid_type", "sampling_params")
    out: dict[str, Any] = {k: params[k] for k in _GENERATE_KEPT if k in params}
    for old, new in _GENERATE_RENAMED.items():
        if old in params:
            out[new] = params[old]
    if body.get("return_logprob"):
        out["logprobs"] = int(body.get("top_logprobs_num") or 0)
    out["stream"] = bool(body.get("stream", False))
    return out


def generate_prompt(body: Mapping[str, Any], entry) -> Prompt:
    text, ids = body.get("text"), body.get("input_ids")
    if (text is None) == (ids is None):
        raise PromptError("give exactly one of 'text' and 'input_ids'", "invalid_request", "text")
    if text is not None:
        if not isinstance(text, str):
            raise PromptError("a request to a gRPC worker carries one prompt: 'text' must be a string",
                              "batch_prompt_unsupported", "text")
        return Prompt(_encode(entry, text, True), text)
    if not isinstance(ids, list) or (ids and type(ids[0]) is list):
        raise PromptError("'input_ids' must be one list of token ids", "batch_prompt_unsupported", "input_ids")
    return Prompt(_check_ids(ids, entry.tokenizer.vocab_size, "input_ids"))


def embedding_prompts(body: Mapping[str, Any], entry) -> list[Prompt]:
    """One prompt per input of an embeddings body (the module's rules)."""
    value = body.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and all(type(t) is int for t in value)):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise PromptError("'input' must be a string, a list of strings, a list of token ids or a list of "
                          "such lists, and not empty", "invalid_type", "input")
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise PromptError(f"'input' holds {len(items)} inputs; at most {MAX_EMBEDDING_INPUTS} are allowed",
                          "invalid_request", "input")
    out = []
    for item in items:
        if isinstance(item, str):
            if not item:
                raise PromptError("'input' must not hold an empty string", "invalid_request", "input")
            out.append(Prompt(_encode(entry, item, True), item))
        elif isinstance(item, list) and all(type(t) is int for t in item):
            out.append(Prompt(_check_ids(item, entry.tokenizer.vocab_size, "input")))
        else:
            raise PromptError("'input' must be a string, a list of strings, a list of token ids or a list of "
                              "such lists", "invalid_type", "input")
    return out
