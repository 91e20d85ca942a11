"""Split invariance of every tool parser (Hypothesis).

For well-formed output built from random calls (each format rendered as its chat template
writes it), the stream's deltas for a random split — concatenated per call index — must equal
``parse`` of the whole text: same content, same names, same arguments.  For arbitrary text
made of marker fragments, no exception may escape, complete mode returns the text as content
when it finds no call, and every call's arguments are JSON.
"""
from __future__ import annotations

import keyword

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg.parsers.tools import create

# names are identifiers in every format, Python keywords excluded (``[or()]`` is not a
# pythonic call: the complete parse refuses it, and the split invariance holds for
# well-formed output)
NAME = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(lambda n: not keyword.iskeyword(n))
KEY = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda n: not keyword.iskeyword(n))
# Content outside frames: no character that can start a marker of any format.
PLAIN = st.text(st.sampled_from(list("abc xyz\n.,:;!?é中😀-_=()0123")), max_size=12)
# Bare parameter values of the tag formats (no "<", which opens a tag).
XML_VALUE = st.text(st.sampled_from(list("abcXYZ 019.,:é中😀-_\n\"'{}[]")), min_size=0, max_size=10)
JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEY, inner, max_size=3)),
    max_leaves=8,
)
JSON_ARGS = st.dictionaries(KEY, JSON_VALUE, max_size=4)
RAW_SAFE_ARGS = st.dictionaries(KEY, st.one_of(st.integers(-999, 999), st.text("abc é中", max_size=5)), max_size=3)
XML_ARGS = st.dictionaries(KEY, XML_VALUE, max_size=4)
XML_ARGS_SOME = st.dictionaries(KEY, XML_VALUE, min_size=1, max_size=4)  # Step-3 needs one
PY_ARGS = st.dictionaries(
    KEY,
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text("abc é'\"\\", max_size=6)),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEY, inner, max_size=2)),
        max_leaves=5,
    ),
    max_size=3,
)


def calls_of(args_strategy, max_calls=3):
    return st.lists(st.tuples(NAME, args_strategy), min_size=1, max_size=max_calls)


def _j(v, compact):
    return json.dumps(v, ensure_ascii=not compact, separators=(",", ":") if compact else (", ", ": "))


def r_json(calls, c):
    objs = [{"name": n, "arguments": a} for n, a in calls]
    return _j(objs[0] if len(objs) == 1 else objs, c)


def r_qwen(calls, c):
    return "\n".join(f"<tool_call>\n{_j({'name': n, 'arguments': a}, c)}\n</tool_call>" for n, a in calls)


def r_llama(calls, c):
    return "<|python_tag|>" + "; ".join(_j({"name": n, "parameters": a}, c) for n, a in calls)


def r_mistral(calls, c):
    return "[TOOL_CALLS] " + _j([{"name": n, "arguments": a} for n, a in calls], c)


def r_cohere(calls, c):
    return "<|START_ACTION|>" + _j([{"tool_name": n, "parameters": a} for n, a in calls], c) + "<|END_ACTION|>"


def r_inkling(calls, c):
    return "".join(
        f"<|message_model|>{n}<|content_invoke_tool_json|>{_j({'name': n, 'args': a}, c)}<|end_message|>"
        for n, a in calls
    )


def r_deepseek(calls, c):
    body = "\n".join(
        f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{_j(a, c)}\n```<｜tool▁call▁end｜>"
        for n, a in calls
    )
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


def r_deepseek31(calls, c):
    body = "".join(f"<｜tool▁call▁begin｜>{n}<｜tool▁sep｜>{_j(a, c)}<｜tool▁call▁end｜>" for n, a in calls)
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


def r_kimik2(calls, c):
    body = "".join(
        f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{_j(a, c)}<|tool_call_end|>"
        for i, (n, a) in enumerate(calls)
    )
    return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"


def r_qwen_xml(calls, c):
    out = []
    for n, a in calls:
        params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in a.items())
        out.append(f"<tool_call>\n<function={n}>\n{params}</function>\n</tool_call>")
    return "\n".join(out)


def r_glm45(calls, c):
    return "".join(
        f"<tool_call>{n}\n" + "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>\n" for k, v in a.items())
        + "</tool_call>"
        for n, a in calls
    )


def r_glm47(calls, c):
    return "".join(
        f"<tool_call>{n}" + "".join(f"<arg_key>{k}</arg_key><arg_value>{v}</arg_value>" for k, v in a.items())
        + "</tool_call>"
        for n, a in calls
    )


def r_minimax(calls, c):
    inv = "".join(
        f'<invoke name="{n}">\n' + "".join(f'<parameter name="{k}">{v}</parameter>\n' for k, v in a.items())
        + "</invoke>\n"
        for n, a in calls
    )
    return f"<minimax:tool_call>\n{inv}</minimax:tool_call>"


def r_step3(calls, c):
    inv = "".join(
        f'<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="{n}">'
        + "".join(f'<steptml:parameter name="{k}">{v}</steptml:parameter>' for k, v in a.items())
        + "</steptml:invoke><｜tool_call_end｜>"
        for n, a in calls
    )
    return f"<｜tool_calls_begin｜>{inv}<｜tool_calls_end｜>"


def _dsml(block):
    def render(calls, c):
        inv = "".join(
            f'<｜DSML｜invoke name="{n}">\n'
            + "".join(f'<｜DSML｜parameter name="{k}" string="true">{v}</｜DSML｜parameter>\n' for k, v in a.items())
            + "</｜DSML｜invoke>\n"
            for n, a in calls
        )
        return f"\n\n<｜DSML｜{block}>\n{inv}</｜DSML｜{block}>"
    return render


def r_dsml_v41(calls, c):
    inv = "".join(
        f'<｜DSML｜ invoke name="{n}">\n'
        + "".join(f'<｜DSML｜ parameter name="{k}" string="true">{v}</｜DSML｜ parameter>\n' for k, v in a.items())
        + "</｜DSML｜ invoke>\n"
        for n, a in calls
    )
    return f"\n\n<｜DSML｜ calls>\n{inv}</｜DSML｜ calls>" if c else "\n\n" + inv


def r_kimi_k3(calls, c):
    inv = "".join(
        f'<|open|>call tool="{n}" index="{i}"<|sep|>'
        + "".join(f'<|open|>argument key="{k}" type="string"<|sep|>{v}<|close|>argument<|sep|>' for k, v in a.items())
        + "<|close|>call<|sep|>"
        for i, (n, a) in enumerate(calls)
    )
    return f"<|close|>response<|sep|><|open|>tools<|sep|>{inv}<|close|>tools<|sep|>"


def r_pythonic(calls, c):
    return "[" + ", ".join(f"{n}(" + ", ".join(f"{k}={v!r}" for k, v in a.items()) + ")" for n, a in calls) + "]"


def r_sarashina(calls, c):
    return "<|tool_calls|>" + repr([{"name": n, "arguments": a} for n, a in calls])


# parser -> (renderer, args strategy, content allowed before, content after is kept)
FORMATS = {
    "json": (r_json, JSON_ARGS, True, True),
    "qwen": (r_qwen, JSON_ARGS, True, False),
    "llama": (r_llama, JSON_ARGS, False, False),
    "mistral": (r_mistral, JSON_ARGS, True, False),
    "cohere": (r_cohere, JSON_ARGS, True, True),
    "inkling": (r_inkling, JSON_ARGS, True, True),
    "deepseek": (r_deepseek, JSON_ARGS, True, False),
    "deepseek31": (r_deepseek31, JSON_ARGS, True, False),
    "kimik2": (r_kimik2, RAW_SAFE_ARGS, True, False),
    "qwen_xml": (r_qwen_xml, XML_ARGS, True, False),
    "qwen_coder": (r_qwen_xml, XML_ARGS, True, False),
    "glm45_moe": (r_glm45, XML_ARGS, True, False),
    "glm47_moe": (r_glm47, XML_ARGS, True, False),
    "minimax_m2": (r_minimax, XML_ARGS, True, False),
    "step3": (r_step3, XML_ARGS_SOME, True, False),
    "deepseek32": (_dsml("function_calls"), XML_ARGS, True, False),
    "deepseek_v4": (_dsml("tool_calls"), XML_ARGS, True, False),
    "deepseek_v41": (r_dsml_v41, XML_ARGS, True, False),
    "kimi_k3": (r_kimi_k3, XML_ARGS, True, False),
    "pythonic": (r_pythonic, PY_ARGS, True, True),
    "sarashina": (r_sarashina, PY_ARGS, True, True),
}

SCHEMA_TOOLS = None  # no tools list: exercises the untyped coercion path


def run_stream(parser_name, text, cuts, tools=SCHEMA_TOOLS):
    p = create(parser_name, tools)
    pieces, prev = [], 0
    for c in sorted(set(cuts)) + [len(text)]:
        if c > prev:
            pieces.append(text[prev:c])
            prev = c
    content, calls = [], {}
    for d in [p.feed(x) for x in pieces] + [p.finish()]:
        content.append(d.normal_text)
        for c in d.calls:
            entry = calls.setdefault(c.index, [None, ""])
            if c.name is not None:
                assert entry[0] is None, "name sent twice"
                assert c.id and c.id.startswith("call_")
                entry[0] = c.name
            else:
                assert entry[0] is not None, "arguments before the name"
            entry[1] += c.arguments
    assert sorted(calls) == list(range(len(calls))), "indices are 0..n-1"
    return "".join(content), [(n, a) for _, (n, a) in sorted(calls.items())]


def run_complete(parser_name, text, tools=SCHEMA_TOOLS):
    r = create(parser_name, tools).parse(text)
    assert [c.index for c in r.calls] == list(range(len(r.calls)))
    return r.normal_text, [(c.name, c.arguments) for c in r.calls]


@st.composite
def well_formed(draw, parser_name):
    render, args, before, after = FORMATS[parser_name]
    calls = draw(calls_of(args, 1 if parser_name == "json" and draw(st.booleans()) else 3))
    body = render(calls, draw(st.booleans()))
    pre = draw(PLAIN) if before else ""
    post = draw(PLAIN) if after else ""
    text = pre + body + post
    cuts = draw(st.lists(st.integers(0, len(text)), max_size=12))
    return text, cuts, calls


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("parser_name", sorted(FORMATS))
@SETTINGS
@given(data=st.data())
def test_stream_equals_complete(parser_name, data):
    text, cuts, calls = data.draw(well_formed(parser_name))
    complete = run_complete(parser_name, text)
    assert [n for n, _ in complete[1]] == [n for n, _ in calls], text
    for _, a in complete[1]:
        json.loads(a)
    assert run_stream(parser_name, text, cuts) == complete
    if len(text) <= 400:  # one character at a time (bounded to keep the run short)
        assert run_stream(parser_name, text, range(len(text) + 1)) == complete


def test_json_arguments_are_canonical():
    args = {"b": [1, 2.5, None], "a": {"x": "é\n"}}
    text = r_qwen([("f", args)], False)
    assert run_complete("qwen", text)[1] == [("f", json.dumps(args, ensure_ascii=False, separators=(",", ":")))]


FRAGMENTS = st.lists(
    st.sampled_from([
        "<tool_call>", "</tool_call>", "{", "}", "[", "]", '"name"', ":", ",", '"f"', '"arguments"',
        "<function=f>", "<parameter=a>", "</parameter>", "</function>", "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>",
        "<|tool_calls_section_begin|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>",
        "<|tool_call_end|>", "[TOOL_CALLS]", "<|python_tag|>", "f(", ")", "a=1", "'x'", "<arg_key>",
        "</arg_key>", "<arg_value>", "</arg_value>", "<minimax:tool_call>", '<invoke name="f">',
        "</invoke>", "<｜DSML｜function_calls>", '<｜DSML｜invoke name="f">', "<|START_ACTION|>",
        "<|END_ACTION|>", "<|content_invoke_tool_json|>", "<|end_message|>", "<|open|>tools<|sep|>",
        "<|tool_calls|>", "\\", "\\u12", "1e", "tru", "\n", " ", "x", "<", "<|", "｜", "é",
    ]),
    max_size=25,
)


@pytest.mark.parametrize("parser_name", sorted(FORMATS) + ["passthrough"])
@settings(max_examples=20, deadline=None)
@given(frags=FRAGMENTS, cuts=st.lists(st.integers(0, 400), max_size=10))
def test_garbage_never_raises(parser_name, frags, cuts):
    text = "".join(frags)
    content, calls = run_complete(parser_name, text)
    if not calls:
        assert content.strip() == text.strip() or parser_name in STRIPS_MARKERS
    for _, a in calls:
        json.loads(a)
    run_stream(parser_name, text, [])
    run_stream(parser_name, text, [c for c in cuts if c <= len(text)])


# Formats that remove framing tokens from content even when no call is found.
STRIPS_MARKERS = {"cohere", "inkling", "kimi_k3", "pythonic", "json"}
