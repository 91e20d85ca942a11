"""Records the Rust SMG's answer to each input below and writes them, as plain data, to
tests/cases/validation_cases.py (the table the validation tests replay).

Run against a live SMG in front of ``smg-proxy mock-worker`` (model ``mock-model``)::

    smg-proxy mock-worker --port 32101 &
    bench/.venvs/smg-rust/bin/smg launch --host 127.0.0.1 --port 32001 \\
        --worker-urls http://127.0.0.1:32101 --prometheus-port 32201 &
    python tests/cases/record_validation_cases.py 32001 tests/cases/validation_cases.py

Not a test: it only talks to the gateway it is pointed at.
"""
import http.client
import json
import sys

PORT = int(sys.argv[1])
OUT = sys.argv[2]
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
CMPL = {"model": "mock-model", "prompt": "hi"}
MSG = {"model": "mock-model", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
EMB = {"model": "mock-model", "input": "hi"}
RR = {"model": "mock-model", "query": "q", "documents": ["a", "b"]}
GEN = {"text": "hi"}
CLS = {"model": "mock-model", "input": "hi"}
CNT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
DEL = object()
def patch(base, **kw):
    b = dict(base)
    for k, v in kw.items():
        if v is DEL: b.pop(k, None)
        else: b[k] = v
    return json.dumps(b, separators=(",", ":")).encode()
U = lambda c: [{"role": "user", "content": c}]
TF = [{"type": "function", "function": {"name": "f"}}]
cases = []  # (name, path, body, ctype)
def add(name, path, body, ctype="application/json"):
    cases.append((name, path, body, ctype))
def P(name, path, base, **kw): add(name, path, patch(base, **kw))

# -- body-level, every validated route
for path, base in [("/v1/chat/completions", CHAT), ("/v1/completions", CMPL), ("/v1/messages", MSG),
                   ("/v1/embeddings", EMB), ("/v1/rerank", RR), ("/rerank", RR), ("/generate", GEN),
                   ("/v1/classify", CLS), ("/v1/messages/count_tokens", CNT)]:
    t = path.strip("/").replace("/", "_")
    good = patch(base)
    add(f"{t}: text/plain content type", path, good, "text/plain")
    add(f"{t}: no content type", path, good, None)
    add(f"{t}: text/json content type", path, good, "text/json")
    add(f"{t}: empty body", path, b"")
    add(f"{t}: not JSON", path, b"{bad")
    add(f"{t}: JSON array", path, b"[1,2]")
    add(f"{t}: JSON null", path, b"null")
    add(f"{t}: JSON string", path, b'"x"')
    add(f"{t}: invalid UTF-8", path, good.replace(b'"hi"', b'"\xff"').replace(b'"q"', b'"\xff"'))
    add(f"{t}: truncated", path, good[:-1])

C = "/v1/chat/completions"
P("chat: model missing", C, CHAT, model=DEL)
P("chat: model null", C, CHAT, model=None)
P("chat: model number", C, CHAT, model=5)
P("chat: messages missing", C, CHAT, messages=DEL)
P("chat: messages null", C, CHAT, messages=None)
P("chat: messages string", C, CHAT, messages="hi")
P("chat: messages empty", C, CHAT, messages=[])
P("chat: model and messages missing", C, CHAT, model=DEL, messages=DEL)
P("chat: model missing, messages empty", C, CHAT, model=DEL, messages=[])
P("chat: message not an object", C, CHAT, messages=["hi"])
P("chat: message null", C, CHAT, messages=[None])
P("chat: role missing", C, CHAT, messages=[{"content": "hi"}])
P("chat: role unknown", C, CHAT, messages=[{"role": "bogus", "content": "hi"}])
P("chat: role number", C, CHAT, messages=[{"role": 5, "content": "hi"}])
P("chat: role null", C, CHAT, messages=[{"role": None, "content": "hi"}])
P("chat: role root", C, CHAT, messages=[{"role": "root", "content": "hi"}])
P("chat: second role unknown", C, CHAT, messages=U("hi") + [{"role": "bogus", "content": "x"}])
P("chat: second role missing", C, CHAT, messages=U("hi") + [{"content": "x"}])
P("chat: user content missing", C, CHAT, messages=[{"role": "user"}])
P("chat: user content null", C, CHAT, messages=U(None))
P("chat: user content number", C, CHAT, messages=U(5))
P("chat: user content part string", C, CHAT, messages=U(["x"]))
P("chat: user content part null", C, CHAT, messages=U([None]))
P("chat: user content empty string", C, CHAT, messages=U(""))
P("chat: user content empty parts", C, CHAT, messages=U([]))
P("chat: user content unknown part type", C, CHAT, messages=U([{"type": "bogus"}]))
P("chat: user name number", C, CHAT, messages=[{"role": "user", "content": "hi", "name": 5}])
P("chat: system without content", C, CHAT, messages=[{"role": "system"}])
P("chat: system content number", C, CHAT, messages=[{"role": "system", "content": 5}])
P("chat: assistant without content", C, CHAT, messages=[{"role": "assistant"}])
P("chat: assistant tool_calls string", C, CHAT, messages=[{"role": "assistant", "tool_calls": "x"}])
P("chat: assistant tool call without id", C, CHAT, messages=[{"role": "assistant", "tool_calls": [
    {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}])
P("chat: assistant tool call function without name", C, CHAT, messages=[{"role": "assistant", "tool_calls": [
    {"id": "a", "type": "function", "function": {}}]}])
P("chat: assistant reasoning_content number", C, CHAT, messages=[{"role": "assistant", "reasoning_content": 5}])
P("chat: tool without tool_call_id", C, CHAT, messages=[{"role": "tool", "content": "r"}])
P("chat: tool tool_call_id number", C, CHAT, messages=[{"role": "tool", "content": "r", "tool_call_id": 5}])
P("chat: tool without content", C, CHAT, messages=[{"role": "tool", "tool_call_id": "a"}])
P("chat: function without name", C, CHAT, messages=[{"role": "function", "content": "r"}])
P("chat: function content parts", C, CHAT, messages=[{"role": "function", "name": "f", "content": ["x"]}])
P("chat: developer without content", C, CHAT, messages=[{"role": "developer"}])
P("chat: developer ok", C, CHAT, messages=[{"role": "developer", "content": "x"}])
for f, v in [("stream", "yes"), ("stream", 1), ("stream", None), ("max_tokens", "ten"), ("max_tokens", 0),
             ("max_tokens", -1), ("max_tokens", 1.5), ("max_tokens", 5000000000), ("max_tokens", None),
             ("max_completion_tokens", 0), ("max_completion_tokens", "x"),
             ("temperature", -5), ("temperature", 2.5), ("temperature", "hot"), ("temperature", True),
             ("temperature", None), ("temperature", 1e300), ("temperature", 0), ("temperature", 2),
             ("top_p", 1.5), ("top_p", 0), ("top_p", -0.1), ("top_p", 1), ("top_p", "x"),
             ("n", 0), ("n", 11), ("n", -1), ("n", 1.5), ("n", 10), ("n", 5000000000),
             ("presence_penalty", 3), ("presence_penalty", -2), ("frequency_penalty", -3), ("frequency_penalty", "x"),
             ("logprobs", "x"), ("logprobs", None), ("top_logprobs", 5), ("seed", "x"), ("seed", 1.5),
             ("stop", 5), ("stop", ["a", "b", "c", "d", "e"]), ("stop", []), ("stop", [1]), ("stop", ""),
             ("stop", ["a", ""]), ("stop", None), ("stop", ["a", "b", "c", "d"]),
             ("stream_options", {"include_usage": True}), ("stream_options", None),
             ("tools", "x"), ("tools", []), ("tools", [5]), ("tools", [{"type": "function"}]),
             ("tools", [{"type": "function", "function": {}}]), ("tools", [{"function": {"name": "f"}}]),
             ("tools", [{"type": "function", "function": "x"}]), ("tools", [{"type": 5, "function": {"name": "f"}}]),
             ("tools", [{"type": "function", "function": {"name": 5}}]),
             ("tools", [{"type": "function", "function": {"name": "f", "description": 5}}]),
             ("tools", [{"type": "function", "function": {"name": "f", "parameters": 5}}]),
             ("tools", [{"type": "bogus", "function": {"name": "f"}}]), ("tools", TF),
             ("tool_choice", "auto"), ("tool_choice", "none"), ("tool_choice", "required"), ("tool_choice", 5),
             ("tool_choice", {"type": "function", "function": {"name": "f"}}),
             ("response_format", {"type": "bogus"}), ("response_format", "json"), ("response_format", {}),
             ("response_format", {"type": "json_object"}), ("response_format", {"type": "text"}),
             ("response_format", {"type": "json_schema"}), ("response_format", {"type": "regex"}),
             ("response_format", {"type": "json_schema", "json_schema": {"name": ""}}),
             ("response_format", {"type": "json_schema", "json_schema": {"schema": {}}}),
             ("response_format", {"type": "json_schema", "json_schema": {"name": "", "schema": {}}}),
             ("response_format", {"type": "json_schema", "json_schema": "x"}),
             ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
             ("top_k", -2), ("top_k", 0), ("top_k", -1), ("top_k", "x"), ("top_k", 5000000000),
             ("min_p", 2), ("min_tokens", 0), ("min_tokens", -1), ("repetition_penalty", 3),
             ("logit_bias", {"1": "x"}), ("logit_bias", []), ("logit_bias", {"1": None}), ("logit_bias", {"1": 5}),
             ("metadata", {"a": 1}), ("metadata", {"a": "b"}), ("parallel_tool_calls", "x"),
             ("skip_special_tokens", "x"), ("no_stop_trim", None), ("ignore_eos", "x"), ("stop_token_ids", [-1]),
             ("stop_token_ids", [1, 2]), ("sampling_seed", -1), ("verbosity", "x"), ("verbosity", 5),
             ("verbosity", "low"), ("thinking", "x"), ("thinking", {"type": "enabled"}), ("modalities", "x"),
             ("modalities", [5]), ("chat_template_kwargs", 5), ("session_params", []), ("functions", 5),
             ("function_call", 5), ("service_tier", 5), ("prompt_cache_key", 5), ("safety_identifier", 5),
             ("regex", 5), ("ebnf", 5), ("lora_path", 5), ("return_hidden_states", "x"), ("unknown_field", "x"),
             ("model", ""), ("reasoning_effort", 5), ("user", 5), ("request_id", 5)]:
    P(f"chat: {f}={json.dumps(v)}", C, CHAT, **{f: v})
P("chat: top_logprobs 21 with logprobs", C, CHAT, logprobs=True, top_logprobs=21)
P("chat: top_logprobs -1 with logprobs", C, CHAT, logprobs=True, top_logprobs=-1)
P("chat: top_logprobs 20 with logprobs", C, CHAT, logprobs=True, top_logprobs=20)
P("chat: stream_options with stream false", C, CHAT, stream_options={"include_usage": True}, stream=False)
P("chat: stream_options with stream", C, CHAT, stream_options={"include_usage": True}, stream=True)
P("chat: stream_options string with stream", C, CHAT, stream_options="x", stream=True)
P("chat: stream_options include_usage string", C, CHAT, stream_options={"include_usage": "x"}, stream=True)
P("chat: tool_choice unknown string with tools", C, CHAT, tool_choice="bogus", tools=TF)
P("chat: tool_choice function not in tools", C, CHAT, tool_choice={"type": "function", "function": {"name": "g"}}, tools=TF)
P("chat: tool_choice function in tools", C, CHAT, tool_choice={"type": "function", "function": {"name": "f"}}, tools=TF)
P("chat: tool_choice without function name", C, CHAT, tool_choice={"type": "function", "function": {}}, tools=TF)
P("chat: tool_choice custom type", C, CHAT, tool_choice={"type": "custom"}, tools=TF)
P("chat: tool_choice allowed_tools bad mode", C, CHAT, tool_choice={"type": "allowed_tools", "mode": "x", "tools": []}, tools=TF)
P("chat: tool_choice required with tools", C, CHAT, tool_choice="required", tools=TF)
P("chat: min_tokens above max_completion_tokens", C, CHAT, min_tokens=5, max_completion_tokens=2)
P("chat: min_tokens above max_tokens", C, CHAT, min_tokens=5, max_tokens=2)
P("chat: regex with json_object", C, CHAT, regex="a", response_format={"type": "json_object"})
P("chat: ebnf with json_object", C, CHAT, ebnf="a", response_format={"type": "json_object"})
P("chat: regex and ebnf", C, CHAT, regex="a", ebnf="b")
P("chat: temperature and n out of range", C, CHAT, temperature=-5, n=0)
P("chat: n and temperature out of range", C, CHAT, n=0, temperature=-5)
P("chat: temperature out of range, stream_options without stream", C, CHAT, temperature=-5, stream_options={})
P("chat: temperature out of range, stream wrong type", C, CHAT, temperature=-5, stream="yes")
P("chat: two wrong types (temperature first)", C, CHAT, temperature="x", stream="y")
P("chat: two wrong types (stream first)", C, CHAT, stream="y", temperature="x")
P("chat: wrong type before missing fields", C, CHAT, model=DEL, messages=DEL, stream="x")
P("chat: unknown model", C, CHAT, model="no-such-model")
TG = [{"type": "function", "function": {"name": "f"}}]
P("chat: functions without name", C, CHAT, functions=[{}])
P("chat: functions", C, CHAT, functions=[{"name": "f"}])
P("chat: function_call unknown string", C, CHAT, function_call="bogus", functions=[{"name": "f"}])
P("chat: function_call auto", C, CHAT, function_call="auto", functions=[{"name": "f"}])
P("chat: tool function strict string", C, CHAT, tools=[{"type": "function", "function": {"name": "f", "strict": "x"}}])
P("chat: stream_options continuous_usage_stats string", C, CHAT, stream=True, stream_options={"continuous_usage_stats": "x"})
P("chat: json_schema strict string", C, CHAT, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "strict": "x"}})
P("chat: json_schema description number", C, CHAT, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "description": 5}})
P("chat: tool call arguments number", C, CHAT, messages=[{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": 5}}]}])
P("chat: assistant name number", C, CHAT, messages=[{"role": "assistant", "name": 5}])
P("chat: allowed_tools without tools", C, CHAT, tool_choice={"type": "allowed_tools", "mode": "auto"}, tools=TG)
P("chat: allowed_tools naming an unknown tool", C, CHAT, tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "g"}]}, tools=TG)
P("chat: allowed_tools naming a known tool", C, CHAT, tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]}, tools=TG)
P("chat: regex with json_schema", C, CHAT, regex="a", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})

M = "/v1/completions"
for f, v in [("prompt", DEL), ("prompt", None), ("prompt", 5), ("prompt", []), ("prompt", [1, 2]),
             ("prompt", [[1, 2]]), ("prompt", ["a", 1]), ("prompt", ""), ("prompt", ["a", "b"]), ("model", DEL),
             ("model", None), ("temperature", -1), ("temperature", 3), ("top_p", 2), ("top_p", 0), ("n", 0), ("n", 11),
             ("n", 129), ("n", 128), ("max_tokens", 0), ("max_tokens", "x"), ("max_tokens", -1), ("logprobs", 6),
             ("logprobs", -1), ("logprobs", True), ("best_of", 0), ("echo", "x"), ("stream", "yes"),
             ("stream_options", {"include_usage": True}), ("stop", ["a", "b", "c", "d", "e"]), ("stop", ""),
             ("presence_penalty", 5), ("frequency_penalty", 5), ("suffix", 5), ("seed", "x"), ("top_k", 0),
             ("min_p", 5), ("repetition_penalty", 5), ("user", 5), ("logit_bias", []), ("json_schema", 5),
             ("stop_token_ids", ["x"]), ("sampling_seed", -1)]:
    kw = {f: v}
    P(f"completions: {f}={'<missing>' if v is DEL else json.dumps(v)}", M, CMPL, **kw)
P("completions: min_tokens above max_tokens", M, CMPL, min_tokens=5, max_tokens=1)
P("completions: stream_options with stream", M, CMPL, stream_options={"include_usage": True}, stream=True)

A = "/v1/messages"
for f, v in [("max_tokens", DEL), ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", "x"), ("max_tokens", None),
             ("max_tokens", 5000000000), ("model", DEL), ("model", None), ("model", ""), ("messages", DEL),
             ("messages", []), ("messages", "x"), ("system", 5), ("system", "x"),
             ("system", [{"type": "text", "text": "x"}]), ("system", [{"type": "text"}]), ("system", ["x"]),
             ("system", [{"text": "x"}]), ("temperature", 5), ("temperature", -1), ("temperature", "x"),
             ("temperature", None), ("temperature", 1), ("top_p", 5), ("top_k", -1), ("top_k", 0), ("stream", "yes"),
             ("stream", None), ("stop_sequences", "x"), ("stop_sequences", [1]), ("stop_sequences", ["a"]),
             ("tools", "x"), ("tools", [5]), ("tool_choice", "auto"), ("tool_choice", {"type": "bogus"}),
             ("tool_choice", {"type": "auto"}), ("tool_choice", {"type": "none"}), ("tool_choice", {"type": "tool"}),
             ("thinking", {"type": "enabled", "budget_tokens": 100}), ("thinking", {"type": "enabled"}),
             ("thinking", {"type": "enabled", "budget_tokens": 2000}), ("thinking", {"type": "disabled"}),
             ("thinking", "x"), ("metadata", 5), ("metadata", {"user_id": 5}), ("service_tier", "x"),
             ("service_tier", "auto"), ("unknown_field", 1)]:
    P(f"messages: {f}={'<missing>' if v is DEL else json.dumps(v)}", A, MSG, **{f: v})
for name, msgs in [("system role", [{"role": "system", "content": "x"}]),
                   ("developer role", [{"role": "developer", "content": "x"}]),
                   ("unknown role", [{"role": "bogus", "content": "x"}]),
                   ("role missing", [{"content": "x"}]), ("content missing", [{"role": "user"}]),
                   ("content number", U(5)), ("content empty string", U("")), ("content empty blocks", U([])),
                   ("assistant empty blocks", [{"role": "assistant", "content": []}]),
                   ("text block without text", U([{"type": "text"}])),
                   ("text block with number", U([{"type": "text", "text": 5}])),
                   ("text block", U([{"type": "text", "text": "x"}])),
                   ("text block with extra field", U([{"type": "text", "text": "x", "extra": 1}])),
                   ("block without type", U([{"text": "x"}])), ("unknown block type", U([{"type": "bogus"}])),
                   ("image block with url source", U([{"type": "image", "source": {"type": "url", "url": "http://x"}}])),
                   ("image block without source", U([{"type": "image"}])),
                   ("tool_use block", U([{"type": "tool_use", "id": "a", "name": "f", "input": {}}])),
                   ("tool_use block without id", U([{"type": "tool_use", "name": "f", "input": {}}])),
                   ("tool_result block without tool_use_id", U([{"type": "tool_result"}])),
                   ("thinking block without signature", U([{"type": "thinking", "thinking": "x"}])),
                   ("block string", U(["x"]))]:
    P(f"messages: {name}", A, MSG, messages=msgs)
P("messages: thinking budget at max_tokens", A, MSG, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 2000})
P("messages: thinking budget below max_tokens", A, MSG, max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2000})
P("messages: max_tokens 0 and messages empty", A, MSG, max_tokens=0, messages=[])
P("messages: messages empty, max_tokens missing", A, MSG, max_tokens=DEL, messages=[])
P("messages: tool_choice tool with tools", A, MSG, tool_choice={"type": "tool", "name": "f"},
  tools=[{"name": "f", "input_schema": {"type": "object"}}])
AT = [{"name": "f", "input_schema": {"type": "object"}}]
P("messages: tool_choice disable_parallel_tool_use string", A, MSG, tool_choice={"type": "auto", "disable_parallel_tool_use": "x"}, tools=AT)
P("messages: tool_choice names an unknown tool", A, MSG, tool_choice={"type": "tool", "name": "g"}, tools=AT)
P("messages: thinking budget negative", A, MSG, thinking={"type": "enabled", "budget_tokens": -1})
P("messages: system block with cache_control", A, MSG, system=[{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}])
P("messages: stop_sequences null", A, MSG, stop_sequences=None)
for name, block in [("document title number", {"type": "document", "source": {"type": "text", "data": "x"}, "title": 5}),
                    ("image source string", {"type": "image", "source": "x"}),
                    ("tool_result is_error string", {"type": "tool_result", "tool_use_id": "a", "is_error": "x"}),
                    ("tool_use without input", {"type": "tool_use", "id": "a", "name": "f"})]:
    P(f"messages: {name}", A, MSG, messages=[{"role": "assistant" if "tool_use" == block["type"] else "user", "content": [block]}])
P("messages: tool_choice auto with tools", A, MSG, tool_choice={"type": "auto"},
  tools=[{"name": "f", "input_schema": {"type": "object"}}])

E = "/v1/embeddings"
for f, v in [("input", DEL), ("input", None), ("input", 5), ("input", [1, 2]), ("input", [[1, 2]]), ("input", ""),
             ("model", DEL), ("model", None), ("model", 5), ("encoding_format", "bogus"), ("encoding_format", 5),
             ("dimensions", 0), ("dimensions", "x"), ("dimensions", -1), ("user", 5), ("stream", "x")]:
    P(f"embeddings: {f}={'<missing>' if v is DEL else json.dumps(v)}", E, EMB, **{f: v})
for path, t in [("/v1/rerank", "v1_rerank"), ("/rerank", "rerank")]:
    for f, v in [("query", DEL), ("query", None), ("query", 5), ("query", ""), ("documents", DEL), ("documents", []),
                 ("documents", "x"), ("documents", [1]), ("documents", [{"text": "a"}]), ("documents", None),
                 ("model", DEL), ("model", None), ("top_k", 0), ("top_k", -1), ("top_k", "x"),
                 ("return_documents", "x")]:
        P(f"{t}: {f}={'<missing>' if v is DEL else json.dumps(v)}", path, RR, **{f: v})
G = "/generate"
for f, v in [("text", DEL), ("text", None), ("text", 5), ("text", ["a", "b"]), ("input_ids", "x"),
             ("input_ids", [1, 2]), ("input_ids", [[1, 2], [3]]), ("stream", "yes"), ("sampling_params", 5),
             ("sampling_params", {"temperature": -1}), ("sampling_params", {"temperature": "x"}),
             ("sampling_params", {"max_new_tokens": -1}), ("sampling_params", {"top_p": 2}),
             ("sampling_params", {"foo": 1}), ("return_logprob", "x"), ("model", 5), ("rid", 5), ("lora_path", 5),
             ("logprob_start_len", "x"), ("top_logprobs_num", -1)]:
    P(f"generate: {f}={'<missing>' if v is DEL else json.dumps(v)}", G, GEN, **{f: v})
K = "/v1/classify"
for f, v in [("input", DEL), ("input", None), ("model", DEL), ("model", None), ("user", 5)]:
    P(f"classify: {f}={'<missing>' if v is DEL else json.dumps(v)}", K, CLS, **{f: v})
T = "/v1/messages/count_tokens"
for f, v in [("messages", DEL), ("messages", []), ("model", DEL), ("model", ""), ("system", 5),
             ("messages", [{"role": "bogus", "content": "x"}]), ("tool_choice", {"type": "bogus"})]:
    P(f"count_tokens: {f}={'<missing>' if v is DEL else json.dumps(v)}", T, CNT, **{f: v})

HEADER = '''"""Bad (and edge-of-valid) request bodies with the answer the Rust SMG gives them.

Plain data, recorded from SMG 1.13 (``smg launch`` in front of ``smg-proxy
mock-worker``, model ``mock-model``), replayed against smg by
tests/integration/test_validation_cases.py and importable by the differential
conformance suite. Each row:

- ``name``: what the case is; ``endpoint``: the POST path; ``body``: the exact bytes;
  ``content_type``: the Content-Type header (None: none sent);
- ``status``: SMG's status;
- ``format``: ``"openai"`` (``{"error": {"message", "type", "param", "code"}}``),
  ``"anthropic"`` (``{"type": "error", "error": {"type", "message"}, "request_id"}``),
  ``"plain"`` (a text/plain refusal: the routes SMG decodes without validation), or
  ``"worker"`` (SMG forwarded the request: the answer is the worker's);
- ``code``, ``param``: the OpenAI error's ``code`` and ``param`` (None otherwise).
"""

CASES = (
'''

rows = []
for name, path, body, ctype in cases:
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    h = {} if ctype is None else {"content-type": ctype}
    c.request("POST", path, body=body, headers=h)
    r = c.getresponse(); d = r.read(); c.close()
    ct = r.getheader("content-type") or ""
    worker = r.getheader("x-mock-worker") is not None
    code = param = None
    if ct.startswith("application/json") and not worker and r.status >= 400:
        e = json.loads(d)
        if e.get("type") == "error":
            fmt = "anthropic"
        else:
            fmt = "openai"; code = e["error"].get("code"); param = e["error"].get("param")
    elif worker or r.status < 400:
        fmt = "worker"
    else:
        fmt = "plain"
    rows.append(dict(name=name, endpoint=path, body=body, content_type=ctype, status=r.status,
                     format=fmt, code=code, param=param))
with open(OUT, "w") as f:
    f.write(HEADER)
    for r in rows:
        f.write("    {" + ", ".join(f"{k!r}: {v!r}" for k, v in r.items()) + "},\n")
    f.write(")\n")
print(len(rows), "cases")
