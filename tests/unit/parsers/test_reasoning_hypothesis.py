"""Hypothesis: for every registered reasoning parser, streaming equals complete mode
for every split of the text, nothing is invented, and the held-back tail stays
shorter than the longest marker."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smg.parsers.reasoning import registry
from smg.parsers.reasoning.base import ReasoningResult


def _markers(name: str) -> list:
    cls = type(registry.create(name))
    return sorted({m for rules in cls.RULES.values() for m, _, _ in rules})


def _texts(name: str):
    """Texts built from the parser's markers, their prefixes and suffixes, the other
    families' think markers, and free text (unicode included)."""
    ms = _markers(name) + ["<think>", "</think>"]
    atoms = st.one_of(
        st.sampled_from(ms),
        st.builds(lambda m, k: m[:k], st.sampled_from(ms), st.integers(1, 12)),
        st.builds(lambda m, k: m[k:], st.sampled_from(ms), st.integers(1, 12)),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
        st.sampled_from(["<", ">", "|", "\n", " ", "\u25c1", "\u25b7", "思", "🎉"]),
    )
    return st.lists(atoms, max_size=14).map("".join)


def _splits(text: str, cuts: list) -> list:
    points = sorted({min(c, len(text)) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(text[prev:p])
        prev = p
    out.append(text[prev:])
    return out


@pytest.mark.parametrize("name", registry.names())
def test_streaming_equals_complete_mode_for_every_split(name):
    longest = max((len(m) for m in _markers(name)), default=1)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_texts(name), st.lists(st.integers(0, 200), max_size=8), st.booleans() | st.none())
    def check(text, cuts, in_reasoning):
        whole = registry.create(name, in_reasoning=in_reasoning).parse(text)
        p = registry.create(name, in_reasoning=in_reasoning)
        normal, reasoning = [], []
        for chunk in _splits(text, cuts):
            d = p.feed(chunk)
            normal.append(d.normal_text)
            reasoning.append(d.reasoning_text)
            assert len(p._held) < longest
        d = p.finish()
        normal.append(d.normal_text)
        reasoning.append(d.reasoning_text)
        assert ReasoningResult("".join(normal), "".join(reasoning)) == whole
        assert len(whole.normal_text) + len(whole.reasoning_text) <= len(text)  # nothing invented
        if name == "passthrough":
            assert whole.normal_text == text

    check()
