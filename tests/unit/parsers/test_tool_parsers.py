"""Vectors for every tool parser, written from the formats (and the chat templates that emit
them), in complete mode and streamed at every split point; plus the registry."""
from __future__ import annotations

import json

import pytest

from smg.parsers.tools import create, for_model, names, new_call_id
from smg.parsers.tools import registry

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {
            "city": {"type": "string"}, "n": {"type": "integer"}, "x": {"type": "number"},
            "flag": {"type": "boolean"}, "obj": {"type": "object"}, "arr": {"type": "array"},
        }}}},
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}},
]
GW = "get_weather"
PARIS = '{"city":"Paris"}'

DS_B, DS_E = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DS_CB, DS_CE, DS_S = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
K2_B, K2_E = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
K2_CB, K2_A, K2_CE = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"


def qwen_call(name, args):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


# Marks a vector holding a malformed frame next to valid calls: complete mode answers as SMG
# does; a stream, which cannot wait for the end, may differ (see smg.parsers.tools.base).
MALFORMED = "malformed"

# (parser, text, content, [(name, arguments)][, MALFORMED])
VECTORS = [
    # passthrough
    ("passthrough", qwen_call(GW, {}), qwen_call(GW, {}), []),
    # json
    ("json", '{"name": "get_weather", "arguments": {"city": "Paris"}}', "", [(GW, PARIS)]),
    ("json", 'before {"name": "get_weather", "parameters": {"city": "Paris"}} after', "before  after", [(GW, PARIS)]),
    ("json", '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "search", "arguments": {}}]',
     "", [(GW, PARIS), ("search", "{}")]),
    ("json", 'a {"x": 1} b', "a  b", []),
    ("json", 'use {braces} then {"name": "search"} z', "use {braces} then  z", [("search", "{}")]),
    ("json", '{"name": "get_weather", "arguments": {"city": ', '{"name": "get_weather", "arguments": {"city": ', []),
    # qwen (Hermes)
    ("qwen", "hi " + qwen_call(GW, {"city": "Paris"}) + " bye", "hi ", [(GW, PARIS)]),
    ("qwen", qwen_call(GW, {"city": "Paris"}) + "\n" + qwen_call("search", {"q": "x"}), "",
     [(GW, PARIS), ("search", '{"q":"x"}')]),
    ("qwen", qwen_call(GW, {"a": {"b": [1, 2.5, None, True]}, "u": "é中😀\n\"q\""}), "",
     [(GW, '{"a":{"b":[1,2.5,null,true]},"u":"é中😀\\n\\"q\\""}')]),
    ("qwen", '<tool_call>\n{"name": "f", "arguments": {"u": "\\u00e9\\ud83d\\ude00", "z": 1e5}}\n</tool_call>', "",
     [("f", '{"u":"é😀","z":100000.0}')]),
    ("qwen", '<tool_call>\n{"arguments": {"a": 1}, "name": "get_weather"}\n</tool_call>', "", [(GW, '{"a":1}')]),
    ("qwen", qwen_call("not_a_request_tool", {"a": 1}), "", [("not_a_request_tool", '{"a":1}')]),
    ("qwen", '<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n</tool_call>', "", [(GW, "{}")]),
    ("qwen", "x <tool_call>\nnot json\n</tool_call> y", "x <tool_call>\nnot json\n</tool_call> y", []),
    ("qwen", "a" + qwen_call(GW, {}) + "b<tool_call>bad</tool_call>c", "a", [(GW, "{}")], MALFORMED),
    ("qwen", "a<tool_call>\nbad\n</tool_call>b" + qwen_call(GW, {}) + "c", "a", [(GW, "{}")], MALFORMED),
    ("qwen", '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>',
     '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', []),
    ("qwen", "a" + qwen_call(GW, {}) + 'b<tool_call>\n{"name": "f", "argu', "a", [(GW, "{}")], MALFORMED),
    ("qwen", 'a<tool_call>\n{"name": "get_weather", "arguments": {"a": 1}}\n',
     'a<tool_call>\n{"name": "get_weather", "arguments": {"a": 1}}\n', []),
    ("qwen", "plain <tool_ca", "plain <tool_ca", []),
    # llama 3.x
    ("llama", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [(GW, PARIS)]),
    ("llama", '{"name": "get_weather", "arguments": {"city": "Paris"}}; {"name": "search", "parameters": {}}', "",
     [(GW, "{}"), ("search", "{}")]),
    ("llama", 'pre <|python_tag|>{"name": "get_weather", "parameters": {}}', "pre ", [(GW, "{}")]),
    ("llama", '<|python_tag|>{"name": "get_weather", "parameters": {}} post',
     '<|python_tag|>{"name": "get_weather", "parameters": {}} post', []),
    ("llama", 'pre {"name": "get_weather", "parameters": {}}', 'pre {"name": "get_weather", "parameters": {}}', []),
    # mistral
    ("mistral", 'hi [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
     '{"name": "search", "arguments": {}}] bye', "hi ", [(GW, PARIS), ("search", "{}")]),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', []),
    # cohere
    ("cohere", 'pre<|START_ACTION|>[{"tool_name": "get_weather", "parameters": {"city": "Paris"}}, '
     '{"tool_name": "search", "parameters": {}}]<|END_ACTION|>post', "prepost", [(GW, PARIS), ("search", "{}")]),
    ("cohere", "<|START_RESPONSE|>hi<|END_RESPONSE|>", "hi", []),
    # inkling
    ("inkling", 'pre<|message_model|>get_weather<|content_invoke_tool_json|>{"name":"get_weather","args":'
     '{"city":"Paris"}}<|end_message|>post', "prepost", [(GW, PARIS)]),
    ("inkling", '<|content_invoke_tool_json|>{"name":"nope","args":{}}<|end_message|>', "", []),
    ("inkling", "a<|content_invoke_tool_json|>{bad}<|end_message|>b", "ab", []),
    # deepseek V3
    ("deepseek", f"pre{DS_B}{DS_CB}function{DS_S}get_weather\n```json\n{{\"city\": \"Paris\"}}\n```{DS_CE}\n"
     f"{DS_CB}function{DS_S}search\n```json\n{{}}\n```{DS_CE}{DS_E}post", "pre", [(GW, PARIS), ("search", "{}")]),
    ("deepseek", f"x{DS_B}{DS_CB}function{DS_S}get_weather\n```json\n{{\"city\": ",
     f"x{DS_B}{DS_CB}function{DS_S}get_weather\n```json\n{{\"city\": ", []),
    # deepseek V3.1
    ("deepseek31", f"pre{DS_B}{DS_CB}get_weather{DS_S}{{\"city\": \"Paris\"}}{DS_CE}{DS_CB}search{DS_S}{{}}{DS_CE}{DS_E}post",
     "pre", [(GW, PARIS), ("search", "{}")]),
    ("deepseek31", f"p{DS_B}{DS_CB}f{DS_S}bad{DS_CE}{DS_CB}g{DS_S}{{}}{DS_CE}{DS_E}q", "p", [("g", "{}")], MALFORMED),
    ("deepseek31", f"p{DS_B}{DS_CB}f{DS_S}bad{DS_CE}{DS_E}q", f"p{DS_B}{DS_CB}f{DS_S}bad{DS_CE}{DS_E}q", []),
    # DSML
    ("deepseek32", 'pre\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n'
     '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
     '<｜DSML｜parameter name="n" string="false">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
     '<｜DSML｜invoke name="search">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>post',
     "pre", [(GW, '{"city":"Paris","n":3}'), ("search", "{}")]),
    ("deepseek_v4", 'pre<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n'
     '<｜DSML｜parameter name="city" string="true"> Paris </｜DSML｜parameter>\n'
     '<｜DSML｜parameter name="n" string="false">abc</｜DSML｜parameter>\n'
     '</｜DSML｜invoke>\n</｜DSML｜tool_calls>', "pre", [(GW, '{"city":" Paris ","n":"abc"}')]),
    ("deepseek_v41", 'pre\n\n<｜DSML｜ calls>\n<｜DSML｜ invoke name="get_weather">\n'
     '<｜DSML｜ parameter name="city" string="true">Paris</｜DSML｜ parameter>\n'
     '<｜DSML｜ parameter name="o" string="false">{"a":[1,2.0,-0]}</｜DSML｜ parameter>\n</｜DSML｜ invoke>\n'
     '</｜DSML｜ calls>post', "pre", [(GW, '{"city": "Paris", "o": {"a": [1, 2.0, -0.0]}}')]),
    ("deepseek_v4.1", 'a \n<｜DSML｜ invoke name="f">\n</｜DSML｜ invoke>', "a \n", [("f", "{}")]),
    # qwen_xml / qwen_coder: values coerced by the request's schema
    ("qwen_xml", "<tool_call>\n<function=get_weather>\n<parameter=city>\n123\n</parameter>\n<parameter=n>\n 7 \n"
     "</parameter>\n<parameter=flag>\nFalse\n</parameter>\n<parameter=arr>\n[1, \"a\"]\n</parameter>\n"
     "<parameter=x>\n3\n</parameter>\n<parameter=obj>\n{'a': 1}\n</parameter>\n</function>\n</tool_call>",
     "", [(GW, '{"city":"123","n":7,"flag":false,"arr":[1,"a"],"x":3,"obj":"{\'a\': 1}"}')]),
    ("qwen_coder", "pre <tool_call>\n<function=search>\n<parameter=q>x</parameter>\n</function>\n</tool_call>\n"
     "<tool_call>\n<function=get_weather>\n<parameter=n>abc</parameter>\n<parameter=x>1.5</parameter>\n"
     "</function>\n</tool_call> post", "pre ", [("search", '{"q":"x"}'), (GW, '{"n":"abc","x":1.5}')]),
    ("qwen_xml", "<tool_call>\n<function=nope>\n<parameter=a>\nTrue\n</parameter>\n<parameter=b>\n[1, 2]\n"
     "</parameter>\n<parameter=c>\n007\n</parameter>\n</function>\n</tool_call>", "",
     [("nope", '{"a":true,"b":[1,2],"c":"007"}')]),
    ("qwen_xml", "<tool_call>\n<function=get_weather>\n<parameter=city>Par",
     "<tool_call>\n<function=get_weather>\n<parameter=city>Par", []),
    # glm
    ("glm45_moe", "pre<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
     "<arg_key>n</arg_key>\n<arg_value>3</arg_value>\n</tool_call>mid<tool_call>search\n</tool_call>post",
     "pre", [(GW, '{"city":"Paris","n":3}'), ("search", "{}")]),
    ("glm47_moe", "pre<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
     "<arg_key>n</arg_key><arg_value>3</arg_value></tool_call><tool_call>search</tool_call>post",
     "pre", [(GW, '{"city":"Paris","n":3}'), ("search", "{}")]),
    # minimax
    ("minimax_m2", 'pre<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
     '<parameter name="n">3</parameter>\n</invoke>\n<invoke name="search">\n</invoke>\n</minimax:tool_call>post',
     "pre", [(GW, '{"city":"Paris","n":3}'), ("search", "{}")]),
    # step3
    ("step3", 'pre<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="get_weather">'
     '<steptml:parameter name="city">Paris</steptml:parameter><steptml:parameter name="n">3</steptml:parameter>'
     "</steptml:invoke><｜tool_call_end｜><｜tool_calls_end｜>post", "pre", [(GW, '{"city":"Paris","n":3}')]),
    # kimi k2: arguments as written
    ("kimik2", f"pre{K2_B}{K2_CB}functions.get_weather:0{K2_A}{{\"city\": \"Paris\"}}{K2_CE}"
     f"{K2_CB}functions.search:1{K2_A} {{}} {K2_CE}{K2_E}post", "pre", [(GW, '{"city": "Paris"}'), ("search", "{}")]),
    ("kimik2", f"{K2_B}{K2_CB}functions.f:0{K2_A}{{}}{K2_CE}", "", [("f", "{}")]),
    ("kimik2", f"{K2_B}{K2_CB}functions.get_weather:0{K2_A}not json{K2_CE}{K2_E}",
     f"{K2_B}{K2_CB}functions.get_weather:0{K2_A}not json{K2_CE}{K2_E}", []),
    # kimi k3
    ("kimi_k3", '<|open|>response<|sep|>Hello<|close|>response<|sep|><|open|>tools<|sep|>'
     '<|open|>call tool="get_weather" index="0"<|sep|><|open|>argument key="city" type="string"<|sep|>Paris'
     '<|close|>argument<|sep|><|open|>argument key="n" type="integer"<|sep|>3<|close|>argument<|sep|>'
     "<|close|>call<|sep|><|close|>tools<|sep|>", "Hello", [(GW, '{"city":"Paris","n":3}')]),
    ("minimax_m2", '<minimax:tool_call>\n<invoke name="f">\n<parameter name="k0">[1, 2]</parameter>\n'
     '<parameter name="k1">None</parameter>\n</invoke>\n</minimax:tool_call>', "", [("f", '{"k0":"[1, 2]","k1":null}')]),
    ("step3", 'hi<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="f">'
     "</steptml:invoke><｜tool_call_end｜><｜tool_calls_end｜>", 'hi<｜tool_calls_begin｜><｜tool_call_begin｜>function'
     '<｜tool_sep｜><steptml:invoke name="f"></steptml:invoke><｜tool_call_end｜><｜tool_calls_end｜>', []),
    ("cohere", ' a <|START_ACTION|>[{"tool_name": "f", "parameters": {}}]<|END_ACTION|> b ', "a  b", [("f", "{}")]),
    # pythonic
    ("pythonic", "[get_weather(city=\"Paris\", n=3), search(city='x', flag=True, obj={\"a\": None})]", "",
     [(GW, '{"city":"Paris","n":3}'), ("search", '{"city":"x","flag":true,"obj":{"a":null}}')]),
    ("pythonic", 'pre [get_weather(city="Paris")] post', "pre  post", [(GW, PARIS)]),
    ("pythonic", '<|python_start|>[get_weather(city="Paris")]<|python_end|>', "", [(GW, PARIS)]),
    ("pythonic", "see [1, 2] and [x", "see [1, 2] and [x", []),
    ("pythonic", '[get_weather(city="Par', '[get_weather(city="Par', []),
    # sarashina
    ("sarashina", "<|tool_calls|>[{'name': 'get_weather', 'arguments': {'city': 'Tokyo', 'flag': True}}]", "",
     [(GW, '{"city":"Tokyo","flag":true}')]),
    ("sarashina", "pre <|tool_calls|>[{'name': 'get_weather', 'arguments': {}}] post", "pre  post", [(GW, "{}")]),
    ("sarashina", "[{'name': 'search', 'arguments': {'q': [1, 2]}}]", "", [("search", '{"q":[1,2]}')]),
    ("sarashina", "text [{'name': 'search', 'arguments': {}}]", "text [{'name': 'search', 'arguments': {}}]", []),
]


def _ids(v):
    return f"{v[0]}:{v[1][:30]!r}"


@pytest.mark.parametrize("vector", VECTORS, ids=[_ids(v) for v in VECTORS])
def test_complete(vector):
    parser, text, content, calls = vector[:4]
    r = create(parser, TOOLS).parse(text)
    assert r.normal_text == content
    assert [(c.name, c.arguments) for c in r.calls] == calls
    assert [c.index for c in r.calls] == list(range(len(calls)))
    assert len({c.id for c in r.calls}) == len(calls)


def _stream(parser, text, cuts):
    p = create(parser, TOOLS)
    pieces, prev = [], 0
    for c in list(cuts) + [len(text)]:
        pieces.append(text[prev:c])
        prev = c
    content, calls = "", {}
    for d in [p.feed(x) for x in pieces] + [p.finish()]:
        content += d.normal_text
        for c in d.calls:
            e = calls.setdefault(c.index, ["", ""])
            e[0] += c.name or ""
            e[1] += c.arguments
    return content, [tuple(v) for _, v in sorted(calls.items())]


WELL_FORMED = [v for v in VECTORS if v[3] and len(v) == 4]
MIXED = [v for v in VECTORS if len(v) == 5]


@pytest.mark.parametrize("vector", WELL_FORMED, ids=[_ids(v) for v in WELL_FORMED])
def test_streamed_at_every_split(vector):
    parser, text, content, calls = vector
    assert _stream(parser, text, []) == (content, calls)
    assert _stream(parser, text, range(1, len(text))) == (content, calls)
    for cut in range(len(text) + 1):
        assert _stream(parser, text, [cut]) == (content, calls), cut


@pytest.mark.parametrize("vector", MIXED, ids=[_ids(v) for v in MIXED])
def test_malformed_mix_streams_the_valid_calls(vector):
    # A name streamed before its frame proved malformed cannot be taken back, so only the
    # valid calls are certain: they are streamed, whole, for every split.
    parser, text, _content, calls = vector[:4]
    for cut in range(len(text) + 1):
        got = _stream(parser, text, [cut])[1]
        assert [c for c in got if c in calls] == calls, cut


def test_stream_holds_partial_marker_only_while_it_can_match():
    p = create("qwen")
    assert p.feed("hello <tool").normal_text == "hello "
    assert p.feed("box").normal_text == "<toolbox"
    d = p.feed(" <tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"x")
    assert d.normal_text == " "
    # the first delta of a call carries its id and name, and the arguments known so far
    assert [(c.index, c.name, c.arguments) for c in d.calls] == [(0, "f", '{"a":"x')]
    assert d.calls[0].id.startswith("call_")
    d = p.feed('y"}}\n</tool_call>')
    assert [(c.index, c.name, c.arguments) for c in d.calls] == [(0, None, 'y"}')]
    assert p.finish().calls == []


def test_stream_truncated_call_keeps_what_was_sent():
    p = create("qwen")
    d = p.feed('<tool_call>\n{"name": "f", "arguments": {"a": 1')
    assert [(c.name, c.arguments) for c in d.calls] == [("f", '{"a":')]
    end = p.finish()
    assert end.normal_text == "" and end.calls == []


def test_unknown_tool_dropped_only_by_inkling():
    text = '<|content_invoke_tool_json|>{"name":"nope","args":{}}<|end_message|>'
    assert create("inkling", TOOLS).parse(text).calls == []
    assert [c.name for c in create("inkling", None).parse(text).calls] == ["nope"]
    assert [c.name for c in create("qwen", TOOLS).parse(qwen_call("nope", {})).calls] == ["nope"]


def test_nested_depth_and_long_arguments_bounded():
    deep = {"a": "x" * 5000}
    for _ in range(50):
        deep = {"d": deep}
    r = create("qwen").parse(qwen_call("f", deep))
    assert json.loads(r.calls[0].arguments) == deep
    r = create("pythonic").parse("[f(a=" + "[" * 200 + "]" * 200 + ")]")
    assert r.calls == []


def test_call_ids():
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    for i in ids:
        assert i.startswith("call_") and len(i) == 29 and i[5:].isalnum()


def test_registry_names_and_aliases():
    canonical = {
        "passthrough", "json", "mistral", "qwen", "qwen_xml", "qwen_coder", "pythonic", "llama",
        "deepseek", "deepseek31", "deepseek32", "deepseek_v4", "glm45_moe", "glm47_moe", "step3",
        "sarashina", "kimik2", "kimi_k3", "inkling", "minimax_m2", "cohere",
    }
    assert canonical <= set(names())
    for alias, target in registry.ALIASES.items():
        assert alias in names()
        assert type(create(alias)) is type(create(target))
    assert type(create("qwen_coder")) is type(create("qwen_xml"))
    # every 1.13 command-line value is either accepted or refused with a reason
    for choice in registry.CLI_CHOICES:
        if choice in registry.UNSUPPORTED:
            with pytest.raises(KeyError, match="not implemented"):
                create(choice)
        else:
            create(choice)
    with pytest.raises(KeyError, match="unknown tool parser"):
        create("no-such-parser")


@pytest.mark.parametrize("model,parser", [
    ("gpt-4o-mini", "json"), ("claude-3-opus", "json"), ("mistral-large", "mistral"),
    ("Qwen/Qwen3-Coder-30B-A3B", "qwen_xml"), ("Qwen3.5-7B", "qwen_xml"), ("Qwen/Qwen2.5-7B-Instruct", "qwen"),
    ("qwen2.5-coder-7b", "qwen"), ("meta-llama/Llama-4-Scout", "pythonic"), ("llama-4-scout", "pythonic"),
    ("llama-3.2-1b", "llama"), ("llama-3.1-8b", "json"), ("deepseek-v3", "deepseek"),
    ("deepseek-ai/DeepSeek-V3.1", "deepseek31"), ("deepseek-v3.2-exp", "deepseek31"),
    ("deepseek-v3.2", "deepseek32"), ("deepseek-v4-flash", "deepseek_v4"), ("deepseek-r1", "pythonic"),
    ("glm-4.5-air", "glm45_moe"), ("GLM-4.6", "glm45_moe"), ("glm-4.7", "glm47_moe"), ("glm-5", "glm47_moe"),
    ("glm-4-9b", "json"), ("kimi-k2-instruct", "kimik2"), ("moonshotai/Kimi-K2-Thinking", "kimik2"),
    ("Kimi-K3", "kimi_k3"), ("MiniMax-M2", "minimax_m2"), ("command-r-plus", "cohere"),
    ("CohereForAI/c4ai-command-a", "cohere"), ("step3", "step3"), ("sarashina2.2", "sarashina"),
    ("org/Inkling-Chat", "inkling"), ("nvidia/Nemotron-3-Nano", "qwen_xml"), ("gemma-3-27b", "json"),
    ("unknown-model", "passthrough"),
])
def test_for_model(model, parser):
    assert for_model(model) == parser
