"""Every route of the HTTP surface, sent to the Rust SMG and to smg-proxy, answers compared.

Covers the inference routes (streamed and not, through the echo worker so what
reached the worker is compared too), the probes, the model list and one model, the
worker-information and admin fan-out routes, unknown paths, wrong methods and HEAD.
"""
from __future__ import annotations

import pytest

from tests.conformance.case import Case, assert_same
from tests.conformance.rig import ECHO_MODEL, MOCK_MODEL

CHAT = {"model": ECHO_MODEL, "messages": [{"role": "user", "content": "conformance says hi"}]}
COMPLETION = {"model": ECHO_MODEL, "prompt": "conformance says hi", "max_tokens": 8}
GENERATE = {"model": ECHO_MODEL, "text": "conformance says hi", "sampling_params": {"max_new_tokens": 8}}
MESSAGES = {"model": ECHO_MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "conformance says hi"}]}
EMBED = {"model": ECHO_MODEL, "input": "conformance says hi"}
RERANK = {"model": ECHO_MODEL, "query": "which", "documents": ["this one", "that one"]}
CLASSIFY = {"model": ECHO_MODEL, "input": "conformance says hi"}
COUNT_TOKENS = {"model": ECHO_MODEL, "messages": [{"role": "user", "content": "conformance says hi"}]}
PROFILE = {"options": {"output_dir": "/tmp/smg-conformance-profile", "num_steps": 1}}


def _stream(body: dict) -> dict:
    return {**body, "stream": True}


def _case(method: str, path: str, body=None, *, route: str | None = None, worker: bool = False,
          name: str = "", text_exact: bool = True, headers: list | None = None) -> Case:
    cid = f"{method} {path}" + (f" ({name})" if name else "")
    return Case(cid, method, path, headers=headers or [], body=body, worker=worker, text_exact=text_exact,
                route=route if route is not None else f"{method} {path}")


INFERENCE = [
    _case("POST", "/v1/chat/completions", CHAT, worker=True),
    _case("POST", "/v1/chat/completions", _stream(CHAT), worker=True, name="stream"),
    _case("POST", "/v1/completions", COMPLETION, worker=True),
    _case("POST", "/v1/completions", _stream(COMPLETION), worker=True, name="stream"),
    _case("POST", "/generate", GENERATE, worker=True),
    _case("POST", "/generate", _stream(GENERATE), worker=True, name="stream"),
    _case("POST", "/v1/messages", MESSAGES, worker=True),
    _case("POST", "/v1/messages", _stream(MESSAGES), worker=True, name="stream"),
    _case("POST", "/v1/embeddings", EMBED, worker=True),
    _case("POST", "/v1/rerank", RERANK, worker=True),
    _case("POST", "/rerank", RERANK, worker=True),
    _case("POST", "/v1/classify", CLASSIFY, worker=True),
    _case("POST", "/v1/messages/count_tokens", COUNT_TOKENS, worker=True),
]

PROBES = [
    _case("GET", "/liveness"),
    _case("GET", "/health"),
    _case("GET", "/readiness"),
    _case("HEAD", "/health"),
    _case("HEAD", "/liveness"),
    _case("HEAD", "/readiness"),
    _case("HEAD", "/v1/models"),
]

INFORMATION = [
    _case("GET", "/v1/models"),
    _case("GET", f"/v1/models/{MOCK_MODEL}", route="GET /v1/models/{id}"),
    _case("GET", "/v1/models/no-such-model", route="GET /v1/models/{id}", name="unknown model"),
    _case("GET", "/get_model_info"),
    _case("GET", "/get_server_info"),
    # proxied to one worker, which one is the policy's choice: what reached it is not compared
    _case("GET", "/health_generate"),
    # engine metrics re-exported from the workers: the series carry timings, so the text is not compared
    _case("GET", "/engine_metrics", text_exact=False),
    _case("GET", "/get_loads"),
    _case("POST", "/flush_cache"),
    _case("POST", "/start_profile", PROFILE),
    _case("POST", "/stop_profile"),
]

UNKNOWN = [
    _case("GET", "/no/such/path", route="unknown path"),
    _case("POST", "/v1/no-such-endpoint", {"model": ECHO_MODEL}, route="unknown path", name="POST"),
    _case("GET", "/v1/chat/completions", route="wrong method", name="GET on POST route"),
    _case("DELETE", "/v1/completions", route="wrong method", name="DELETE on POST route"),
    _case("POST", "/liveness", {}, route="wrong method", name="POST on GET route"),
    _case("PUT", "/v1/models", {}, route="wrong method", name="PUT on GET route"),
    _case("PATCH", "/readiness", {}, route="wrong method", name="PATCH on GET route"),
]

ALL = INFERENCE + PROBES + INFORMATION + UNKNOWN


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_route(rig, case):
    assert_same(rig, case)
