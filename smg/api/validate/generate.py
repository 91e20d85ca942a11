"""Validation of ``POST /generate`` bodies (SGLang's native API).

SMG decodes this route's body without typed validation: a wrong field type is a plain
``422`` (text/plain); ranges of the sampling parameters are the worker's to judge."""
from __future__ import annotations

from smg.api.validate._core import (I32_MAX, I32_MIN, INVALID_VALUE, Bad, Shape, opt, opt_bool, opt_f32,
                                    opt_i32, opt_list_of, opt_string, opt_u32, struct, wrong)


def _id(v) -> None:
    opt_i32(v)
    if v is None:
        raise wrong(v, "i32")


_IDS = opt_list_of(_id)
_ID_ARRAYS = opt_list_of(opt_list_of(_id))
_EITHER = "a token id or an array of token ids"


def _token_ids(v) -> None:
    """An array of token ids (i32), or an array of arrays of them; the first item
    decides which (a first item that is neither is refused as such)."""
    if v is None:
        return
    if type(v) is not list:
        raise wrong(v, "an array of token ids or an array of token id arrays")
    if not v:
        return
    first = v[0]
    if type(first) is list:
        _ID_ARRAYS(v)
        return
    if type(first) is not int:
        e = wrong(first, _EITHER)
    elif not I32_MIN <= first <= I32_MAX:
        e = Bad(INVALID_VALUE, f"invalid value: integer `{first}`, expected {_EITHER}")
    else:
        _IDS(v)
        return
    e.where.append(0)
    raise e


_SAMPLING = opt(struct({
    "temperature": opt_f32,
    "max_new_tokens": opt_u32,
}, (), "struct SamplingParams"))

FIELDS = {
    "text": opt_string,
    "input_ids": _token_ids,
    "model": opt_string,
    "sampling_params": _SAMPLING,
    "stream": opt_bool,
    "return_logprob": opt_bool,
    "logprob_start_len": opt_i32,
    "rid": opt_string,
    "lora_path": opt_string,
}


validate = Shape(FIELDS, (), plain=True)
