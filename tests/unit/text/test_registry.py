"""smg.text.registry: registration paths, SMG's /v1/tokenizers shapes, readiness, and
the safety checks on a worker's GetTokenizer zip."""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import stat
import zipfile

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from smg.text.registry import (
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    TokenizerArchiveError,
    TokenizerRegistry,
    ZipLimits,
    read_tokenizer_zip,
)
from smg.text.tokenizer import Tokenizer, TokenizerError


def small_tokenizer_json() -> str:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "ab": 5}
    t = HFTokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(["<s>", "</s>"])
    return t.to_str()


TOK_JSON = small_tokenizer_json().encode()
CONFIG = json.dumps({"bos_token": "<s>", "eos_token": "</s>"}).encode()


def make_zip(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry() -> TokenizerRegistry:
    counter = itertools.count(1)
    return TokenizerRegistry(id_factory=lambda: f"id-{next(counter)}")


# -- registration and views -------------------------------------------------------------


def test_register_path_lookup_views_and_remove(tmp_path):
    (tmp_path / "tokenizer.json").write_bytes(TOK_JSON)
    (tmp_path / "tokenizer_config.json").write_bytes(CONFIG)
    reg = registry()
    entry = reg.register_path("m1", str(tmp_path), chat_template_path="/t.jinja")
    assert entry.status == COMPLETED and entry.chat_template_path == "/t.jinja"
    tok = reg.get("m1")
    assert isinstance(tok, Tokenizer) and tok.eos_ids == (2,)
    assert reg.entry("id-1") is entry  # found by id too
    assert reg.list_view() == {
        "tokenizers": [{"id": "id-1", "name": "m1", "source": str(tmp_path), "vocab_size": 6}]
    }
    assert reg.info_view(entry) == {"id": "id-1", "name": "m1", "source": str(tmp_path), "vocab_size": 6}
    assert reg.status_view(entry) == {
        "id": "id-1",
        "status": "completed",
        "message": "Tokenizer 'm1' is loaded and ready",
        "vocab_size": 6,
    }
    assert reg.add_view(entry)["status"] == "completed"
    assert reg.remove_view("id-1") == {"success": True, "message": "Tokenizer 'm1' removed successfully"}
    assert reg.get("m1") is None and "m1" not in reg
    assert reg.remove_view("m1") == {"success": False, "message": "Tokenizer 'm1' not found"}
    assert reg.remove("nope") is False


def test_background_lifecycle_and_readiness():
    reg = registry()
    entry = reg.begin("m", "org/model")
    assert reg.add_view(entry) == {
        "id": "id-1",
        "status": "pending",
        "message": "Tokenizer 'm' registration job submitted. Loading from: org/model",
    }
    assert reg.readiness(["m", "other"]) == {"m": "tokenizer pending", "other": "no tokenizer registered"}
    reg.mark_processing("m")
    assert reg.entry("m").status == PROCESSING
    assert reg.readiness(["m"]) == {"m": "tokenizer processing"}
    assert reg.list_view() == {"tokenizers": []}  # only loaded ones are listed
    assert "vocab_size" not in reg.status_view(entry)
    reg.register_files("m", TOK_JSON, CONFIG, source="org/model")
    assert reg.entry("m").id == "id-1"  # the id survives, so status polls keep working
    assert reg.readiness(["m"]) == {}


def test_failed_load_is_recorded_and_raised(tmp_path):
    reg = registry()
    with pytest.raises(TokenizerError):
        reg.register_path("m", str(tmp_path / "absent"))
    entry = reg.entry("m")
    assert entry.status == FAILED and reg.get("m") is None
    reason = reg.readiness(["m"])["m"]
    assert reason.startswith("Tokenizer 'm' failed to load:") and "absent" in reason
    with pytest.raises(TokenizerError):
        reg.register_files("bad", b"{}")
    assert reg.entry("bad").status == FAILED


def test_register_prebuilt_and_names():
    reg = registry()
    reg.register("b", Tokenizer.from_bytes(TOK_JSON, source="x"))
    reg.register("a", Tokenizer.from_bytes(TOK_JSON), source="y")
    assert reg.names() == ["a", "b"] and len(reg) == 2
    assert [t["name"] for t in reg.list_view()["tokenizers"]] == ["a", "b"]
    assert reg.entry("b").source == "x"
    with pytest.raises(ValueError):
        reg.begin("", "src")


# -- zips ---------------------------------------------------------------------------------


def test_from_zip_root_and_folder_layouts():
    for prefix in ("", "model/"):
        data = make_zip(
            {
                f"{prefix}tokenizer.json": TOK_JSON,
                f"{prefix}tokenizer_config.json": CONFIG,
                f"{prefix}chat_template.jinja": b"{{ messages }}",
                f"{prefix}README.md": b"ignored",
            }
        )
        reg = registry()
        entry = reg.from_zip("m", data, sha(data).upper())  # digest case does not matter
        assert entry.status == COMPLETED and entry.source == "worker"
        assert reg.get("m").eos_ids == (2,)
        assert entry.files == {"chat_template.jinja": b"{{ messages }}"}


@pytest.mark.parametrize(
    "members, symlink, match",
    [
        ({"tokenizer.json": TOK_JSON, "../evil": b"x"}, None, "unsafe member name"),
        ({"tokenizer.json": TOK_JSON, "a/../../evil": b"x"}, None, "unsafe member name"),
        ({"/etc/tokenizer.json": TOK_JSON}, None, "unsafe member name"),
        ({"tokenizer.json": TOK_JSON, "a\\b": b"x"}, None, "unsafe member name"),
        ({"C:tokenizer.json": TOK_JSON}, None, "unsafe member name"),
        ({"tokenizer.json": TOK_JSON}, "link", "symlink"),
        ({"tokenizer_config.json": CONFIG}, None, "no tokenizer.json"),
        ({"a/tokenizer.json": TOK_JSON, "b/tokenizer_config.json": CONFIG}, None, "several folders"),
        ({"tokenizer.json": TOK_JSON, "x/y/tokenizer.json": TOK_JSON, "tokenizer_config.json": b"[]"},
         None, "tokenizer_config.json"),
    ],
)
def test_refused_zips(members, symlink, match):
    data = make_zip(members, symlink=symlink)
    reg = registry()
    with pytest.raises(TokenizerError, match=match):
        reg.from_zip("m", data, sha(data))
    assert reg.entry("m").status == FAILED and reg.get("m") is None


def test_bad_digest_refused_before_anything_is_read():
    data = make_zip({"tokenizer.json": TOK_JSON})
    reg = registry()
    with pytest.raises(TokenizerArchiveError, match="sha256 mismatch"):
        reg.from_zip("m", data, sha(data + b"x"))
    assert "sha256 mismatch" in reg.readiness(["m"])["m"]
    with pytest.raises(TokenizerArchiveError, match="sha256"):
        read_tokenizer_zip(data, "")


def test_not_a_zip_and_size_limits():
    junk = b"definitely not a zip"
    with pytest.raises(TokenizerArchiveError, match="not a zip"):
        read_tokenizer_zip(junk, sha(junk))
    data = make_zip({"tokenizer.json": TOK_JSON})
    with pytest.raises(TokenizerArchiveError, match="archive is"):
        read_tokenizer_zip(data, sha(data), ZipLimits(max_archive_bytes=10))
    with pytest.raises(TokenizerArchiveError, match="over 100"):
        read_tokenizer_zip(data, sha(data), ZipLimits(max_member_bytes=100))
    many = make_zip({"tokenizer.json": TOK_JSON, **{f"f{i}": b"" for i in range(10)}})
    with pytest.raises(TokenizerArchiveError, match="members"):
        read_tokenizer_zip(many, sha(many), ZipLimits(max_members=5))


def test_member_that_inflates_past_its_declared_size_is_refused():
    # A zip bomb lies in its headers: declare a small size, inflate to a big one. The
    # member is read no further than declared, and its CRC then fails.
    big = b"a" * 50_000
    data = bytearray(make_zip({"tokenizer.json": big}))
    declared = (100).to_bytes(4, "little")
    real_size = len(big).to_bytes(4, "little")
    # Patch the uncompressed size in the local header (offset 22) and the central
    # directory (offset 24 from its signature).
    assert data[22:26] == real_size
    data[22:26] = declared
    cd = data.rfind(b"PK\x01\x02")
    assert data[cd + 24 : cd + 28] == real_size
    data[cd + 24 : cd + 28] = declared
    blob = bytes(data)
    with pytest.raises(TokenizerArchiveError, match="cannot be read"):
        read_tokenizer_zip(blob, sha(blob), ZipLimits(max_member_bytes=1000))
