"""The reasoning parsers, one class per registered name: each is its markers and
where its output starts (smg/parsers/reasoning/base.py has the machine).

Where a family starts follows its chat template's generation prompt: a template that
pre-fills the opener (``<think>\\n`` after the assistant header: DeepSeek-R1,
Qwen3-Thinking, Step-3, MiniMax-M2, Kimi-K2-Thinking) makes the output start inside
reasoning, so everything before the closer is reasoning even without an opening tag;
the others need the opening marker (Qwen3, GLM-4.5, DeepSeek-V3.1, Kimi-K2.5,
Nemotron Nano v3, Command A, Kimi K3 and Inkling by default). The request's thinking
toggle can move the start either way (smg/parsers/reasoning/toggle.py).
"""
from __future__ import annotations

from smg.parsers.reasoning.base import AFTER, DROP, HEADER, IN, OUT, ReasoningParser, think_rules

_THINK = think_rules("<think>", "</think>")


class BaseParser(ReasoningParser):
    """``base``: ``<think>…</think>``, starts outside reasoning."""

    __slots__ = ()
    name = "base"


class Passthrough(ReasoningParser):
    """``passthrough``: no markers; every byte is content, wherever the toggle says
    the output starts."""

    __slots__ = ()
    name = "passthrough"
    RULES: dict = {}

    def __init__(self, *, in_reasoning: bool | None = None) -> None:
        super().__init__(in_reasoning=False)


class DeepSeekR1(ReasoningParser):
    """``deepseek_r1``: the template pre-fills ``<think>\\n``."""

    __slots__ = ()
    name = "deepseek_r1"
    IN_REASONING = True


class Qwen3(ReasoningParser):
    """``qwen3``: the model writes ``<think>`` itself (thinking on), or the template
    pre-fills an empty ``<think>\\n\\n</think>\\n\\n`` (``enable_thinking: false``)."""

    __slots__ = ()
    name = "qwen3"


class Qwen3Thinking(ReasoningParser):
    """``qwen3_thinking`` (Qwen3-*-Thinking-2507): the template pre-fills ``<think>\\n``."""

    __slots__ = ()
    name = "qwen3_thinking"
    IN_REASONING = True


class Kimi(ReasoningParser):
    """``kimi`` (Kimi-K2-Instruct era): ``◁think▷…◁/think▷``, starts outside."""

    __slots__ = ()
    name = "kimi"
    RULES = think_rules("\u25c1think\u25b7", "\u25c1/think\u25b7")


class Glm45(ReasoningParser):
    """``glm45`` (GLM-4.5/4.6/4.7): as ``qwen3``; ``enable_thinking: false`` pre-fills
    ``<think></think>``."""

    __slots__ = ()
    name = "glm45"


class Step3(ReasoningParser):
    """``step3``: the template pre-fills ``<think>\\n``."""

    __slots__ = ()
    name = "step3"
    IN_REASONING = True


class MiniMax(ReasoningParser):
    """``minimax`` (MiniMax-M2): the template pre-fills ``<think>\\n``."""

    __slots__ = ()
    name = "minimax"
    IN_REASONING = True


class CohereCmd(ReasoningParser):
    """``cohere_cmd`` (Command A reasoning): ``<|START_THINKING|>…<|END_THINKING|>``;
    the template pre-fills the opener only with ``reasoning: true``."""

    __slots__ = ()
    name = "cohere_cmd"
    RULES = think_rules("<|START_THINKING|>", "<|END_THINKING|>")


class NanoV3(ReasoningParser):
    """``nano_v3`` (Nemotron Nano/Super v3): ``<think>…</think>``; the template
    pre-fills ``<think>\\n`` unless ``enable_thinking`` is false."""

    __slots__ = ()
    name = "nano_v3"


class DeepSeekV31(ReasoningParser):
    """``deepseek_v31``: ``<think>…</think>``; the template pre-fills ``<think>`` with
    ``thinking: true`` and ``<think></think>`` otherwise."""

    __slots__ = ()
    name = "deepseek_v31"


class KimiK25(ReasoningParser):
    """``kimi_k25``: ``<think>…</think>``, starts outside unless the toggle says the
    template opened the block."""

    __slots__ = ()
    name = "kimi_k25"


class KimiThinking(ReasoningParser):
    """``kimi_thinking`` (Kimi-K2-Thinking): ``<think>…</think>``, starts inside."""

    __slots__ = ()
    name = "kimi_thinking"
    IN_REASONING = True


# Kimi K3's XTML channels: <|open|>NAME<|sep|> … <|close|>NAME<|sep|>
_K3_THINK_OPEN = "<|open|>think<|sep|>"
_K3_THINK_CLOSE = "<|close|>think<|sep|>"
_K3_WRAPPERS = ("<|open|>response<|sep|>", "<|close|>response<|sep|>",
                "<|open|>message<|sep|>", "<|close|>message<|sep|>")
_K3_RESPONSE_OPEN = _K3_WRAPPERS[0]
_K3_TOOLS_OPEN = "<|open|>tools<|sep|>"


class KimiK3(ReasoningParser):
    """``kimi_k3``: the ``think`` channel is reasoning; the ``response`` and
    ``message`` wrapper markers are removed from content; the ``tools`` channel is
    content, kept verbatim for the tool parser. Inside reasoning, the opening of a
    ``response`` or ``tools`` channel also ends the think channel (a forced tool call
    can jump straight from the pre-filled think opener into ``tools``). The template
    pre-fills the think opener with ``thinking`` on (its default)."""

    __slots__ = ()
    name = "kimi_k3"
    RULES = {
        OUT: ((_K3_THINK_OPEN, IN, False),) + tuple((w, OUT, False) for w in _K3_WRAPPERS),
        IN: ((_K3_THINK_CLOSE, AFTER, False), (_K3_RESPONSE_OPEN, AFTER, False),
             (_K3_TOOLS_OPEN, AFTER, True)),
        AFTER: tuple((w, AFTER, False) for w in _K3_WRAPPERS),
    }


# Inkling's content channels
_INK_THINKING = "<|content_thinking|>"
_INK_TEXT = "<|content_text|>"
_INK_TOOL = "<|content_invoke_tool_text|>"
_INK_ENDS = ("<|end_message|>", "<|content_model_end_sampling|>")
_INK_MESSAGE = "<|message_model|>"


def _inkling_rules() -> dict:
    # thinking -> reasoning, text -> content, a message header -> dropped until the
    # next content marker; a text-mode tool invocation -> dropped until the message
    # ends (content markers inside it are part of it); the end markers -> content
    ends = tuple((m, OUT, False) for m in _INK_ENDS) + ((_INK_MESSAGE, HEADER, False),)
    rules = ((_INK_THINKING, IN, False), (_INK_TOOL, DROP, False), (_INK_TEXT, OUT, False)) + ends
    return {OUT: rules, IN: rules, HEADER: rules, DROP: ends}


class Inkling(ReasoningParser):
    """``inkling``: channel markers switch between thinking (reasoning), text
    (content), a message header and a text-mode tool invocation (both discarded:
    tool calls arrive structured); end-of-message markers return to text and are
    removed. Thinking blocks may repeat."""

    __slots__ = ()
    name = "inkling"
    RULES = _inkling_rules()


class DeepSeekV4(ReasoningParser):
    """``deepseek_v4``: ``<think>…</think>``, starts outside."""

    __slots__ = ()
    name = "deepseek_v4"


class DeepSeekV41(ReasoningParser):
    """``deepseek_v41``: ``<think>…</think>`` blocks may repeat (interleaved thinking
    between tool calls); a stray closer is removed from content."""

    __slots__ = ()
    name = "deepseek_v41"
    RULES = {OUT: (("<think>", IN, False), ("</think>", OUT, False)),
             IN: (("<think>", IN, False), ("</think>", OUT, False))}


class HyV4(ReasoningParser):
    """``hy_v4`` (Hunyuan): one ``<think>…</think>`` block; a closer before any
    opener ends the (empty) block and is removed; markers after the block are content."""

    __slots__ = ()
    name = "hy_v4"
    RULES = {OUT: (("<think>", IN, False), ("</think>", AFTER, False)),
             IN: (("<think>", IN, False), ("</think>", AFTER, False))}


_GEMMA_THOUGHT = "<|channel>thought\n"
_GEMMA_END = "<channel|>"


class Gemma4(ReasoningParser):
    """``gemma4``: the ``thought`` channel, ``<|channel>thought\n…<channel|>``, may
    repeat; a stray channel closer is removed from content."""

    __slots__ = ()
    name = "gemma4"
    RULES = {OUT: ((_GEMMA_THOUGHT, IN, False), (_GEMMA_END, OUT, False)),
             IN: ((_GEMMA_THOUGHT, IN, False), (_GEMMA_END, OUT, False))}


# SMG's 16, then four that 1.13 added
PARSERS: tuple = (BaseParser, Passthrough, DeepSeekR1, Qwen3, Qwen3Thinking, Kimi, Glm45, Step3,
                  MiniMax, CohereCmd, NanoV3, Inkling, DeepSeekV31, KimiK25, KimiThinking, KimiK3,
                  DeepSeekV4, DeepSeekV41, HyV4, Gemma4)
