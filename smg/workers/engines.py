"""Inference engines: how a worker is recognised at registration and how it is probed.

Rule 1: what identifies each engine and which endpoint probes it is data (``ENGINES``);
``identify`` only reads the table. Adding an engine is one row.
Rule 2: sans-I/O: ``identify`` is given ``fetch(path) -> (status, headers, body)``
(an awaitable raising ``UpstreamError`` on transport errors); it opens no socket.
Rule 3: a health probe path must be cheap and free of side effects *for that engine*
while it generates: never ``/health_generate`` (it runs a generation), never
llama-cpp-python's ``/v1/models`` (it takes the model lock, and a request taking the
lock interrupts a running stream), never an endpoint that loads or unloads a model.

Theory of operation. At registration every worker is asked, concurrently and once,
``GET /v1/models`` (its model list), ``/health`` and each engine's marker paths
(``MARK_PATHS``). The engine is, in this order:

1. the spec's ``runtime_type`` when it names one (an operator's hint wins);
2. the engine whose ``owned_by`` values a model card carries (SGLang ``sglang``,
   vLLM ``vllm``, TensorRT-LLM ``tensorrt_llm``, llama.cpp ``llamacpp``);
3. the first row, in table order, one of whose marks matches: a JSON object with the
   mark's keys at its path (SGLang ``/get_server_info``, llama.cpp ``/props``, Ollama
   ``/api/tags``, TGI ``/info``, vLLM ``/version`` holding only ``version``: the most
   specific evidence first), or an
   OpenAPI title (llama-cpp-python ``/openapi.json``), or a ``server`` header;
4. ``openai`` (any OpenAI-compatible server) when ``/v1/models`` gave a model list.

A worker that answers but matches nothing and lists no models is not an inference
server: it is refused (``Identity.refusal``) rather than becoming a worker for every
model. One that answers 5xx (an engine still loading) is asked again later
(``Identity.waiting``).

Probe path (``Identity.health_path``): the first of the engine's ``health`` paths that
answered 2xx at registration, else its first. For ``openai`` servers that is ``/health``
when it answered, else ``/v1/models``, the only endpoint such a server is known to have
(the documented fallback order: ``/health``, then ``/v1/models``). An operator's
``--health-check-endpoint`` other than ``/health`` replaces the choice for every
worker (``choose_probe``).
"""
from __future__ import annotations

import asyncio
from typing import NamedTuple

import orjson

from smg.errors import UpstreamError

MODELS_PATH = "/v1/models"
HEALTH_PATH = "/health"
DEFAULT_HEALTH_ENDPOINT = "/health"  # the --health-check-endpoint default: the engine decides


class Mark(NamedTuple):
    """One way to recognise an engine: ``path`` answered 2xx and ``keys`` are all keys of
    its JSON object (``only``: and no other key), or its OpenAPI ``info.title`` holds
    ``title``; or (``path`` None) the ``server`` header of any answer holds ``server``."""
    path: str | None
    keys: tuple = ()
    only: bool = False
    title: str | None = None
    server: str | None = None


class Engine(NamedTuple):
    runtime: str          # the worker's runtime_type
    name: str             # for messages
    health: tuple         # probe paths, preferred first (rule 3)
    owned_by: tuple = ()  # /v1/models owned_by values that name it
    marks: tuple = ()
    loads: bool = False   # has a load endpoint the load monitor reads (/v1/loads, /metrics)


ENGINES: tuple = (
    Engine("sglang", "SGLang", ("/health",), ("sglang",),
           (Mark("/get_server_info", ("model_path",)),), loads=True),
    Engine("trtllm", "TensorRT-LLM", ("/health",), ("tensorrt_llm", "trtllm"), loads=True),
    Engine("llama_cpp", "llama.cpp llama-server", ("/health",), ("llamacpp",),
           (Mark("/props", ("default_generation_settings",)), Mark(None, server="llama.cpp"))),
    # no /health; /v1/models takes the model lock (rule 3); its OpenAPI page does not
    Engine("llama_cpp_python", "llama-cpp-python", ("/openapi.json",), (),
           (Mark("/openapi.json", title="llama.cpp Python API"),)),
    Engine("ollama", "Ollama", ("/api/version",), (), (Mark("/api/tags", ("models",)),)),
    Engine("tgi", "Text Generation Inference", ("/health",), ("tgi",),
           (Mark("/info", ("model_id", "router")), Mark("/openapi.json", title="Text Generation Inference"))),
    Engine("vllm", "vLLM", ("/health",), ("vllm",), (Mark("/version", ("version",), only=True),), loads=True),
    Engine("openai", "an OpenAI-compatible server", (HEALTH_PATH, MODELS_PATH)),
)
BY_RUNTIME = {e.runtime: e for e in ENGINES}
GENERIC = BY_RUNTIME["openai"]
# Runtimes a spec may name that this table does not probe differently (SGLang's default
# chain applies).
OTHER_RUNTIMES = ("mlx", "tokenspeed", "external")
MARK_PATHS: tuple = tuple(dict.fromkeys(m.path for e in ENGINES for m in e.marks if m.path))
_OWNED = {o: e for e in ENGINES for o in e.owned_by}


class Identity(NamedTuple):
    engine: Engine | None
    cards: list | None          # model cards from /v1/models, None when it gave none
    health_path: str | None
    refusal: str | None = None  # answers, but is not an inference server
    waiting: str | None = None  # answers, but not ready (5xx): ask again later


def _json(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def model_cards(status: int, body: bytes) -> list | None:
    """The cards of a ``/v1/models`` answer, or None when it is not a model list."""
    if not 200 <= status < 300:
        return None
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    return [m for m in data["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _matches(mark: Mark, answers: dict) -> bool:
    if mark.path is None:
        return any(mark.server in _header(h, "server") for s, h, _ in answers.values() if s)
    got = answers.get(mark.path)
    if got is None or not 200 <= got[0] < 300:
        return False
    doc = _json(got[2])
    if not isinstance(doc, dict):
        return False
    if mark.title is not None:
        info = doc.get("info")
        return isinstance(info, dict) and mark.title in str(info.get("title", ""))
    if not all(k in doc for k in mark.keys):
        return False
    return not mark.only or set(doc) == set(mark.keys)


def _header(headers, name: str) -> str:
    for k, v in headers or ():
        if (k.decode("latin-1") if isinstance(k, bytes) else k).lower() == name:
            return v.decode("latin-1") if isinstance(v, bytes) else v
    return ""


def detect(answers: dict, cards: list | None, hint: str | None = None) -> Engine | None:
    """The engine the answers show (``answers``: path -> (status, headers, body), a
    status of 0 for a path that did not answer); see the module docstring for the order."""
    if hint in BY_RUNTIME:
        return BY_RUNTIME[hint]
    for c in cards or ():
        e = _OWNED.get(c.get("owned_by"))
        if e is not None:
            return e
    for e in ENGINES:
        if any(_matches(m, answers) for m in e.marks):
            return e
    return GENERIC if cards is not None else None


def health_path(engine: Engine, answers: dict) -> str:
    for p in engine.health:
        got = answers.get(p)
        if got is not None and 200 <= got[0] < 300:
            return p
    return engine.health[0]


def choose_probe(configured: str, identity_path: str | None) -> str:
    """The path probed: an operator's ``--health-check-endpoint`` other than the default,
    else the engine's."""
    configured = configured if configured.startswith("/") else "/" + configured
    if configured != DEFAULT_HEALTH_ENDPOINT or not identity_path:
        return configured
    return identity_path


async def identify(fetch, hint: str | None = None, spec_models: bool = False) -> Identity:
    """Asks a worker what it is (one round of concurrent GETs).

    Args:
        fetch: ``async fetch(path) -> (status, headers, body)``.
        hint: the spec's ``runtime_type`` ("unspecified": none).
        spec_models: the spec lists the worker's models, so a server without a model list
            that answers ``/health`` is accepted as an OpenAI-compatible one.
    Raises:
        UpstreamError: no path answered at all (not listening yet, or unreachable).
    """
    paths = (MODELS_PATH, HEALTH_PATH) + tuple(p for p in MARK_PATHS if p not in (MODELS_PATH, HEALTH_PATH))
    if hint in BY_RUNTIME:
        paths = tuple(dict.fromkeys((MODELS_PATH,) + BY_RUNTIME[hint].health))
    results = await asyncio.gather(*(fetch(p) for p in paths), return_exceptions=True)
    answers: dict = {}
    errors = []
    for p, r in zip(paths, results):
        if isinstance(r, BaseException):
            if not isinstance(r, (UpstreamError, OSError, asyncio.TimeoutError)):
                raise r
            errors.append(r)
            answers[p] = (0, (), b"")
        else:
            answers[p] = r
    if len(errors) == len(paths):
        raise errors[0] if isinstance(errors[0], UpstreamError) else UpstreamError(str(errors[0]))
    mstatus, _, mbody = answers[MODELS_PATH]
    cards = model_cards(mstatus, mbody)
    engine = detect(answers, cards, hint)
    hstatus = answers.get(HEALTH_PATH, (0,))[0]
    if engine is None and spec_models and 200 <= hstatus < 300:
        engine = GENERIC
    if engine is None:
        if mstatus >= 500 or hstatus >= 500:
            return Identity(None, None, None, waiting=f"GET {MODELS_PATH} answered {mstatus or 'nothing'}, "
                                                      f"GET {HEALTH_PATH} answered {hstatus or 'nothing'}")
        if mstatus in (401, 403):
            return Identity(None, None, None, refusal=(
                f"GET {MODELS_PATH} answered {mstatus}: the worker wants another key (its spec's api_key, "
                f"else --api-key)"))
        tried = ", ".join(paths)
        return Identity(None, None, None, refusal=(
            f"it answers HTTP but is not an inference server: GET {MODELS_PATH} answered "
            f"{mstatus or 'nothing'} (not a model list) and no known engine answered ({tried}); "
            f"if it serves models, list them in the worker's 'models' and give it a /health route"))
    return Identity(engine, cards, health_path(engine, answers))


__all__ = ["ENGINES", "Engine", "Identity", "Mark", "identify", "detect", "choose_probe", "model_cards",
           "BY_RUNTIME", "GENERIC"]
