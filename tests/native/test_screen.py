"""The body screen (smg._native.screen and its twin smg.api.validate.screen_py).

What must hold, for every API's validator and any body:
- the twins agree (the native one may say DOUBT where an integer does not fit a C
  long long, and nowhere else);
- the screen is sound: VALID only for a body the full validator accepts, CROSS only
  for one whose field types and field rules hold (the cross-field rules decide);
- a validator answers the same with the screen as without it (``shape(body) ==
  shape.judge(body)``);
- the common valid bodies are vouched for (else the screen saves nothing);
- a malformed spec is refused at construction by both twins.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg.api import validate
from smg.api.validate import screen_py as sp
from smg.api.validate.screen import CROSS, DOUBT, VALID, ScreenC, ScreenPy
from smg.server import parse_handlers
from smg.testing.twins import twin_params
from tests.cases.validation_cases import CASES

VALIDATORS = {
    "/v1/chat/completions": validate.CHAT, "/v1/completions": validate.COMPLETIONS,
    "/v1/messages": validate.MESSAGES, "/v1/embeddings": validate.EMBEDDINGS, "/rerank": validate.RERANK,
    "/v1/rerank": validate.RERANK_V1, "/generate": validate.GENERATE, "/v1/classify": validate.CLASSIFY,
    "/v1/messages/count_tokens": validate.COUNT_TOKENS, "/parse/reasoning": parse_handlers.REASONING,
    "/parse/function_call": parse_handlers.FUNCTION_CALL,
}
LLONG = (-(1 << 63), (1 << 63) - 1)


def _answer(inv):
    return None if inv is None else (inv.status, inv.code, inv.param, inv.message, inv.plain)


def _big_int_inside(v) -> bool:
    if type(v) is int:
        return not LLONG[0] <= v <= LLONG[1]
    if type(v) is list:
        return any(_big_int_inside(x) for x in v)
    if type(v) is dict:
        return any(_big_int_inside(x) for x in v.values())
    return False


def _judge_phases_1_2(shape, body) -> bool:
    """Whether the full walk and the field rules pass (what CROSS claims)."""
    from smg.api.validate._core import Bad, first_rule_fault, walk
    try:
        walk(body, shape.fields, shape.required)
    except Bad:
        return False
    return first_rule_fault(body, shape.rules) is None


def _check(path: str, body: dict) -> None:
    shape = VALIDATORS[path].check
    py = ScreenPy(*shape.spec).passes(body)
    if ScreenC is not None:
        c = ScreenC(*shape.spec).passes(body)
        if c != py:
            assert c == DOUBT and _big_int_inside(body), (path, body, py, c)
    if py == VALID:
        assert shape.judge(body) is None, (path, body)
    elif py == CROSS:
        assert _judge_phases_1_2(shape, body), (path, body)
    assert _answer(shape(body)) == _answer(shape.judge(body)), (path, body)


def _recorded():
    for case in CASES:
        if case["endpoint"] not in VALIDATORS:
            continue
        try:
            body = json.loads(case["body"])
        except ValueError:
            continue
        if type(body) is dict:
            yield case["endpoint"], body


RECORDED = list(_recorded())


def test_the_recorded_bodies_are_many():
    assert len(RECORDED) > 300
    assert {p for p, _ in RECORDED} >= {"/v1/chat/completions", "/v1/completions", "/v1/messages", "/generate"}


@pytest.mark.parametrize("path,body", RECORDED, ids=[f"{p}#{i}" for i, (p, _) in enumerate(RECORDED)])
def test_recorded_bodies_screen_soundly_and_alike(path, body):
    _check(path, body)


# -- the common valid bodies are vouched for -------------------------------------------

COMMON = [
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, VALID),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                                         {"role": "user", "content": "hi"},
                                                         {"role": "assistant", "content": ""},
                                                         {"role": "developer", "content": "x"}],
                              "stream": True, "temperature": 0.7, "top_p": 1, "max_tokens": 64, "n": 1,
                              "stop": ["\n", "END"], "seed": -3, "top_k": -1, "presence_penalty": -2.0,
                              "logit_bias": {"1": -100}, "user": "u", "metadata": {"k": "v"}}, VALID),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                              "stream_options": {"include_usage": True}}, CROSS),
    ("/v1/completions", {"model": "m", "prompt": "once upon", "max_tokens": 16, "temperature": 0}, VALID),
    ("/v1/completions", {"model": "m", "prompt": ["a", "b"], "stop": "x", "echo": False}, VALID),
    ("/v1/messages", {"model": "m", "max_tokens": 10, "system": "be brief",
                      "messages": [{"role": "user", "content": "hi"}]}, VALID),
    ("/v1/messages", {"model": "m", "max_tokens": 10, "temperature": 0.5,
                      "messages": [{"role": "user", "content": "hi"}]}, CROSS),
    ("/v1/embeddings", {"model": "m", "input": ["a", "b"]}, VALID),
    ("/generate", {"text": "hi", "stream": False, "sampling_params": {"temperature": 0, "max_new_tokens": 8}},
     VALID),
    ("/rerank", {"model": "m", "query": "q", "documents": ["a", "b"], "top_k": 1}, VALID),
]


@pytest.mark.parametrize("screen", twin_params(ScreenPy, ScreenC))
@pytest.mark.parametrize("path,body,expected", COMMON, ids=[f"{p}#{i}" for i, (p, _, _) in enumerate(COMMON)])
def test_common_valid_bodies_are_vouched_for(screen, path, body, expected):
    shape = VALIDATORS[path].check
    assert screen(*shape.spec).passes(body) == expected
    assert shape(body) is None


# -- the places where a screen must doubt ------------------------------------------------

DOUBTED = [
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "root", "content": "x"}]}),  # cross rule
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": ["user"], "content": "x"}]}),
    ("/v1/chat/completions", {"model": "m", "messages": []}),
    ("/v1/chat/completions", {"model": None, "messages": [{"role": "user", "content": "x"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": 1}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 2.5}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ""}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": 0}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 1e39}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1 << 64}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x", "name": "n"}]}),
    ("/v1/messages", {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": ""}]}),
    ("/v1/messages", {"model": "", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}),
    ("/v1/messages", {"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
    ("/v1/completions", {"model": "m", "prompt": []}),
    ("/rerank", {"model": "m", "query": "", "documents": ["a"]}),
]


@pytest.mark.parametrize("screen", twin_params(ScreenPy, ScreenC))
@pytest.mark.parametrize("path,body", DOUBTED, ids=[f"{p}#{i}" for i, (p, _) in enumerate(DOUBTED)])
def test_bodies_the_screen_cannot_vouch_for_are_doubted(screen, path, body):
    shape = VALIDATORS[path].check
    assert screen(*shape.spec).passes(body) == DOUBT
    _check(path, body)


def test_a_list_valued_role_is_an_answer_not_a_crash():
    # a role that is not a string (unhashable) is judged as a wrong type
    bad = validate.CHAT.check({"model": "m", "messages": [{"role": [], "content": "x"}]})
    assert bad is not None and bad.status == 400 and bad.code == "invalid_type" and bad.param == "messages[0].role"


# -- generated bodies ---------------------------------------------------------------------

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([-1, 0, 1, 2, 4, 10, 11, 128,
                     129, 2**31, 2**32, -2**31 - 1, 2**63, 2**64, -2**63 - 1]),
                     st.floats(allow_nan=False, allow_infinity=False, min_value=-4e38, max_value=4e38),
                     st.sampled_from([0.0, 1.0, 2.0, -2.0, 0.5, 2.0000001]), st.sampled_from(["", "x", "user", "auto"]))
_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "developer", "root", "tool",
                                                           "bogus", 3]),
                                  "content": st.one_of(st.sampled_from(["", "hi"]), st.none(), st.integers(0, 1),
                                                       st.lists(st.just({"type": "text", "text": "t"}), max_size=1))},
                                 optional={"name": st.just("n")})
_VALUES = st.recursive(st.one_of(_SCALARS, st.lists(_MESSAGE, max_size=3)),
                       lambda inner: st.one_of(st.lists(inner, max_size=5),
                                               st.dictionaries(st.sampled_from(["a", "include_usage", "temperature",
                                                                                "max_new_tokens", "type", "name"]),
                                                               inner, max_size=3)),
                       max_leaves=8)


@st.composite
def _bodies(draw):
    path = draw(st.sampled_from(sorted(VALIDATORS)))
    shape = VALIDATORS[path].check
    names = sorted(shape.fields) + ["unknown_field"]
    body = {}
    # required fields present in a valid-looking form most of the time, to reach deep
    for name in shape.required:
        if draw(st.integers(0, 9)):
            body[name] = draw(_typical(name))
    for name in draw(st.lists(st.sampled_from(names), max_size=6, unique=True)):
        body[name] = draw(st.one_of(_typical(name), _VALUES))
    return path, body


def _typical(name: str):
    if name == "messages":
        return st.lists(_MESSAGE, min_size=0, max_size=3)
    if name in ("model", "text", "query", "prompt", "reasoning_parser", "tool_call_parser"):
        return st.sampled_from(["m", "", "x"])
    if name == "documents":
        return st.lists(st.sampled_from(["a", ""]), max_size=2)
    if name == "max_tokens":
        return st.integers(-1, 20)
    return _SCALARS


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies())
def test_generated_bodies_screen_soundly_and_alike(case):
    path, body = case
    _check(path, body)


# -- malformed specs ------------------------------------------------------------------------

BAD_SPECS = [
    ({"a": (99, False, None, None)}, (), {}, frozenset()),
    ({"a": (sp.T_INT, False, 5, 1)}, (), {}, frozenset()),
    ({"a": (sp.T_INT, False, None, 1)}, (), {}, frozenset()),
    ({"a": (sp.T_LIST, False, "x", None)}, (), {}, frozenset()),
    ({"a": (sp.T_OBJ, False, {}, ["r"])}, (), {}, frozenset()),
    ({"a": (sp.T_TEXT, False, {"user"}, False)}, (), {}, frozenset()),
    ({"a": (sp.T_STR, False, None)}, (), {}, frozenset()),
    ({"a": (sp.T_STR, False, None, None)}, (), {"b": (sp.R_NONE, None, None, None)}, frozenset()),
    ({"a": (sp.T_INT, False, 0, 9)}, (), {"a": (sp.R_INT, 1.5, None, None)}, frozenset()),
    ({"a": (sp.T_NUM, False, None, None)}, (), {"a": (sp.R_DEC, "0", None, False)}, frozenset()),
    ({"a": (sp.T_STR, False, None, None)}, ["a"], {}, frozenset()),
]


@pytest.mark.parametrize("screen", twin_params(ScreenPy, ScreenC))
@pytest.mark.parametrize("spec", BAD_SPECS, ids=[str(i) for i in range(len(BAD_SPECS))])
def test_a_malformed_spec_is_refused(screen, spec):
    with pytest.raises(ValueError):
        screen(*spec)


@pytest.mark.parametrize("screen", twin_params(ScreenPy, ScreenC))
def test_cross_fields_none_means_the_cross_rules_always_run(screen):
    s = screen({"a": (sp.T_STR, False, None, None)}, ("a",), {}, None)
    assert s.passes({"a": "x"}) == CROSS
    assert s.passes({}) == DOUBT
    s = screen({"a": (sp.T_STR, False, None, None)}, ("a",), {}, frozenset(("b",)))
    assert s.passes({"a": "x"}) == VALID
    assert s.passes({"a": "x", "b": None}) == CROSS  # a cross field, even null, runs the rules


def test_the_native_codes_are_the_twins():
    if ScreenC is None:
        pytest.skip("native extension not built")
    import smg._native.screen as c
    for name in sp.__all__:
        if name != "Screen":
            assert getattr(c, name) == getattr(sp, name), name
