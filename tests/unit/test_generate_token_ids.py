"""``/generate``'s ``input_ids``: one array of i32 token ids or an array of such
arrays, the first item deciding which; refusals name the item, as the Rust SMG does."""
from __future__ import annotations

import pytest

from smg.api.validate import generate

PREFIX = "Failed to deserialize the JSON body into the target type: "


@pytest.mark.parametrize("ids", [[1, 2], [1, -2], [[1, 2], [3]], [], [[]], None])
def test_accepted(ids):
    assert generate.validate({"text": "hi", "input_ids": ids}) is None


@pytest.mark.parametrize("ids, message", [
    ("x", 'input_ids: invalid type: string "x", expected an array of token ids or an array of token id arrays'),
    ([1.5], "input_ids[0]: invalid type: floating point `1.5`, expected a token id or an array of token ids"),
    ([None], "input_ids[0]: invalid type: null, expected a token id or an array of token ids"),
    ([5000000000], "input_ids[0]: invalid value: integer `5000000000`, expected a token id or an array of token ids"),
    ([1, [2]], "input_ids[1]: invalid type: sequence, expected i32"),
    ([1, None], "input_ids[1]: invalid type: null, expected i32"),
    ([[1], "x"], 'input_ids[1]: invalid type: string "x", expected a sequence'),
    ([[1], [2, "a"]], 'input_ids[1][1]: invalid type: string "a", expected i32'),
])
def test_refused(ids, message):
    bad = generate.validate({"text": "hi", "input_ids": ids})
    assert bad is not None and bad.status == 422 and bad.plain and bad.message == PREFIX + message
