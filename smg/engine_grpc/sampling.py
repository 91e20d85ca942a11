"""Sans-I/O building of the engines' ``GenerateRequest``: a parsed OpenAI chat or
completions body (a dict, already validated) plus the prompt's token ids in, one proto
message out. Nothing here does I/O; every function is pure.

Two steps: ``read_sampling(body, endpoint)`` turns the body into ``Sampling`` (the
OpenAI-level values, ``None`` where the client left a knob unset), then
``sglang_generate_request`` / ``vllm_generate_request`` write it in the engine's proto
(``smg_grpc_proto`` 0.4.28). ``build_generate_request(runtime, ...)`` does both.

Rules shared by both engines:
- Max tokens: chat takes ``max_completion_tokens``, else the deprecated ``max_tokens``;
  completions take ``max_tokens``. Unset stays unset (the proto field is ``optional``;
  the engine applies its own limit).
- ``stop`` (a string or a list) becomes a list; ``stop_token_ids`` is passed as given.
- ``n`` defaults to 1; ``ignore_eos`` and ``no_stop_trim`` to false;
  ``spaces_between_special_tokens`` to true (the engines' Python defaults).
- ``skip_special_tokens``: the caller's ``skip_special_tokens`` argument when given (the
  pipeline keeps special tokens when its reasoning or tool parser needs them), else the
  body's value, else true (the gateway detokenizes, the engines return raw ids).
- Structured output, at most one constraint: ``response_format`` ``json_schema`` (its
  ``schema``, serialized) or ``json_object`` (the schema ``{"type":"object"}``) → JSON
  schema; ``regex`` → regex; ``ebnf`` → grammar; completions also take ``json_schema``
  (a string). Two of them → ``InvalidSampling``. A caller's ``constraint`` (from
  ``tool_choice``: ``(kind, value)`` with kind structural_tag | json_schema | ebnf |
  regex) comes last: SGLang drops it when the body already set one (response_format
  wins, as SGLang's HTTP server does), vLLM refuses the pair (``InvalidSampling``), as
  SMG does for each.
- Logprobs: chat ``logprobs: true`` with ``top_logprobs`` N; completions ``logprobs`` N.
- ``logit_bias`` keys are token ids written as strings (OpenAI); values floats.
- ``stream`` is the body's unless the caller passes one; ``request_id`` and
  ``data_parallel_rank`` are the caller's (a DP pin, rank 0 included, is set; ``None``
  leaves the field unset).

SGLang (``sglang.grpc.scheduler``). Its numeric sampling fields are plain proto3 (no
presence): an unset knob is sent as SGLang's own default, never as proto's 0 —
temperature 1.0, top_p 1.0, top_k -1 (off), min_p 0.0, frequency_penalty 0.0,
presence_penalty 0.0, repetition_penalty 1.0. ``min_tokens`` → ``min_new_tokens``;
``return_logprob`` is whether logprobs were asked, ``top_logprobs_num`` their count (0
when not), ``logprob_start_len`` -1 (output tokens only); logit_bias keys stay strings.
The proto has no seed field: ``seed``/``sampling_seed`` are not sent to SGLang.
``require_reasoning`` is the caller's (false unless the request enables thinking).

vLLM (``vllm.grpc.engine``). ``temperature`` is ``optional``: unset stays unset (the
engine's generation-config default applies). top_p 1.0, top_k 0 (vLLM's "off"; a
negative top_k becomes 0), min_p 0.0, penalties 0.0/0.0/1.0 when unset. ``min_tokens``
as is; ``seed`` (or ``sampling_seed``) → ``seed``. ``logprobs``: chat with logprobs asked
→ ``top_logprobs`` if given else 1, at most 20; completions → the given count; not asked
→ unset. ``ebnf`` → ``grammar``; logit_bias keys become ints.
``include_stop_str_in_output``: the body's value if given, else ``no_stop_trim``.
The prompt goes as ``tokenized`` (never ``text``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from smg_grpc_proto.generated import sglang_scheduler_pb2 as sglang_pb
from smg_grpc_proto.generated import vllm_engine_pb2 as vllm_pb

from smg.errors import SmgError

Endpoint = Literal["chat", "completion"]
Runtime = Literal["sglang", "vllm"]

RUNTIMES = ("sglang", "vllm")
CONSTRAINT_KINDS = ("structural_tag", "json_schema", "ebnf", "regex")
VLLM_MAX_LOGPROBS = 20

# SGLang's own defaults for the proto fields without presence (SamplingParams in SGLang).
SGLANG_DEFAULTS = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": -1,
    "min_p": 0.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repetition_penalty": 1.0,
}
# vLLM's defaults for its non-optional fields (0 top_k = off in vLLM).
VLLM_DEFAULTS = {
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repetition_penalty": 1.0,
}


class InvalidSampling(SmgError, ValueError):
    """The body asks for something no engine request can carry (two constraints, an
    unknown constraint kind, a malformed logit_bias). Answered 400."""

    status_hint = 400


@dataclass(frozen=True)
class Sampling:
    """The sampling knobs of one request at the OpenAI level; ``None`` = left unset."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    max_tokens: int | None = None
    min_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    n: int = 1
    seed: int | None = None
    logit_bias: tuple[tuple[str, float], ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    include_stop_str_in_output: bool | None = None
    logprobs: bool = False
    top_logprobs: int | None = None  # None: not given
    # (kind, value) with kind in CONSTRAINT_KINDS, from the body; at most one
    constraint: tuple[str, str] | None = None
    stream: bool = False


def _stop_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _logit_bias(value: Any) -> tuple[tuple[str, float], ...]:
    if not value:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidSampling("logit_bias must be an object of token id to bias")
    out = []
    for key, bias in value.items():
        try:
            int(key)
        except (TypeError, ValueError):
            raise InvalidSampling(f"logit_bias key {key!r} is not a token id") from None
        out.append((str(key), float(bias)))
    return tuple(out)


def _body_constraints(body: Mapping[str, Any], endpoint: Endpoint) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping):
        kind = fmt.get("type")
        if kind == "json_object":
            found.append(("json_schema", orjson.dumps({"type": "object"}).decode()))
        elif kind == "json_schema":
            spec = fmt.get("json_schema") or {}
            schema = spec.get("schema", {}) if isinstance(spec, Mapping) else {}
            found.append(("json_schema", orjson.dumps(schema).decode()))
    if endpoint == "completion" and body.get("json_schema") is not None:
        schema = body["json_schema"]
        found.append(("json_schema", schema if isinstance(schema, str) else orjson.dumps(schema).decode()))
    if body.get("regex") is not None:
        found.append(("regex", body["regex"]))
    if body.get("ebnf") is not None:
        found.append(("ebnf", body["ebnf"]))
    return found


def read_sampling(body: Mapping[str, Any], endpoint: Endpoint = "chat") -> Sampling:
    """The ``Sampling`` a chat (``endpoint="chat"``) or completions body asks for."""
    if endpoint == "chat":
        max_tokens = body.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = body.get("max_tokens")
        logprobs = bool(body.get("logprobs"))
        top_logprobs = body.get("top_logprobs")
    elif endpoint == "completion":
        max_tokens = body.get("max_tokens")
        count = body.get("logprobs")
        logprobs = count is not None
        top_logprobs = count
    else:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    constraints = _body_constraints(body, endpoint)
    if len(constraints) > 1:
        raise InvalidSampling("Multiple constraints are not allowed.")
    seed = body.get("seed")
    if seed is None:
        seed = body.get("sampling_seed")
    skip = body.get("skip_special_tokens")
    spaces = body.get("spaces_between_special_tokens")
    n = body.get("n")
    return Sampling(
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        top_k=body.get("top_k"),
        min_p=body.get("min_p"),
        frequency_penalty=body.get("frequency_penalty"),
        presence_penalty=body.get("presence_penalty"),
        repetition_penalty=body.get("repetition_penalty"),
        max_tokens=max_tokens,
        min_tokens=body.get("min_tokens"),
        stop=_stop_list(body.get("stop")),
        stop_token_ids=tuple(body.get("stop_token_ids") or ()),
        n=1 if n is None else int(n),
        seed=seed,
        logit_bias=_logit_bias(body.get("logit_bias")),
        ignore_eos=bool(body.get("ignore_eos", False)),
        skip_special_tokens=True if skip is None else bool(skip),
        spaces_between_special_tokens=True if spaces is None else bool(spaces),
        no_stop_trim=bool(body.get("no_stop_trim", False)),
        include_stop_str_in_output=body.get("include_stop_str_in_output"),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        constraint=constraints[0] if constraints else None,
        stream=bool(body.get("stream", False)),
    )


def _check_constraint(constraint: tuple[str, str] | None) -> None:
    if constraint is not None and constraint[0] not in CONSTRAINT_KINDS:
        raise InvalidSampling(f"Unknown constraint type: {constraint[0]}")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


# ---------------------------------------------------------------------------- SGLang

_SGLANG_ONEOF = {"structural_tag": "structural_tag", "json_schema": "json_schema", "ebnf": "ebnf_grammar", "regex": "regex"}


def sglang_sampling_params(
    s: Sampling, constraint: tuple[str, str] | None = None, *, skip_special_tokens: bool | None = None
) -> sglang_pb.SamplingParams:
    """SGLang ``SamplingParams`` for ``s`` (module rules)."""
    _check_constraint(constraint)
    chosen = s.constraint if s.constraint is not None else constraint
    p = sglang_pb.SamplingParams(
        temperature=_or(s.temperature, SGLANG_DEFAULTS["temperature"]),
        top_p=_or(s.top_p, SGLANG_DEFAULTS["top_p"]),
        top_k=_or(s.top_k, SGLANG_DEFAULTS["top_k"]),
        min_p=_or(s.min_p, SGLANG_DEFAULTS["min_p"]),
        frequency_penalty=_or(s.frequency_penalty, SGLANG_DEFAULTS["frequency_penalty"]),
        presence_penalty=_or(s.presence_penalty, SGLANG_DEFAULTS["presence_penalty"]),
        repetition_penalty=_or(s.repetition_penalty, SGLANG_DEFAULTS["repetition_penalty"]),
        stop=list(s.stop),
        stop_token_ids=list(s.stop_token_ids),
        skip_special_tokens=s.skip_special_tokens if skip_special_tokens is None else skip_special_tokens,
        spaces_between_special_tokens=s.spaces_between_special_tokens,
        n=s.n,
        min_new_tokens=s.min_tokens or 0,
        ignore_eos=s.ignore_eos,
        no_stop_trim=s.no_stop_trim,
        logit_bias=dict(s.logit_bias),
    )
    if s.max_tokens is not None:
        p.max_new_tokens = s.max_tokens
    if chosen is not None:
        setattr(p, _SGLANG_ONEOF[chosen[0]], chosen[1])
    return p


def sglang_generate_request(
    body: Mapping[str, Any],
    input_ids: Sequence[int],
    *,
    request_id: str,
    endpoint: Endpoint = "chat",
    original_text: str = "",
    constraint: tuple[str, str] | None = None,
    data_parallel_rank: int | None = None,
    stream: bool | None = None,
    skip_special_tokens: bool | None = None,
    require_reasoning: bool = False,
) -> sglang_pb.GenerateRequest:
    """SGLang ``GenerateRequest`` for one OpenAI body (module rules)."""
    s = read_sampling(body, endpoint)
    req = sglang_pb.GenerateRequest(
        request_id=request_id,
        tokenized=sglang_pb.TokenizedInput(original_text=original_text, input_ids=list(input_ids)),
        sampling_params=sglang_sampling_params(s, constraint, skip_special_tokens=skip_special_tokens),
        return_logprob=s.logprobs,
        logprob_start_len=-1,
        top_logprobs_num=(s.top_logprobs or 0) if s.logprobs else 0,
        stream=s.stream if stream is None else stream,
        require_reasoning=require_reasoning,
    )
    if data_parallel_rank is not None:
        req.data_parallel_rank = data_parallel_rank
    return req


# ------------------------------------------------------------------------------ vLLM

_VLLM_ONEOF = {"structural_tag": "structural_tag", "json_schema": "json_schema", "ebnf": "grammar", "regex": "regex"}


def vllm_sampling_params(
    s: Sampling, constraint: tuple[str, str] | None = None, *, skip_special_tokens: bool | None = None
) -> vllm_pb.SamplingParams:
    """vLLM ``SamplingParams`` for ``s`` (module rules)."""
    _check_constraint(constraint)
    if s.constraint is not None and constraint is not None:
        raise InvalidSampling("Constrained decoding is not compatible with tool calls.")
    chosen = s.constraint if s.constraint is not None else constraint
    include_stop = s.include_stop_str_in_output
    p = vllm_pb.SamplingParams(
        top_p=_or(s.top_p, VLLM_DEFAULTS["top_p"]),
        top_k=max(0, _or(s.top_k, VLLM_DEFAULTS["top_k"])),
        min_p=_or(s.min_p, VLLM_DEFAULTS["min_p"]),
        frequency_penalty=_or(s.frequency_penalty, VLLM_DEFAULTS["frequency_penalty"]),
        presence_penalty=_or(s.presence_penalty, VLLM_DEFAULTS["presence_penalty"]),
        repetition_penalty=_or(s.repetition_penalty, VLLM_DEFAULTS["repetition_penalty"]),
        min_tokens=s.min_tokens or 0,
        stop=list(s.stop),
        stop_token_ids=list(s.stop_token_ids),
        skip_special_tokens=s.skip_special_tokens if skip_special_tokens is None else skip_special_tokens,
        spaces_between_special_tokens=s.spaces_between_special_tokens,
        ignore_eos=s.ignore_eos,
        n=s.n,
        include_stop_str_in_output=s.no_stop_trim if include_stop is None else bool(include_stop),
        logit_bias={int(k): v for k, v in s.logit_bias},
    )
    if s.temperature is not None:
        p.temperature = s.temperature
    if s.max_tokens is not None:
        p.max_tokens = s.max_tokens
    if s.seed is not None:
        p.seed = s.seed
    if s.logprobs:
        p.logprobs = min(_or(s.top_logprobs, 1), VLLM_MAX_LOGPROBS)
    if chosen is not None:
        setattr(p, _VLLM_ONEOF[chosen[0]], chosen[1])
    return p


def vllm_generate_request(
    body: Mapping[str, Any],
    input_ids: Sequence[int],
    *,
    request_id: str,
    endpoint: Endpoint = "chat",
    original_text: str = "",
    constraint: tuple[str, str] | None = None,
    data_parallel_rank: int | None = None,
    stream: bool | None = None,
    skip_special_tokens: bool | None = None,
) -> vllm_pb.GenerateRequest:
    """vLLM ``GenerateRequest`` for one OpenAI body (module rules)."""
    s = read_sampling(body, endpoint)
    req = vllm_pb.GenerateRequest(
        request_id=request_id,
        tokenized=vllm_pb.TokenizedInput(original_text=original_text, input_ids=list(input_ids)),
        sampling_params=vllm_sampling_params(s, constraint, skip_special_tokens=skip_special_tokens),
        stream=s.stream if stream is None else stream,
    )
    if data_parallel_rank is not None:
        req.data_parallel_rank = data_parallel_rank
    return req


def build_generate_request(runtime: Runtime, body: Mapping[str, Any], input_ids: Sequence[int], **kw: Any) -> Any:
    """``sglang_generate_request`` or ``vllm_generate_request`` by ``runtime``
    (``require_reasoning`` is SGLang's only and is ignored for vLLM)."""
    if runtime == "sglang":
        return sglang_generate_request(body, input_ids, **kw)
    if runtime == "vllm":
        kw.pop("require_reasoning", None)
        return vllm_generate_request(body, input_ids, **kw)
    raise ValueError(f"unknown runtime {runtime!r}")
