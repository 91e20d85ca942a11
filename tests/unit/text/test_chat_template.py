"""smg.text.chat_template: HF-compatible rendering, content-format detection, message
preparation, continue_final_message, loading, errors and the sandbox.

Two halves: small templates written here pin each rule; the real upstream templates
(fetched by tests/assets/fetch_templates.py into ~/.cache/smg-ci/templates or
$SMG_TEMPLATES_DIR) check that every one renders and that the main families produce the
exact prompt their format describes."""
from __future__ import annotations

import datetime
import json
import os

import pytest

from smg.text.chat_template import (
    CONTENT_OPENAI,
    CONTENT_STRING,
    ChatTemplate,
    TemplateError,
    detect_content_format,
    load_template,
    prepare_messages,
)

CLOCK = lambda: datetime.datetime(2025, 7, 26, 9, 30)  # noqa: E731

# A small ChatML template of our own (the format: <|im_start|>role\ncontent<|im_end|>\n).
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chatml(**kw) -> ChatTemplate:
    return ChatTemplate(CHATML, **kw)


# --- HF's helpers and variables --------------------------------------------------------

def test_tojson_follows_hf_json_dumps():
    t = ChatTemplate("{{ x | tojson }}|{{ x | tojson(indent=2) }}|"
                     "{{ x | tojson(separators=(',', ':'), sort_keys=true) }}|"
                     "{{ x | tojson(ensure_ascii=true) }}")
    x = {"b": "é<&>'", "a": [1, 2]}
    out = t.render([], x=x).split("|")
    assert out[0] == '{"b": "é<&>\'", "a": [1, 2]}'  # no ASCII escaping, no HTML escaping
    assert out[1] == json.dumps(x, ensure_ascii=False, indent=2)
    assert out[2] == '{"a":[1,2],"b":"é<&>\'"}'
    assert out[3] == '{"b": "\\u00e9<&>\'", "a": [1, 2]}'


def test_hf_environment_settings():
    # trim_blocks + lstrip_blocks: a block tag's own line leaves no whitespace behind
    t = ChatTemplate("a\n    {% if true %}\nb\n    {% endif %}\nc")
    assert t.render([]) == "a\nb\nc"
    # loopcontrols
    t = ChatTemplate("{% for i in [1,2,3,4] %}{% if i == 2 %}{% continue %}{% endif %}"
                     "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}")
    assert t.render([]) == "13"
    # {% generation %} renders its body
    t = ChatTemplate("x{% generation %}{{ messages[0].content }}{% endgeneration %}y")
    assert t.render([{"role": "assistant", "content": "mid"}]) == "xmidy"


def test_strftime_now_uses_the_injected_clock():
    t = ChatTemplate("{{ strftime_now('%d %b %Y %H:%M') }}", now=CLOCK)
    assert t.render([]) == "26 Jul 2025 09:30"


def test_variables_hf_passes():
    t = ChatTemplate("{{ bos_token }}|{{ eos_token }}|{{ unk_token }}|{{ tools is none }}|"
                     "{{ documents is none }}|{{ add_generation_prompt }}|"
                     "{{ continue_final_message }}|{{ messages | length }}",
                     bos_token="<s>", eos_token="</s>", special={"unk_token": "<unk>"})
    assert t.render([{"role": "user", "content": "x"}]) == "<s>|</s>|<unk>|True|True|True|False|1"
    assert t.render([], tools=[{"type": "function"}], documents=[{"text": "d"}],
                    add_generation_prompt=False).split("|")[3:6] == ["False", "False", "False"]


def test_chat_template_kwargs_are_top_level_variables():
    t = ChatTemplate("{{ enable_thinking }}-{{ reasoning_effort | default('medium') }}-{{ bos_token }}",
                     bos_token="<s>")
    assert t.render([], chat_template_kwargs={"enable_thinking": False}) == "False-medium-<s>"
    assert t.render([], reasoning_effort="high", enable_thinking=True) == "True-high-<s>"
    # a request may override a special token (HF merges kwargs over the special-token map)
    assert t.render([], chat_template_kwargs={"bos_token": "", "enable_thinking": 1}) == "1-medium-"
    assert {"enable_thinking", "reasoning_effort", "bos_token"} <= t.variables


@pytest.mark.parametrize("key", ["messages", "tools", "documents", "add_generation_prompt",
                                 "continue_final_message"])
def test_chat_template_kwargs_cannot_replace_the_renderers_variables(key):
    with pytest.raises(TemplateError, match=key):
        chatml().render([], chat_template_kwargs={key: []})


# --- errors and the sandbox ----------------------------------------------------------

def test_raise_exception_is_a_template_error_with_the_message():
    t = ChatTemplate("{% if messages[0].role == 'system' %}"
                     "{{ raise_exception('System role not supported') }}{% endif %}ok")
    assert t.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(TemplateError) as info:
        t.render([{"role": "system", "content": "x"}])
    assert str(info.value) == "System role not supported"
    assert info.value.status_hint == 400 and info.value.lineno == 1


def test_syntax_error_reports_its_line():
    with pytest.raises(TemplateError) as info:
        ChatTemplate("line one\n{% for m in messages %}\n{{ m.content }\n")
    assert info.value.lineno == 3
    assert "line 3" in str(info.value)


def test_render_failures_become_template_errors_with_the_line():
    t = ChatTemplate("a\n{{ missing.attr }}")
    with pytest.raises(TemplateError) as info:
        t.render([])
    assert info.value.lineno == 2 and "missing" in str(info.value)
    # a type error inside the template (list + str) is also the request's fault
    with pytest.raises(TemplateError, match="TypeError"):
        ChatTemplate("{{ messages[0].content + '!' }}").render([{"role": "user", "content": 5}])
    # undefined values print as nothing, as in HF (default Undefined, not strict)
    assert ChatTemplate("[{{ nothing }}]").render([]) == "[]"


def test_sandbox_refuses_python_internals():
    # the unsafe attribute is undefined: it prints as nothing, never as "<class 'str'>"
    assert ChatTemplate("{{ ''.__class__ }}").render([]) == ""
    for src in (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ raise_exception.__globals__ }}x{{ raise_exception.__globals__['os'] }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ):
        with pytest.raises(TemplateError):
            ChatTemplate(src).render([])


def test_immutable_sandbox_refuses_mutation_like_hf():
    t = ChatTemplate("{% set x = [] %}{{ x.append(1) }}")
    with pytest.raises(TemplateError, match="SecurityError"):
        t.render([])
    # messages passed in are not changed by a template either
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(TemplateError):
        ChatTemplate("{{ messages.pop() }}").render(msgs)
    assert msgs == [{"role": "user", "content": "x"}]


def test_a_template_must_be_text():
    with pytest.raises(TemplateError):
        ChatTemplate(None)  # type: ignore[arg-type]


# --- content format ------------------------------------------------------------------

@pytest.mark.parametrize("src, expected", [
    ("{% for m in messages %}{{ m.content }}{% endfor %}", CONTENT_STRING),
    ("{% for m in messages %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endfor %}",
     CONTENT_OPENAI),
    ("{% for m in messages %}{% for p in m['content'] if p.type == 'text' %}{% endfor %}{% endfor %}",
     CONTENT_OPENAI),
    # through a variable set from the content, and over a derived message list
    ("{% set loop_messages = messages[1:] %}{% for m in loop_messages %}"
     "{% set content = m.content %}{% for p in content %}{% endfor %}{% endfor %}", CONTENT_OPENAI),
    ("{% for m in messages %}{{ m.content[0].text }}{% endfor %}", CONTENT_OPENAI),
    ("{% for m in messages %}{% for p in m.get('content') %}{% endfor %}{% endfor %}", CONTENT_OPENAI),
    # a macro that iterates its argument, called with a message's content or the message
    ("{% macro r(c) %}{% for p in c %}{{ p.text }}{% endfor %}{% endmacro %}"
     "{% for m in messages %}{{ r(m.content) }}{% endfor %}", CONTENT_OPENAI),
    ("{% macro r(msg) %}{% for p in msg.get('content') %}{% endfor %}{% endmacro %}"
     "{% for m in messages %}{{ r(m) }}{% endfor %}", CONTENT_OPENAI),
    ("{% macro r(c) %}{% for p in c %}{% endfor %}{% endmacro %}"
     "{% for m in messages %}{{ r(m.tool_calls) }}{% endfor %}", CONTENT_STRING),
    # a type test alone picks a branch; it does not make the template parts-aware (Qwen3)
    ("{% for m in messages %}{% if m.content is string %}{% set content = m.content %}"
     "{% else %}{% set content = '' %}{% endif %}{{ content | length }}{% endfor %}", CONTENT_STRING),
    # indexing the first message from outside a message loop (Llama 3.1's system prompt)
    ("{% if messages[0]['content'] is string %}{{ messages[0]['content'] }}{% else %}"
     "{{ messages[0]['content'][0]['text'] }}{% endif %}", CONTENT_STRING),
    # iterating something else
    ("{% for m in messages %}{% for c in m.tool_calls %}{% endfor %}{% endfor %}", CONTENT_STRING),
    ("{% for m in messages %}{% for ch in m.content.split(' ') %}{% endfor %}{% endfor %}",
     CONTENT_STRING),
    ("{% for", CONTENT_STRING),
])
def test_detect_content_format(src, expected):
    assert detect_content_format(src) == expected


PARTS = [
    {"type": "text", "text": "look"},
    {"type": "image_url", "image_url": {"url": "http://x/cat.png"}},
    {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
    {"type": "text", "text": "here"},
]


def test_string_templates_get_text_parts_joined_with_a_space():
    msgs = [{"role": "user", "content": PARTS}]
    assert prepare_messages(msgs, CONTENT_STRING) == [{"role": "user", "content": "look here"}]
    assert chatml().render(msgs) == "<|im_start|>user\nlook here<|im_end|>\n<|im_start|>assistant\n"
    # media only: no text at all
    assert prepare_messages([{"role": "user", "content": PARTS[1:3]}], CONTENT_STRING)[0]["content"] == ""


def test_parts_aware_templates_get_parts_with_media_placeholders():
    src = ("{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}"
           "{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% elif p.type == 'image' %}"
           "<IMG>{% elif p.type == 'audio' %}<AUD>{% endif %}{% endfor %}{% endif %}|{% endfor %}")
    t = ChatTemplate(src)
    assert t.content_format == CONTENT_OPENAI
    msgs = [{"role": "user", "content": PARTS}, {"role": "assistant", "content": "plain"}]
    assert prepare_messages(msgs, CONTENT_OPENAI)[0]["content"] == [
        {"type": "text", "text": "look"}, {"type": "image"}, {"type": "audio"},
        {"type": "text", "text": "here"},
    ]
    assert t.render(msgs) == "look<IMG><AUD>here|plain|"


def test_tool_call_arguments_are_parsed_to_mappings():
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"city": "Paris"}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "not json"}},
        {"id": "c", "type": "function", "function": {"name": "h", "arguments": "[1, 2]"}},
        {"id": "d", "type": "function", "function": {"name": "k", "arguments": {"n": 1}}},
    ]
    msgs = [{"role": "assistant", "content": None, "tool_calls": calls}]
    before = json.dumps(msgs)
    out = prepare_messages(msgs, CONTENT_STRING)[0]["tool_calls"]
    assert [c["function"]["arguments"] for c in out] == [{"city": "Paris"}, "not json", "[1, 2]", {"n": 1}]
    assert out[0]["id"] == "a" and out[0]["function"]["name"] == "f"
    assert json.dumps(msgs) == before  # the caller's messages are untouched
    t = ChatTemplate("{% for c in messages[0].tool_calls %}{{ c.function.arguments.city }}{% endfor %}")
    assert t.render(msgs) == "Paris"


def test_messages_must_be_objects():
    with pytest.raises(TemplateError):
        chatml().render(["hi"])  # type: ignore[list-item]


# --- continue_final_message --------------------------------------------------------------

def test_continue_final_message_cuts_after_the_final_content():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is"}]
    out = chatml().render(msgs, continue_final_message=True)
    assert out == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nThe answer is"
    # the generation prompt is never added when continuing
    assert chatml().render(msgs, continue_final_message=True, add_generation_prompt=True) == out
    # the template sees the flag
    assert ChatTemplate("{{ continue_final_message }}{{ messages[-1].content }}").render(
        msgs, continue_final_message=True) == "TrueThe answer is"


def test_continue_final_message_trailing_space_follows_the_template():
    msgs = [{"role": "assistant", "content": "Sure, "}]
    # the template keeps the space: so does the prompt
    assert chatml().render(msgs, continue_final_message=True) == "<|im_start|>assistant\nSure, "
    # the template trims: the prompt ends at the trimmed text (HF)
    t = ChatTemplate("{% for m in messages %}[{{ m.content | trim }}]{% endfor %}")
    assert t.render(msgs, continue_final_message=True) == "[Sure,"


def test_continue_final_message_with_parts_and_with_empty_text():
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert chatml().render([{"role": "assistant", "content": parts}],
                           continue_final_message=True) == "<|im_start|>assistant\none two"
    src = ("{% for m in messages %}{% for p in m.content %}{{ p.text }}{% if p.type == 'image' %}"
           "<IMG>{% endif %}{% endfor %};{% endfor %}")
    parts = [{"type": "text", "text": "one "}, {"type": "image_url", "image_url": {"url": "u"}}]
    assert ChatTemplate(src).render([{"role": "assistant", "content": parts}],
                                    continue_final_message=True) == "one "
    assert chatml().render([{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}],
                           continue_final_message=True) == \
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"


def test_continue_final_message_errors():
    with pytest.raises(TemplateError):
        chatml().render([], continue_final_message=True)
    hides = ChatTemplate("{% for m in messages %}{{ m.role }}{% endfor %}")
    with pytest.raises(TemplateError, match="does not appear"):
        hides.render([{"role": "assistant", "content": "text"}], continue_final_message=True)
    with pytest.raises(TemplateError):
        hides.render([{"role": "assistant", "content": ""}], continue_final_message=True)
    with pytest.raises(TemplateError, match="continue"):
        chatml().render([{"role": "assistant", "content": None}], continue_final_message=True)
    parts_aware = ChatTemplate("{% for m in messages %}{% for p in m.content %}{{ p.type }}"
                               "{% endfor %}{% endfor %}")
    with pytest.raises(TemplateError, match="no text"):
        parts_aware.render([{"role": "assistant", "content": [{"type": "image_url", "image_url": {}}]}],
                           continue_final_message=True)


# --- load_template -------------------------------------------------------------------

def write(path, data):
    with open(path, "w", encoding="utf-8") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


def test_load_from_tokenizer_config_with_token_objects(tmp_path):
    write(tmp_path / "tokenizer_config.json", {
        "chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}{{ pad_token }}",
        "bos_token": {"content": "<s>", "lstrip": False, "__type": "AddedToken"},
        "eos_token": "</s>", "pad_token": None, "unk_token": "<unk>", "model_max_length": 8,
    })
    t = load_template(str(tmp_path), now=CLOCK)
    assert t.render([{"role": "user", "content": "x"}]) == "<s>x</s>"
    assert t.special_tokens == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def test_chat_template_jinja_wins_over_the_config(tmp_path):
    write(tmp_path / "tokenizer_config.json", {"chat_template": "config", "bos_token": "<s>"})
    write(tmp_path / "chat_template.jinja", "file {{ bos_token }}")
    assert load_template(str(tmp_path)).render([]) == "file <s>"
    # a .jinja path directly: the folder's config still supplies the tokens
    assert load_template(str(tmp_path / "chat_template.jinja")).render([]) == "file <s>"
    write(tmp_path / "other.json", {"chat_template": "json {{ bos_token }}"})
    assert load_template(str(tmp_path / "other.json")).render([]) == "json <s>"


def test_named_templates_pick_default_and_tool_use(tmp_path):
    write(tmp_path / "tokenizer_config.json", {"chat_template": [
        {"name": "rag", "template": "rag"},
        {"name": "tool_use", "template": "tools:{{ tools | length }}"},
        {"name": "default", "template": "default"},
    ]})
    t = load_template(str(tmp_path))
    assert t.render([]) == "default"
    assert t.render([], tools=[{"type": "function", "function": {"name": "f"}}]) == "tools:1"
    assert t.render([], tools=[]) == "tools:0"  # given, even if empty (HF: tools is not None)


def test_load_errors(tmp_path):
    with pytest.raises(TemplateError, match="no chat template"):
        load_template(str(tmp_path))
    write(tmp_path / "tokenizer_config.json", {"chat_template": [{"name": "rag", "template": "x"}]})
    with pytest.raises(TemplateError, match="default"):
        load_template(str(tmp_path))
    write(tmp_path / "tokenizer_config.json", "{not json")
    with pytest.raises(TemplateError, match="JSON"):
        load_template(str(tmp_path))
    write(tmp_path / "tokenizer_config.json", {"chat_template": "{% if %}"})
    with pytest.raises(TemplateError, match="syntax"):
        load_template(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        load_template(str(tmp_path / "absent.jinja"))


# --- the real upstream templates -----------------------------------------------------

TEMPLATES_DIR = os.environ.get("SMG_TEMPLATES_DIR") or os.path.expanduser("~/.cache/smg-ci/templates")
HAVE_TEMPLATES = os.path.isdir(TEMPLATES_DIR) and any(
    f.endswith(".jinja") for f in os.listdir(TEMPLATES_DIR))
NEEDS_TEMPLATES = pytest.mark.skipif(
    not HAVE_TEMPLATES,
    reason=f"no upstream templates in {TEMPLATES_DIR}: run tests/assets/fetch_templates.py",
)
ALL = sorted(f for f in os.listdir(TEMPLATES_DIR) if f.endswith(".jinja")) if HAVE_TEMPLATES else []

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name."}},
                   "required": ["city"]},
}}]

# Templates that cannot render a plain system + 3-turn chat, and the input they need:
SPECIAL_INPUT = {
    # tool_use variants of a named list: only chosen when a request has tools, and they
    # iterate `tools` unguarded
    "CohereForAI-c4ai-command-r-plus-tool_use.jinja": {"tools": TOOLS},
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": {"tools": TOOLS},
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": {"tools": TOOLS},
    # Fireworks' serving code passes the function list and the date as text variables
    "fireworks-ai-llama-3-firefunction-v2.jinja": {"functions": json.dumps(TOOLS), "datetime": "2025-07-26"},
    # Gemma 2 refuses a system message (raise_exception; see test_gemma2_refuses_a_system_message)
    "google-gemma-2-2b-it.jinja": {"no_system": True},
}

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
]


def real(name: str, **kw) -> ChatTemplate:
    with open(os.path.join(TEMPLATES_DIR, name), encoding="utf-8") as f:
        return ChatTemplate(f.read(), now=CLOCK, **kw)


def test_every_template_is_covered():
    if not HAVE_TEMPLATES:
        pytest.skip(f"no upstream templates in {TEMPLATES_DIR}: run tests/assets/fetch_templates.py")
    assert len(ALL) >= 60
    assert set(SPECIAL_INPUT) <= set(ALL)


@NEEDS_TEMPLATES
@pytest.mark.parametrize("name", ALL)
def test_every_template_renders_a_conversation(name):
    extra = dict(SPECIAL_INPUT.get(name, {}))
    msgs = CHAT[1:] if extra.pop("no_system", False) else CHAT
    tools = extra.pop("tools", None)
    t = real(name, bos_token="<s>", eos_token="</s>")
    out = t.render(msgs, tools=tools, **extra)
    assert "What is 2+2?" in out and "Hi" in out
    no_prompt = t.render(msgs, tools=tools, add_generation_prompt=False, **extra)
    assert "What is 2+2?" in no_prompt
    # the generation prompt only ever adds text at the end
    assert out.startswith(no_prompt.rstrip()) or len(out) >= len(no_prompt)


@NEEDS_TEMPLATES
@pytest.mark.parametrize("name", ALL)
def test_every_template_renders_multi_part_content(name):
    extra = dict(SPECIAL_INPUT.get(name, {}))
    extra.pop("no_system", None)
    tools = extra.pop("tools", None)
    t = real(name, bos_token="<s>", eos_token="</s>")
    msgs = [{"role": "user", "content": [{"type": "text", "text": "alpha"},
                                         {"type": "text", "text": "beta"}]}]
    out = t.render(msgs, tools=tools, **extra)
    assert "alpha" in out and "beta" in out
    if t.content_format == CONTENT_STRING:
        assert "alpha beta" in out
    image = [PARTS[0], PARTS[1], PARTS[3]]  # text, image, text (audio: few models take it)
    if name == "Spark2.5.jinja":  # a text-only model: its template refuses media parts
        with pytest.raises(TemplateError, match="image"):
            t.render([{"role": "user", "content": image}])
        return
    out = t.render([{"role": "user", "content": image}], tools=tools, **extra)
    assert "look" in out and "here" in out and "cat.png" not in out


@NEEDS_TEMPLATES
@pytest.mark.parametrize("name, fmt", [
    ("Qwen-Qwen2.5-7B-Instruct.jinja", CONTENT_STRING),
    ("Qwen-Qwen3-0.6B.jinja", CONTENT_STRING),
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", CONTENT_STRING),
    ("meta-llama-Llama-3.3-70B-Instruct.jinja", CONTENT_STRING),
    ("deepseek-ai-DeepSeek-V3.1.jinja", CONTENT_STRING),
    ("openai-gpt-oss-120b.jinja", CONTENT_STRING),
    ("Qwen3.5-4B.jinja", CONTENT_OPENAI),
    ("google-gemma-4-31B-it.jinja", CONTENT_OPENAI),
    ("Mistral-Small-3.2-24B-Instruct-2506.jinja", CONTENT_OPENAI),
    ("moonshotai-Kimi-K2.jinja", CONTENT_OPENAI),
    ("Cohere2MoE.jinja", CONTENT_OPENAI),
])
def test_content_format_of_real_templates(name, fmt):
    assert real(name).content_format == fmt


@NEEDS_TEMPLATES
def test_parts_aware_templates_place_their_own_image_token():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "what is"},
                                         {"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]
    assert "what is<|vision_start|><|image_pad|><|vision_end|>" in real("Qwen3.5-4B.jinja").render(msgs)
    assert "what is<|image|>" in real("google-gemma-4-31B-it.jinja").render(msgs)
    assert "[INST]what is[IMG][/INST]" in real("Mistral-Small-3.2-24B-Instruct-2506.jinja").render(msgs)


# ChatML family ------------------------------------------------------------------------

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@NEEDS_TEMPLATES
def test_qwen25_plain_chat():
    t = real("Qwen-Qwen2.5-7B-Instruct.jinja")
    user = [{"role": "user", "content": "hi"}]
    assert t.render(user) == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert t.render([{"role": "system", "content": "Be brief."}] + user,
                    add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n")
    assert t.render(user + [{"role": "assistant", "content": "Hel"}], continue_final_message=True) == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nHel")


@NEEDS_TEMPLATES
def test_qwen25_tools_tool_calls_and_tool_results():
    t = real("Qwen-Qwen2.5-7B-Instruct.jinja")
    msgs = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    out = t.render(msgs, tools=TOOLS)
    assert out == (
        "<|im_start|>system\n" + QWEN_DEFAULT_SYSTEM +
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(TOOLS[0], ensure_ascii=False) +
        "\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n")


@NEEDS_TEMPLATES
def test_qwen3_thinking_toggle():
    t = real("Qwen-Qwen3-0.6B.jinja")
    msgs = [{"role": "user", "content": "hi"}]
    base = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert t.render(msgs) == base
    assert t.render(msgs, chat_template_kwargs={"enable_thinking": True}) == base
    assert t.render(msgs, chat_template_kwargs={"enable_thinking": False}) == base + "<think>\n\n</think>\n\n"
    # reasoning in an earlier assistant turn is dropped from the history
    history = [{"role": "user", "content": "q1"},
               {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nA1"},
               {"role": "user", "content": "q2"}]
    assert t.render(history, add_generation_prompt=False) == (
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n")


@NEEDS_TEMPLATES
def test_qwq_opens_a_think_block():
    t = real("Qwen-QwQ-32B.jinja")
    msgs = [{"role": "user", "content": "hi"}]
    assert t.render(msgs, enable_thinking=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n")


@NEEDS_TEMPLATES
def test_hermes3_tool_use():
    t = real("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", bos_token="<|begin_of_text|>")
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    out = t.render(msgs, tools=TOOLS)
    assert out.startswith("<|begin_of_text|><|im_start|>system\nYou are a function calling AI model.")
    assert "<tools> " in out and '"name": "get_weather"' in out
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
            '\n</tool_call><|im_end|>\n') in out
    assert "<|im_start|>tool\n<tool_response>\nsunny\n</tool_response><|im_end|>" in out
    assert out.endswith("<|im_start|>assistant\n")


# Llama 3.x ----------------------------------------------------------------------------

def llama_header(role):
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


@NEEDS_TEMPLATES
def test_llama31_system_and_date():
    t = real("meta-llama-Llama-3.1-8B-Instruct.jinja", bos_token="<|begin_of_text|>")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    expected = ("<|begin_of_text|>" + llama_header("system") +
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                "Be brief.<|eot_id|>" + llama_header("user") + "hi<|eot_id|>" + llama_header("assistant"))
    assert t.render(msgs) == expected  # 3.1 has a fixed default date
    assert t.render(msgs, date_string="01 Jan 2026") == expected.replace("26 Jul 2024", "01 Jan 2026")
    assert t.render(msgs, add_generation_prompt=False) == expected[: -len(llama_header("assistant"))]


@NEEDS_TEMPLATES
@pytest.mark.parametrize("name, date", [("meta-llama-Llama-3.2-3B-Instruct.jinja", "26 Jul 2025"),
                                        ("meta-llama-Llama-3.3-70B-Instruct.jinja", "26 Jul 2024")])
def test_llama32_date_comes_from_strftime_now_33_has_a_fixed_one(name, date):
    out = real(name, bos_token="<|begin_of_text|>").render([{"role": "user", "content": "hi"}])
    assert out == ("<|begin_of_text|>" + llama_header("system") +
                   f"Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n<|eot_id|>" +
                   llama_header("user") + "hi<|eot_id|>" + llama_header("assistant"))


@NEEDS_TEMPLATES
def test_llama31_tools_and_tool_calls():
    t = real("meta-llama-Llama-3.1-8B-Instruct.jinja", bos_token="<|begin_of_text|>")
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'}]
    out = t.render(msgs, tools=TOOLS)
    # tools go into the first user message (tools_in_user_message defaults to true)
    assert "Environment: ipython\n" in out
    assert (llama_header("user") + "Given the following functions, please respond with a JSON for a "
            "function call with its proper arguments that best answers the given prompt.") in out
    assert json.dumps(TOOLS[0], indent=4) in out
    assert "Weather in Paris?<|eot_id|>" in out
    assert (llama_header("assistant") + '{"name": "get_weather", "parameters": {"city": "Paris"}}'
            "<|eot_id|>") in out
    # the template JSON-encodes a tool result that is a string too (strings are iterable
    # in Jinja, and it tests `is iterable`): an upstream quirk HF shares
    assert out.endswith(llama_header("ipython") + '"{\\"temp\\": 21}"<|eot_id|>' + llama_header("assistant"))
    with pytest.raises(TemplateError, match="single tool-calls"):
        two = dict(msgs[1], tool_calls=msgs[1]["tool_calls"] * 2)
        t.render([msgs[0], two], tools=TOOLS)


# Other families -----------------------------------------------------------------------

@NEEDS_TEMPLATES
def test_deepseek_r1_distill():
    t = real("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", bos_token="<｜begin▁of▁sentence｜>")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    # llama.cpp's copy closes the think block unless enable_thinking is set
    assert t.render(msgs) == "<｜begin▁of▁sentence｜>Be brief.<｜User｜>hi<｜Assistant｜><think>\n</think>"
    assert t.render(msgs, enable_thinking=True) == \
        "<｜begin▁of▁sentence｜>Be brief.<｜User｜>hi<｜Assistant｜><think>\n"
    # the reasoning of an earlier answer is cut from the history
    hist = msgs + [{"role": "assistant", "content": "<think>x</think>A"}, {"role": "user", "content": "b"}]
    assert "<｜Assistant｜>A<｜end▁of▁sentence｜><｜User｜>b" in t.render(hist)


@NEEDS_TEMPLATES
def test_deepseek_v31_thinking_kwarg():
    t = real("deepseek-ai-DeepSeek-V3.1.jinja", bos_token="<｜begin▁of▁sentence｜>")
    msgs = [{"role": "user", "content": "hi"}]
    assert t.render(msgs) == "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think></think>"
    assert t.render(msgs, chat_template_kwargs={"thinking": True}) == \
        "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>"


@NEEDS_TEMPLATES
def test_mistral_nemo_format_and_role_alternation():
    t = real("mistralai-Mistral-Nemo-Instruct-2407.jinja", bos_token="<s>", eos_token="</s>")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "bye"}]
    # the system message is prepended to the last user message
    assert t.render(msgs) == "<s>[INST]hi[/INST]Hello</s>[INST]Be brief.\n\nbye[/INST]"
    with pytest.raises(TemplateError, match="must alternate"):
        t.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


@NEEDS_TEMPLATES
def test_gpt_oss_harmony_header():
    t = real("openai-gpt-oss-120b.jinja")
    out = t.render([{"role": "user", "content": "hi"}], reasoning_effort="high")
    assert out == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2025-07-26\n\nReasoning: high\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message."
        "<|end|><|start|>user<|message|>hi<|end|><|start|>assistant")


@NEEDS_TEMPLATES
def test_phi35():
    t = real("microsoft-Phi-3.5-mini-instruct.jinja", eos_token="<|endoftext|>")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert t.render(msgs) == "<|system|>\nBe brief.<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n"


@NEEDS_TEMPLATES
def test_gemma2_format():
    t = real("google-gemma-2-2b-it.jinja", bos_token="<bos>")
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "ok"}]
    assert t.render(msgs) == ("<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nyo"
                              "<end_of_turn>\n<start_of_turn>user\nok<end_of_turn>\n<start_of_turn>model\n")


@NEEDS_TEMPLATES
def test_gemma2_refuses_a_system_message():
    with pytest.raises(TemplateError, match="System role not supported"):
        real("google-gemma-2-2b-it.jinja").render(CHAT)


@NEEDS_TEMPLATES
def test_command_r7b_documents():
    t = real("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", bos_token="<BOS_TOKEN>")
    docs = [{"title": "Tides", "text": "The moon pulls the sea."}]
    # with documents the template also lists the tools, so it needs a tools list
    out = t.render([{"role": "user", "content": "why tides?"}], documents=docs, tools=[])
    assert "The moon pulls the sea." in out and "Tides" in out
    assert "The moon pulls the sea." not in t.render([{"role": "user", "content": "why tides?"}])
    assert "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>" in out[-80:]


@NEEDS_TEMPLATES
def test_command_r_plus_tool_use_needs_tools():
    t = real("CohereForAI-c4ai-command-r-plus-tool_use.jinja", bos_token="<BOS_TOKEN>")
    with pytest.raises(TemplateError):
        t.render([{"role": "user", "content": "hi"}])
    out = t.render([{"role": "user", "content": "hi"}], tools=TOOLS)
    assert "get_weather" in out


# Against transformers, when it happens to be installed -------------------------------

TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{
        "id": "call00001", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "sunny"},
]


def hf_render(src, msgs, **kw):
    utils = pytest.importorskip("transformers.utils.chat_template_utils")
    try:
        rendered, _ = utils.render_jinja_template(conversations=[msgs], chat_template=src, **kw)
    except Exception as exc:  # noqa: BLE001 - any failure: ours must fail too
        return exc
    return rendered[0]


def ours_or_error(t, msgs, **kw):
    try:
        return t.render(msgs, **kw)
    except TemplateError as exc:
        return exc


@NEEDS_TEMPLATES
@pytest.mark.parametrize("name", ALL)
def test_matches_transformers(name):
    """Differential: ours and HF's render_jinja_template agree on every template, for a
    plain chat, a tool round trip, generation prompt off and continue_final_message (HF
    receives the messages already prepared: content-format conversion and argument
    parsing are the gateway's job, not HF's)."""
    pytest.importorskip("transformers.utils.chat_template_utils")
    with open(os.path.join(TEMPLATES_DIR, name), encoding="utf-8") as f:
        src = f.read()
    extra = dict(SPECIAL_INPUT.get(name, {}))
    chat = CHAT[1:] if extra.pop("no_system", False) else CHAT
    tools = extra.pop("tools", None)
    t = ChatTemplate(src, bos_token="<s>", eos_token="</s>")  # real clock, as HF
    cases = [
        (chat, dict(tools=tools, add_generation_prompt=True)),
        (chat, dict(tools=tools, add_generation_prompt=False)),
        (TOOL_CHAT, dict(tools=TOOLS, add_generation_prompt=True)),
        (chat[:-1], dict(tools=tools, continue_final_message=True)),
    ]
    for msgs, kw in cases:
        ours = ours_or_error(t, msgs, **kw, **extra)
        prepared = prepare_messages(msgs, t.content_format)
        theirs = hf_render(src, prepared, bos_token="<s>", eos_token="</s>", **kw, **extra)
        if isinstance(theirs, Exception):
            assert isinstance(ours, TemplateError), (kw, theirs, ours)
        else:
            assert ours == theirs, kw
