"""Parser selection: model card → worker labels → the configured name → the model-name
map → passthrough."""
from __future__ import annotations

import pytest

from smg.parsers import select


def test_the_card_wins():
    card = {"id": "m", "reasoning_parser": "kimi"}
    assert select.select("deepseek-r1", card, "qwen3", "reasoning") == "kimi"


def test_labels_come_after_the_card():
    labels = {"reasoning_parser": "step3"}
    assert select.select("deepseek-r1", {"id": "m"}, "qwen3", "reasoning", labels=labels) == "step3"
    assert select.select("deepseek-r1", {"reasoning_parser": "glm45"}, None, "reasoning",
                         labels=labels) == "glm45"


def test_the_configured_name_comes_before_the_model_map():
    assert select.select("deepseek-r1", None, "qwen3", "reasoning") == "qwen3"
    assert select.select("deepseek-r1", {"id": "m"}, None, "reasoning") == "deepseek_r1"


def test_passthrough_when_nothing_names_a_parser():
    assert select.select("my-model", None, None, "reasoning") == "passthrough"
    assert select.select(None, None, None, "reasoning") == "passthrough"


def test_an_unregistered_card_or_label_value_is_passed_over():
    assert select.select("qwen3-8b", {"reasoning_parser": "nope"}, None, "reasoning",
                         labels={"reasoning_parser": 5}) == "qwen3"


def test_the_kind_picks_the_card_field():
    card = {"reasoning_parser": "kimi", "tool_parser": "json"}
    assert select.select("x", card, None, "reasoning") == "kimi"
    with pytest.raises(ValueError):
        select.select("x", card, None, "grammar")


def test_check_configured():
    assert select.check_configured(None, "reasoning") is None
    assert select.check_configured("deepseek_r1", "reasoning") is None
    err = select.check_configured("deepseek-r1", "reasoning")
    assert "reasoning parser 'deepseek-r1' is not one smg parses" in err and "deepseek_r1" in err


def _tool_registry():
    try:
        return select.registry("tool")
    except ImportError:
        pytest.skip("the tool-parser registry is not built yet")


def test_tool_kind_uses_the_tool_registry():
    reg = _tool_registry()
    assert select.select("x", {"tool_parser": "passthrough"}, None, "tool") == "passthrough"
    assert select.select("x", None, None, "tool") == reg.for_model("x")
    assert select.select("x", {"tool_parser": "no-such-parser"}, None, "tool") == reg.for_model("x")
