"""The incremental JSON reader: canonical output, prefix stability, strictness, capture."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.parsers.partial_json import JsonStream, canonical_number, dumps, loads_partial

VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)


def _serialise(v, style):
    if style == 0:
        return json.dumps(v)
    if style == 1:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(v, indent=2)


@settings(max_examples=200, deadline=None)
@given(value=VALUES, style=st.integers(0, 2), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_canonical_and_prefix_stable(value, style, cuts):
    text = _serialise(value, style) + " tail"
    end = len(text) - len(" tail")
    canonical = dumps(json.loads(text[:end]))
    r = JsonStream()
    seen = ""
    for c in sorted(c for c in cuts if c <= len(text)) + [len(text)]:
        r.feed(text[:c])
        now = r.text()
        assert now.startswith(seen)  # written text never changes
        assert canonical.startswith(now)
        seen = now
    assert not r.failed
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # a bare number ends at the character after it
        assert r.end == end
    else:
        assert r.end == end
    assert r.text() == canonical


def test_dumps_matches_compact_json():
    v = {"b": [1, 2.5, None, True, False], "a": {"é": "x\n\u0001\"\\/"}}
    assert dumps(v) == json.dumps(v, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("text,canon", [
    ("1e5", "100000.0"), ("1E16", "1e+16"), ("1e15", "1000000000000000.0"), ("1.5e-7", "1.5e-7"),
    ("1e-5", "0.00001"), ("0.000001", "1e-6"), ("-0.0", "-0.0"), ("-0", "-0.0"), ("12", "12"),
    ("18446744073709551615", "18446744073709551615"), ("18446744073709551616", "1.8446744073709552e+19"),
    ("-9223372036854775808", "-9223372036854775808"), ("2.50", "2.5"), ("123e-2", "1.23"),
    ("5e-324", "5e-324"), ("1.7976931348623157e308", "1.7976931348623157e+308"), ("1e400", None),
])
def test_numbers(text, canon):
    assert canonical_number(text) == canon


@pytest.mark.parametrize("text,at", [
    ('{"a" 1}', 5), ('{"a": tru}', 9), ("[1,]", 3), ('{"a": "\\x"}', 8), ('{"a": 1e400}', 11),
    ('{"a": "\\ud800x"}', 13), ('{"a": "\\udc00"}', 12), ('"a\nb"', 2), ("{,}", 1), ("]", 0),
    ('{"a": 01}', 8), ("[1 2]", 3),
])
def test_errors_are_located(text, at):
    r = JsonStream()
    r.feed(text)
    assert r.failed and r.error_at == at


def test_resume_with_growing_text():
    r = JsonStream()
    r.feed('{"a": [1, "x')
    assert r.text() == '{"a":[1,"x'
    r.feed('{"a": [1, "xy\\u00')
    assert r.text() == '{"a":[1,"xy'
    r.feed('{"a": [1, "xy\\u00e9"]} rest')
    assert r.text() == '{"a":[1,"xyé"]}' and r.end == len('{"a": [1, "xy\\u00e9"]}')


def test_capture_calls():
    r = JsonStream(args_keys=("arguments", "parameters"))
    r.feed('[{"name": "f", "arguments": {"a": [1, {"b": "c"}]}}, {"parameters": {"z": 1}, "name": "g"}, {"x": {"name": 1}}]')
    assert r.done and r.out == []
    got = [(c[0], "".join(c[1]), c[2], c[3]) for c in r.calls]
    assert got == [("f", '{"a":[1,{"b":"c"}]}', True, True), ("g", '{"z":1}', True, True), (None, "", False, True)]


def test_loads_partial():
    assert loads_partial('{"a": [1, 2, {"b": "hel') == {"a": [1, 2, {"b": "hel"}]}
    assert loads_partial('{"a": 1, "b') == {"a": 1}
    assert loads_partial('{"a": 12') == {}
    assert loads_partial('{"a": 1, "b":') == {"a": 1}
    assert loads_partial("") is None
    assert loads_partial("[true, fal") == [True]
    assert loads_partial("12") == 12
    with pytest.raises(ValueError):
        loads_partial('{"a" 1')
