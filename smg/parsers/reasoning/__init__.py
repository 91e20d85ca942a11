"""Reasoning parsers: split generated text into ``reasoning_text`` and
``normal_text`` (``base``: the machine and result type; ``families``: the 16 parsers;
``registry``: names, ``create``, the model-name map; ``toggle``: the thinking toggle of
``chat_template_kwargs``)."""
from smg.parsers.reasoning.base import ReasoningParser, ReasoningResult

__all__ = ["ReasoningParser", "ReasoningResult"]
