"""The thinking toggle: where a family's output starts, given the request's
``chat_template_kwargs``, read off each family's chat template.

A template that ends the prompt with the opener (``<think>``) makes the output start
inside reasoning; one that ends it with an empty block (``<think></think>``) or no
opener at all makes it start outside. Only the families whose template reads a toggle
are listed; for the rest the toggle changes nothing and the parser's default holds.

``TOGGLES``: parser name -> (kwarg names read, in order; value when absent; starts
inside when on; starts inside when off).
"""
from __future__ import annotations

TOGGLES: dict = {
    # DeepSeek-R1 templates pre-fill "<think>\n"; enable_thinking false adds "</think>"
    "deepseek_r1": (("enable_thinking",), True, True, False),
    # Qwen3: thinking on, the model writes "<think>"; off pre-fills an empty block
    "qwen3": (("enable_thinking",), True, False, False),
    # GLM-4.5/4.6: as Qwen3 ("\n<think></think>" when off)
    "glm45": (("enable_thinking",), True, False, False),
    # DeepSeek-V3.1: ``thinking`` (or ``enable_thinking``), off by default;
    # on pre-fills "<think>", off "<think></think>"
    "deepseek_v31": (("thinking", "enable_thinking"), False, True, False),
    # DeepSeek-V4: the same toggle; on pre-fills "<think>", off "</think>"
    "deepseek_v4": (("thinking", "enable_thinking"), False, True, False),
    # Nemotron Nano v3: enable_thinking defaults to true and pre-fills "<think>\n";
    # off pre-fills "<think></think>"
    "nano_v3": (("enable_thinking",), True, True, False),
    # Kimi-K2.5: ``thinking`` on by default pre-fills "<think>"
    "kimi_k25": (("thinking",), True, True, False),
    # Kimi K3: ``thinking`` on by default opens the think channel, off the response one
    "kimi_k3": (("thinking",), True, True, False),
    # Command A reasoning: ``reasoning`` true pre-fills <|START_THINKING|>, otherwise
    # an empty thinking block is pre-filled
    "cohere_cmd": (("reasoning", "enable_thinking"), False, True, False),
}


def in_reasoning(name: str, chat_template_kwargs) -> bool | None:
    """Whether parser ``name``'s output starts inside reasoning for these template
    kwargs; ``None`` when the family has no toggle or the kwargs are not an object
    (the parser's default holds)."""
    spec = TOGGLES.get(name)
    if spec is None or type(chat_template_kwargs) is not dict:
        return None
    keys, absent, on, off = spec
    for k in keys:
        v = chat_template_kwargs.get(k)
        if v is not None:
            return on if v else off  # "template truthiness": any non-false value is on
    return on if absent else off
