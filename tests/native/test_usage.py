"""usage_counts (the token counts of an answer's usage object), both twins."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.streaming.sse import usage_counts, usage_countsC, usage_countsPy
from smg.testing.twins import twin_params

CORPUS = [
    (b'{"id":"x","usage":{"prompt_tokens":5,"completion_tokens":8,"total_tokens":13}}', (5, 8)),
    (b'{"usage": {"prompt_tokens" : 12 , "completion_tokens":\n 3}}', (12, 3)),
    (b'{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens":8}}', (5, 8)),
    (b'{"text":"hi","meta_info":{"id":"a","prompt_tokens":3,"completion_tokens":4}}', (3, 4)),
    (b'{"type":"message_delta","usage":{"output_tokens":12}}', (0, 12)),
    (b'{"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}', (9, 1)),
    # the last usage object wins (an echo of an earlier one in content does not count)
    (b'{"content":"\\"usage\\" \\"prompt_tokens\\": 99","usage":{"prompt_tokens":1,"completion_tokens":2}}', (1, 2)),
    (b'{"choices":[{"delta":{"content":"x"}}]}', None),
    (b'{"usage":null}', None),
    (b'{"usage":{"prompt_tokens":"5"}}', None),                        # not a number
    (b'{"usage":{"prompt_tokens":1234567890123456789}}', None),        # 19 digits: refused
    (b'{"usage":{"prompt_tokens":123456789012345678}}', (123456789012345678, 0)),
    (b'"usage"', None),
    (b'', None),
]


@pytest.mark.parametrize("impl", twin_params(usage_countsPy, usage_countsC))
@pytest.mark.parametrize("data, expected", CORPUS)
def test_corpus(impl, data, expected):
    assert impl(data) == expected
    assert impl(bytearray(data)) == expected
    assert impl(memoryview(data)) == expected


@pytest.mark.parametrize("impl", twin_params(usage_countsPy, usage_countsC))
def test_rejects_non_bytes(impl):
    with pytest.raises(TypeError):
        impl("text")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**12), st.integers(0, 10**12), st.booleans(), st.sampled_from(["usage", "meta_info"]))
def test_generated_answers(prompt, completion, anthropic, anchor):
    keys = ("input_tokens", "output_tokens") if anthropic else ("prompt_tokens", "completion_tokens")
    body = json.dumps({"id": "r", anchor: {keys[0]: prompt, keys[1]: completion}}).encode()
    for impl in (usage_countsPy, usage_countsC):
        if impl is not None:
            assert impl(body) == (prompt, completion)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b'"usage"', b'"meta_info"', b'"prompt_tokens"', b'"input_tokens"',
                                 b'"completion_tokens"', b'"output_tokens"', b":", b" ", b"\n", b"7", b"42",
                                 b"{", b"}", b",", b"x"]), max_size=30), st.binary(max_size=20))
def test_twins_agree_on_arbitrary_bytes(parts, noise):
    if usage_countsC is None:
        pytest.skip("native extension not built")
    data = b"".join(parts) + noise
    assert usage_countsC(data) == usage_countsPy(data)


def test_selector_uses_native_when_required(monkeypatch):
    import os
    if os.environ.get("SMG_REQUIRE_EXTENSIONS") != "1":
        pytest.skip("only with SMG_REQUIRE_EXTENSIONS=1")
    assert usage_counts is usage_countsC
