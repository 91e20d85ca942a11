"""Reasoning parsers: vectors per family written from the chat templates' markers,
each checked in complete mode and streamed split at every position; the registry, the
thinking toggle and ``separate_reasoning``."""
from __future__ import annotations

import pytest

from smg.parsers.reasoning import registry, toggle
from smg.parsers.reasoning.base import ReasoningResult
from smg.parsers.reasoning.families import PARSERS

SMG_NAMES = {"base", "passthrough", "deepseek_r1", "qwen3", "qwen3_thinking", "kimi", "glm45", "step3",
             "minimax", "cohere_cmd", "nano_v3", "inkling", "deepseek_v31", "kimi_k25", "kimi_thinking",
             "kimi_k3",
             "deepseek_v4", "deepseek_v41", "hy_v4", "gemma4"}  # the four 1.13 added

THINK = ("<think>", "</think>")
# name -> (opener, closer, starts inside reasoning) for the think-shaped families
THINK_SHAPED = {
    "base": THINK + (False,),
    "deepseek_r1": THINK + (True,),
    "qwen3": THINK + (False,),
    "qwen3_thinking": THINK + (True,),
    "glm45": THINK + (False,),
    "step3": THINK + (True,),
    "minimax": THINK + (True,),
    "nano_v3": THINK + (False,),
    "deepseek_v31": THINK + (False,),
    "kimi_k25": THINK + (False,),
    "kimi_thinking": THINK + (True,),
    "deepseek_v4": THINK + (False,),
    "kimi": ("\u25c1think\u25b7", "\u25c1/think\u25b7", False),
    "cohere_cmd": ("<|START_THINKING|>", "<|END_THINKING|>", False),
}


def think_vectors(name):
    """(text, normal, reasoning) written from the family's markers."""
    s, e, inside = THINK_SHAPED[name]
    v = [
        (f"{s}step one{e}The answer.", "The answer.", "step one"),                  # reasoning then content
        (f"{s}cut off mid-thought", "", "cut off mid-thought"),                     # unterminated
        ("", "", ""),                                                               # empty
        (f"{s}思考 ✓ é 🤔{e}答え 🎉", "答え 🎉", "思考 ✓ é 🤔"),                        # unicode
        (f"{s}\n r \n{e}\n\nc ", "\n\nc ", "\n r \n"),                              # byte-faithful whitespace
        (f"{s}a{s}b{e}c", "c", "ab"),                                               # a repeated opener is noise
        (f"{s}a{e}b{s}c{e}d", f"bc{e}d", "a"),                                      # one block; a later closer is text
        (f"{s}a{e}b{s[:3]}", f"b{s[:3]}", "a"),                         # a partial marker at the end is text
        (f"{s}a{e[:-1]}", "", f"a{e[:-1]}"),                                        # an unfinished closer is reasoning
        (f"{s}{e}content", "content", ""),                                          # empty reasoning
    ]
    if inside:
        v += [
            (f"pre-filled opener{e}answer", "answer", "pre-filled opener"),         # no opening tag
            ("no markers at all", "", "no markers at all"),
            (f"pre{s}a{e}b", "b", "prea"),
        ]
    else:
        v += [
            (f"no opener{e}answer", f"no opener{e}answer", ""),                     # a closer alone is text
            ("no markers at all", "no markers at all", ""),
            (f"pre{s}a{e}b", "preb", "a"),                              # text before the opener stays content
        ]
    return v


K3_OPEN, K3_CLOSE = "<|open|>think<|sep|>", "<|close|>think<|sep|>"
K3_RESP, K3_RESP_END = "<|open|>response<|sep|>", "<|close|>response<|sep|>"
K3_MSG, K3_MSG_END = "<|open|>message<|sep|>", "<|close|>message<|sep|>"
K3_TOOLS = "<|open|>tools<|sep|>"
INK_T, INK_X, INK_V = "<|content_thinking|>", "<|content_text|>", "<|content_invoke_tool_text|>"
INK_END, INK_SAMPLE, INK_MSG = "<|end_message|>", "<|content_model_end_sampling|>", "<|message_model|>"

GEMMA_T, GEMMA_E = "<|channel>thought\n", "<channel|>"

OTHER_VECTORS = {
    "deepseek_v41": [
        ("<think>a</think>b<think>c</think>d", "bd", "ac"),             # blocks repeat
        ("x<think>a</think>b<think>c", "xb", "ac"),
        ("<think>a</think>b</think>c", "bc", "a"),                        # a stray closer is removed
        ("x</think>", "x", ""),
        ("<think>a<think>b</think>c", "c", "ab"),
        ("plain", "plain", ""),
        ("", "", ""),
    ],
    "hy_v4": [
        ("<think>a</think>b<think>c</think>d", "b<think>c</think>d", "a"),  # one block
        ("x<think>a</think>b<think>c", "xb<think>c", "a"),
        ("<think>a</think>b</think>c", "b</think>c", "a"),
        ("x</think>y</think>", "xy</think>", ""),                          # a closer first ends the block
        ("<think>unterminated", "", "unterminated"),
        ("plain", "plain", ""),
    ],
    "gemma4": [
        (f"{GEMMA_T}abc{GEMMA_E}def", "def", "abc"),
        (f"x{GEMMA_T}a{GEMMA_E}b{GEMMA_T}c{GEMMA_E}d", "xbd", "ac"),    # the thought channel repeats
        (f"<|channel>abc{GEMMA_E}def", "<|channel>abcdef", ""),           # only the thought channel
        (f"<|channel>thought abc{GEMMA_E}d", "<|channel>thought abcd", ""),
        (f"{GEMMA_T}a{GEMMA_T}b{GEMMA_E}c", "c", "ab"),
        (f"{GEMMA_T}unterminated", "", "unterminated"),
        ("<think>a</think>b", "<think>a</think>b", ""),
    ],
    "passthrough": [
        ("<think>a</think>b", "<think>a</think>b", ""),
        ("", "", ""),
        ("plain ✓", "plain ✓", ""),
    ],
    "kimi_k3": [
        (f"{K3_MSG}{K3_OPEN}abc{K3_CLOSE}{K3_RESP}def{K3_RESP_END}{K3_MSG_END}", "def", "abc"),
        (f"{K3_OPEN}abc{K3_TOOLS}T", f"{K3_TOOLS}T", "abc"),        # a tools channel ends reasoning, kept
        (f"{K3_OPEN}abc{K3_RESP}def", "def", "abc"),                # so does the response channel
        (f"hello{K3_RESP_END}", "hello", ""),                       # wrappers are removed from content
        (f"{K3_OPEN}a{K3_CLOSE}b{K3_OPEN}c{K3_CLOSE}d", f"b{K3_OPEN}c{K3_CLOSE}d", "a"),
        (f"{K3_OPEN}unterminated", "", "unterminated"),
        ("<think>a</think>b", "<think>a</think>b", ""),
        ("plain", "plain", ""),
        ("", "", ""),
    ],
    "inkling": [
        (f"{INK_T}abc{INK_X}def{INK_END}", "def", "abc"),
        (f"{INK_MSG}{INK_T}abc{INK_X}def{INK_SAMPLE}", "def", "abc"),
        (f"abc{INK_T}x{INK_X}y", "abcy", "x"),
        (f"{INK_T}a{INK_X}b{INK_T}c{INK_X}d", "bd", "ac"),         # thinking blocks repeat
        (f"{INK_T}a{INK_X}b{INK_V}tool{INK_SAMPLE}z", "bz", "a"),  # a text-mode tool call is dropped
        (f"{INK_V}x{INK_X}y{INK_END}z", "z", ""),                   # ... up to the end of the message
        (f"{INK_MSG}x{INK_T}y", "", "y"),                            # a message header is dropped
        (f"x{INK_END}y", "xy", ""),
        (f"{INK_T}unterminated", "", "unterminated"),
        ("plain", "plain", ""),
        ("", "", ""),
    ],
}


def all_vectors():
    out = []
    for name in THINK_SHAPED:
        out += [(name,) + v for v in think_vectors(name)]
    for name, vs in OTHER_VECTORS.items():
        out += [(name,) + v for v in vs]
    return out


VECTORS = all_vectors()


def stream(parser, chunks) -> ReasoningResult:
    normal, reasoning = [], []
    for c in chunks:
        r = parser.feed(c)
        normal.append(r.normal_text)
        reasoning.append(r.reasoning_text)
    r = parser.finish()
    normal.append(r.normal_text)
    reasoning.append(r.reasoning_text)
    return ReasoningResult("".join(normal), "".join(reasoning))


def test_the_registry_holds_smgs_names():
    assert set(registry.names()) == SMG_NAMES
    assert {cls.name for cls in PARSERS} == SMG_NAMES
    assert set(THINK_SHAPED) | set(OTHER_VECTORS) == SMG_NAMES  # every parser has vectors


@pytest.mark.parametrize("name,text,normal,reasoning", VECTORS)
def test_complete_mode(name, text, normal, reasoning):
    assert registry.create(name).parse(text) == ReasoningResult(normal, reasoning)


@pytest.mark.parametrize("name,text,normal,reasoning", VECTORS)
def test_streaming_split_at_every_position(name, text, normal, reasoning):
    want = ReasoningResult(normal, reasoning)
    assert stream(registry.create(name), [text]) == want
    assert stream(registry.create(name), list(text)) == want        # one character at a time
    for i in range(len(text) + 1):
        assert stream(registry.create(name), [text[:i], text[i:]]) == want, i
        for j in range(i, len(text) + 1, 3):
            assert stream(registry.create(name), [text[:i], text[i:j], text[j:]]) == want, (i, j)


def test_a_marker_split_across_chunks_is_held_back_until_it_completes():
    p = registry.create("qwen3")
    assert p.feed("hi <th") == ReasoningResult("hi ", "")   # "<th" could still become "<think>"
    assert p.feed("ink>plan</thi") == ReasoningResult("", "plan")
    assert p.in_reasoning
    assert p.feed("nk>done") == ReasoningResult("done", "")
    assert not p.in_reasoning
    assert p.finish() == ReasoningResult()


def test_a_held_tail_that_cannot_become_a_marker_is_released_at_once():
    p = registry.create("qwen3")
    assert p.feed("a <") == ReasoningResult("a ", "")
    assert p.feed("b>") == ReasoningResult("<b>", "")       # "<b" is no marker's prefix
    p = registry.create("deepseek_r1")
    assert p.feed("x</") == ReasoningResult("", "x")
    assert p.finish() == ReasoningResult("", "</")           # the end of the stream: literal text


def test_complete_mode_does_not_touch_the_stream():
    p = registry.create("deepseek_r1")
    p.feed("thinking</think>")
    assert not p.in_reasoning
    assert p.parse("more") == ReasoningResult("", "more")   # from the starting state
    assert p.feed("answer") == ReasoningResult("answer", "")


def test_held_back_text_is_bounded_by_the_longest_marker():
    p = registry.create("inkling")
    longest = max(len(m) for rules in type(p).RULES.values() for m, _, _ in rules)
    for ch in INK_SAMPLE[:-1]:
        p.feed(ch)
        assert len(p._held) < longest
    assert p.feed(">").normal_text == ""                     # it completed: a marker, consumed


@pytest.mark.parametrize("name", sorted(SMG_NAMES))
def test_no_input_raises(name):
    p = registry.create(name)
    for junk in (None, 123, b"<think>", "\x00\ud800", "<" * 50, "\u25c1" * 9):
        p.parse(junk)
        p.feed(junk)
    p.finish()


def test_separate_reasoning_false_keeps_everything_in_the_content():
    p = registry.create("deepseek_r1", separate_reasoning=False)
    assert p.parse("<think>a</think>b") == ReasoningResult("<think>a</think>b", "")
    assert stream(p, ["r</th", "ink>c"]) == ReasoningResult("r</think>c", "")


def test_in_reasoning_overrides_the_default():
    assert registry.create("qwen3", in_reasoning=True).parse("r</think>c") == ReasoningResult("c", "r")
    assert registry.create("deepseek_r1", in_reasoning=False).parse("r</think>c") == \
        ReasoningResult("r</think>c", "")


def test_unknown_names_and_options_are_refused():
    with pytest.raises(KeyError):
        registry.create("nope")
    with pytest.raises(TypeError):
        registry.create("qwen3", stream_reasoning=False)


# -- the thinking toggle (chat_template_kwargs) ------------------------------------------

@pytest.mark.parametrize("name,kwargs,inside", [
    ("qwen3", {"enable_thinking": False}, False),       # "<think>\n\n</think>\n\n" pre-filled
    ("qwen3", {}, False),                                # the model writes "<think>" itself
    ("glm45", {"enable_thinking": False}, False),
    ("deepseek_v31", {}, False),                         # "<think></think>" pre-filled by default
    ("deepseek_v31", {"thinking": True}, True),          # "<think>" pre-filled
    ("deepseek_v31", {"enable_thinking": True}, True),
    ("nano_v3", {}, True),                               # enable_thinking defaults to true
    ("nano_v3", {"enable_thinking": False}, False),
    ("kimi_k25", {"thinking": False}, False),
    ("kimi_k3", {}, True),                               # the think channel is opened by default
    ("kimi_k3", {"thinking": False}, False),
    ("cohere_cmd", {"reasoning": True}, True),
    ("cohere_cmd", {}, False),
    ("deepseek_r1", {"enable_thinking": False}, False),
    ("deepseek_r1", {}, True),
    ("deepseek_v4", {"thinking": True}, True),
    ("deepseek_v4", {}, False),
])
def test_thinking_toggle(name, kwargs, inside):
    assert toggle.in_reasoning(name, kwargs) is inside
    p = registry.create(name, chat_template_kwargs=kwargs)
    assert p.in_reasoning is inside


def test_families_whose_template_reads_no_toggle_keep_their_default():
    for name in ("qwen3_thinking", "step3", "minimax", "kimi_thinking"):
        assert toggle.in_reasoning(name, {"enable_thinking": False, "thinking": False}) is None
        assert registry.create(name, chat_template_kwargs={"enable_thinking": False}).in_reasoning
    assert toggle.in_reasoning("qwen3", "not an object") is None
    # unknown kwargs: the parser's own default (nano_v3 starts outside without them)
    assert not registry.create("nano_v3").in_reasoning


def test_in_reasoning_wins_over_the_toggle():
    p = registry.create("deepseek_v31", in_reasoning=False, chat_template_kwargs={"thinking": True})
    assert not p.in_reasoning


# -- the model-name map ------------------------------------------------------------------

@pytest.mark.parametrize("model,name", [
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "deepseek_r1"),   # before "qwen"
    ("deepseek-ai/DeepSeek-V3.1", "deepseek_v31"),
    ("deepseek-v3-1-terminus", "deepseek_v31"),
    ("Qwen/Qwen3-Thinking", "qwen3_thinking"),
    ("qwen-thinking-mini", "qwen3_thinking"),
    ("Qwen/Qwen3-8B", "qwen3"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen3"),
    ("zai/glm45-air", "glm45"),
    ("glm47-flash", "glm45"),
    ("GLM-5", "glm45"),
    ("moonshotai/Kimi-K2-Thinking", "kimi_thinking"),
    ("moonshotai/Kimi-K2.5", "kimi_k25"),
    ("moonshotai/Kimi-K3", "kimi_k3"),
    ("kimi_k3-preview", "kimi_k3"),
    ("moonshotai/Kimi-K2-Instruct", "kimi"),
    ("stepfun/step3", "step3"),
    ("MiniMaxAI/MiniMax-M2", "minimax"),
    ("mm-m2-chat", "minimax"),
    ("CohereForAI/c4ai-command-r-plus", "cohere_cmd"),
    ("command-a-reasoning", "cohere_cmd"),
    ("nvidia/NVIDIA-Nemotron-Nano-9B", "nano_v3"),
    ("nemotron-super-49b", "nano_v3"),
    ("nano-v3", "nano_v3"),
    ("thinkingmachines/inkling-small", "inkling"),
    ("meta-llama/Llama-3.1-8B", "passthrough"),
    ("", "passthrough"),
    (None, "passthrough"),
])
def test_for_model(model, name):
    assert registry.for_model(model) == name
