"""The endpoint table: one record per path the gateway serves, and everything the
pipeline needs to know about it.

Rules:
- This table is the only list of paths. The protocol's route lookup, the API family
  of error bodies, request-id prefixes, validation, the metric labels, whether TTFT
  and usage are observed, and the text prefix-matching policies route on are all read
  off the ``Endpoint`` a request matched; nothing else keeps a path list.
- A record names its handler by the name of a method of a handler provider (the
  gateway's ``Handlers``, ``WorkersAPI``, ``FanoutRoutes``, ``ParseAPI``,
  ``TokenizerAPI``, ``ResponsesAPI`` or ``ConversationsAPI``); ``bind`` resolves the names once at start-up, so a request costs
  one dict lookup for its endpoint and one for its method.
- Paths with a ``{...}`` tail (``/workers/{worker_id}``) match by prefix; they are
  tried, in table order, only after the exact lookup missed.
- ``HEAD`` is listed for the ``GET`` routes the gateway answers itself; the sink then
  sends the same head without the body (RFC 9110 §9.3.2).
- ``access`` says which auth stage a route runs first (SMG §1): ``"data"`` the
  inference routes (``--api-key``, tenant keys), ``"admin"`` the Workers API and admin
  routes (control-plane auth; they move to their own listener with
  ``--control-plane-port``), ``"public"`` probes, ``/v1/models`` and server info.

Adding an endpoint (``/v1/responses`` say) is one row here plus its handler.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from smg.api import validate
from smg.api.errors import ANTHROPIC, OPENAI
from smg.routing import text
from smg.server import parse_handlers as parse_api
from smg.server import tokenizer_api


@dataclass(frozen=True, eq=False)  # identity: a record is hashed (metric shape keys) by who it is
class Endpoint:
    path: str                      # as clients send it; a "{...}" tail matches by prefix
    methods: dict                  # method -> handler name (a method of the provider)
    provider: str = "handlers"     # "handlers" (gateway), "workers_api", "fanout" (asks the workers),
    #                                "parse_api", "tokenizer_api", "responses", "conversations"
    family: int = OPENAI           # API family of the gateway's error bodies
    generative: bool = False       # TTFT/TPOT/token usage observed on the answer
    validator: object = None       # smg.api.validate.Validator: the body checks before routing
    id_prefix: bytes = b"req-"     # request ids minted for it (SMG's prefixes)
    label: str = "other"           # SMG's endpoint label in the router metric families
    text: Callable | None = None   # routing text for prefix-matching policies: f(body) -> str
    proxied: bool = False          # answered by a worker (validation and selection run)
    access: str = "data"           # who may call it (smg/auth): "public" | "data" | "admin"
    grpc: str = ""                 # how a gRPC worker's request is answered (smg/server/grpc_exchange.py):
    #                                "chat", "completions", "generate", "embeddings"; "" = not served
    worker_api: str = ""           # the API a proxied row asks its worker in, when not its own label
    #                                ("chat": the Responses API is served by chat completions)
    stage: str = ""                # a provider method run as a filter after validation, before
    #                                selection (the Responses API's history load)

    @property
    def api(self) -> str:
        """The API the worker is asked in (the gRPC path's stages, the output parsers)."""
        return self.worker_api or self.label

    @property
    def key(self) -> bytes:
        """What the route lookup matches: the whole path, or the prefix before ``{``."""
        p = self.path
        i = p.find("{")
        return (p if i < 0 else p[:i]).encode()

    @property
    def is_prefix(self) -> bool:
        return "{" in self.path

    @property
    def path_label(self) -> str:
        """The ``path`` label of the HTTP metric families."""
        return self.path


ENDPOINTS: tuple = (
    Endpoint("/v1/chat/completions", {"POST": "proxy"}, generative=True, validator=validate.CHAT,
             id_prefix=b"chatcmpl-", label="chat", text=text.chat_text, proxied=True, access="data", grpc="chat"),
    Endpoint("/v1/completions", {"POST": "proxy"}, generative=True, validator=validate.COMPLETIONS,
             id_prefix=b"cmpl-", label="completions", text=text.prompt_text, proxied=True, access="data",
             grpc="completions"),
    Endpoint("/generate", {"POST": "proxy"}, generative=True, validator=validate.GENERATE, id_prefix=b"gnt-",
             label="generate",
             text=text.generate_text, proxied=True, access="data", grpc="generate"),
    Endpoint("/v1/messages", {"POST": "proxy"}, family=ANTHROPIC, generative=True, validator=validate.MESSAGES,
             id_prefix=b"msg_", label="messages", text=text.chat_text, proxied=True, access="data"),
    # the Responses and Conversations APIs (smg/responses): a turn is a chat completion
    Endpoint("/v1/responses", {"POST": "create"}, provider="responses", generative=True, id_prefix=b"resp-",
             label="responses", text=text.chat_text, proxied=True, access="data", worker_api="chat",
             grpc="chat", stage="prepare"),
    Endpoint("/v1/responses/{response_id}", {"GET": "get", "POST": "cancel", "DELETE": "delete"},
             provider="responses", id_prefix=b"resp-", label="responses", access="data"),
    Endpoint("/v1/conversations", {"POST": "create"}, provider="conversations", access="data"),
    Endpoint("/v1/conversations/{conversation_id}", {"GET": "get", "POST": "post", "DELETE": "delete"},
             provider="conversations", access="data"),
    Endpoint("/v1/embeddings", {"POST": "proxy"}, validator=validate.EMBEDDINGS,
             label="other", text=text.input_text, proxied=True, access="data", grpc="embeddings"),
    Endpoint("/v1/rerank", {"POST": "rerank"}, validator=validate.RERANK_V1, label="rerank", text=text.no_text,
             proxied=True, access="data"),
    Endpoint("/rerank", {"POST": "rerank"}, validator=validate.RERANK, label="rerank", text=text.no_text,
             proxied=True, access="data"),
    Endpoint("/v1/classify", {"POST": "proxy"}, validator=validate.CLASSIFY,
             label="other", text=text.input_text, proxied=True, access="data"),
    Endpoint("/v1/messages/count_tokens", {"POST": "proxy"}, family=ANTHROPIC, validator=validate.COUNT_TOKENS,
             label="other", text=text.chat_text, proxied=True, access="data"),
    Endpoint("/get_model_info", {"GET": "proxy_info"}, label="model_info", access="public"),
    Endpoint("/get_server_info", {"GET": "proxy_info"}, label="server_info", access="public"),
    Endpoint("/v1/models", {"GET": "models", "HEAD": "models"}, access="public"),
    Endpoint("/v1/models/{model_id}", {"GET": "model", "HEAD": "model"}, access="public"),
    # engine routes answered by asking the workers (smg/server/fanout.py)
    Endpoint("/health_generate", {"GET": "health_generate", "HEAD": "health_generate"}, provider="fanout",
             label="health_generate", access="public"),
    Endpoint("/engine_metrics", {"GET": "engine_metrics", "HEAD": "engine_metrics"}, provider="fanout",
             access="public"),
    Endpoint("/flush_cache", {"POST": "flush_cache"}, provider="fanout", access="admin"),
    Endpoint("/start_profile", {"POST": "start_profile"}, provider="fanout", access="admin"),
    Endpoint("/stop_profile", {"POST": "stop_profile"}, provider="fanout", access="admin"),
    Endpoint("/get_loads", {"GET": "get_loads", "HEAD": "get_loads"}, provider="fanout", access="admin"),
    # output parsers run on a given text (smg/server/parse_handlers.py)
    Endpoint("/parse/reasoning", {"POST": "reasoning"}, provider="parse_api", validator=parse_api.REASONING,
             access="admin"),
    Endpoint("/parse/function_call", {"POST": "function_call"}, provider="parse_api",
             validator=parse_api.FUNCTION_CALL, access="admin"),
    Endpoint("/v1/parser/reasoning", {"POST": "reasoning"}, provider="parse_api", validator=parse_api.REASONING,
             access="admin"),
    Endpoint("/v1/parser/tool", {"POST": "function_call"}, provider="parse_api",
             validator=parse_api.FUNCTION_CALL, access="admin"),
    # the gateway's own tokenizers (smg/server/tokenizer_api.py)
    Endpoint("/v1/tokenize", {"POST": "tokenize"}, provider="tokenizer_api", validator=tokenizer_api.TOKENIZE,
             access="data"),
    Endpoint("/v1/detokenize", {"POST": "detokenize"}, provider="tokenizer_api",
             validator=tokenizer_api.DETOKENIZE, access="data"),
    Endpoint("/v1/tokenizers", {"GET": "list", "HEAD": "list", "POST": "add"}, provider="tokenizer_api",
             validator=tokenizer_api.ADD_TOKENIZER, access="admin"),
    Endpoint("/v1/tokenizers/{tokenizer_id}", {"GET": "get", "HEAD": "get", "DELETE": "delete"},
             provider="tokenizer_api", access="admin"),
    Endpoint("/health", {"GET": "liveness", "HEAD": "liveness"}, access="public"),
    Endpoint("/liveness", {"GET": "liveness", "HEAD": "liveness"}, access="public"),
    Endpoint("/readiness", {"GET": "readiness", "HEAD": "readiness"}, access="public"),
    Endpoint("/workers", {"GET": "list", "HEAD": "list", "POST": "create"}, provider="workers_api",
             access="admin"),
    Endpoint("/add_worker", {"POST": "legacy_add"}, provider="workers_api", access="admin"),
    Endpoint("/remove_worker", {"POST": "legacy_remove"}, provider="workers_api", access="admin"),
    Endpoint("/workers/{worker_id}", {"GET": "get", "HEAD": "get", "PUT": "replace", "PATCH": "patch",
                                      "DELETE": "delete"}, provider="workers_api", access="admin"),
)

# The metrics listener's table.
METRICS_ENDPOINTS: tuple = (
    Endpoint("/metrics", {"GET": "metrics"}, access="public"),
)

# A request that matched no row: errors in the OpenAI format, "other" path label.
UNMATCHED = Endpoint("", {}, label="other", access="public")


@dataclass
class Route:
    """An endpoint with its handlers bound: ``handlers[method](conn, ctx)``, run after
    the filters of ``chain`` (smg/server/filters.py)."""

    endpoint: Endpoint
    handlers: dict = field(default_factory=dict)
    allow: bytes = b""  # the Allow header of a 405
    chain: tuple = ()


class RouteTable:
    """Exact-path dict plus the prefix rows, built once from endpoint records."""

    __slots__ = ("exact", "prefixes", "endpoints")

    def __init__(self, endpoints: tuple, providers: dict, chain_for: Callable | None = None) -> None:
        """``providers``: provider name -> object with the handler methods;
        ``chain_for(endpoint)``: the filters of the endpoint's route."""
        self.exact: dict = {}
        self.prefixes: list = []
        self.endpoints = endpoints
        for ep in endpoints:
            provider = providers[ep.provider]
            handlers = {m.encode(): getattr(provider, name) for m, name in ep.methods.items()}
            route = Route(ep, handlers, b", ".join(sorted(handlers)), chain_for(ep) if chain_for else ())
            if ep.is_prefix:
                self.prefixes.append((ep.key, route))
            else:
                self.exact[ep.key] = route

    def match(self, path: bytes) -> Route | None:
        r = self.exact.get(path)
        if r is None:
            for prefix, route in self.prefixes:
                if path.startswith(prefix) and len(path) > len(prefix):
                    return route
        return r
