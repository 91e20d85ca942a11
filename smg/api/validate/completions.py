"""Validation of ``POST /v1/completions`` bodies (OpenAI legacy completions with the
SGLang sampling extensions SMG types): field types, SMG's ranges and its cross-field
rules, in SMG's order (smg/api/validate/_core.py)."""
from __future__ import annotations

from smg.api.validate._core import (Shape, dec_range, f32_value, int_range, opt, opt_bool, opt_f32, opt_i32, opt_i64,
                                    opt_list_of, opt_map, opt_map_of, opt_string, opt_string_or_strings, opt_u32,
                                    opt_u64, rule_fault, rules, screened, stop_rule, string, string_or_strings, struct,
                                    top_k_rule)
from smg.api.validate.screen import R_ITEMS

_STREAM_OPTIONS = opt(struct({"include_usage": opt_bool, "continuous_usage_stats": opt_bool}, (),
                             "struct StreamOptions"))

FIELDS = {
    "model": string,
    "prompt": string_or_strings,
    "suffix": opt_string,
    "max_tokens": opt_u32,
    "temperature": opt_f32,
    "top_p": opt_f32,
    "n": opt_u32,
    "stream": opt_bool,
    "stream_options": _STREAM_OPTIONS,
    "logprobs": opt_u32,
    "echo": opt_bool,
    "stop": opt_string_or_strings,
    "presence_penalty": opt_f32,
    "frequency_penalty": opt_f32,
    "best_of": opt_u32,
    "logit_bias": opt_map_of(f32_value),
    "user": opt_string,
    "seed": opt_i64,
    "top_k": opt_i32,
    "min_p": opt_f32,
    "min_tokens": opt_u32,
    "repetition_penalty": opt_f32,
    "regex": opt_string,
    "ebnf": opt_string,
    "json_schema": opt_string,
    "stop_token_ids": opt_list_of(opt_u32),
    "no_stop_trim": opt_bool,
    "ignore_eos": opt_bool,
    "skip_special_tokens": opt_bool,
    "lora_path": opt_string,
    "session_params": opt_map,
    "return_hidden_states": opt_bool,
    "sampling_seed": opt_u64,
}
REQUIRED = ("model", "prompt")


@screened((R_ITEMS, None, None, None))
def _prompt_rule(name, v):
    if type(v) is list and not v:
        return rule_fault(name, "prompt_empty", "prompt array cannot be empty")
    return None


_PENALTY = dec_range(-2.0, 2.0)

RULES = rules({
    "prompt": _prompt_rule,
    "temperature": dec_range(0.0, 2.0),
    "top_p": dec_range(0.0, 1.0, lo_open=True),
    "n": int_range(1, 128),
    "stop": stop_rule,
    "presence_penalty": _PENALTY,
    "frequency_penalty": _PENALTY,
    "top_k": top_k_rule,
    "min_p": dec_range(0.0, 1.0),
    "repetition_penalty": dec_range(0.0, 2.0),
})


def _cross(body: dict):
    get = body.get
    if get("stream_options") is not None and not get("stream"):
        return rule_fault(None, "stream_options_requires_stream",
                          "The 'stream_options' parameter is only allowed when 'stream' is enabled")
    lo, hi = get("min_tokens"), get("max_tokens")
    if lo is not None and hi is not None and lo > hi:
        return rule_fault(None, "min_tokens_exceeds_max", "min_tokens cannot exceed max_tokens")
    return None


validate = Shape(FIELDS, REQUIRED, RULES, _cross, frozenset(("stream_options", "min_tokens")))
