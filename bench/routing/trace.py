"""A seeded multi-turn chat trace and its streaming replayer.

Trace (``make_trace``): ``conversations`` conversations; each picks one of ``systems``
shared system prompts by Zipf popularity (``zipf_s``), arrives at a Poisson time
(``rate`` conversations per second) and has ``turns_min..turns_max`` user turns of
random words. Everything is drawn from ``random.Random(seed)``: the same seed gives the
same trace, byte for byte.

Replay (``replay``): every conversation is a closed loop: turn k+1 is sent ``think``
seconds (exponential, drawn from the trace) after turn k's answer ended, with the
answer appended to the history, so later turns extend the earlier prompt as a real
chat does. Requests are streamed (``stream_options.include_usage``); per request the
client records TTFT (first content chunk), end-to-end time, the reported
``cached_tokens`` and ``prompt_tokens``, and the HTTP status.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import httpx
import orjson

VOCAB = ("alpha", "beta", "gamma", "delta", "kernel", "cache", "route", "token", "block", "queue", "batch",
         "prefix", "model", "engine", "prompt", "reply", "vector", "tensor", "shard", "fleet", "tenant")


@dataclass
class Conversation:
    start: float
    system: str
    turns: list
    max_tokens: list
    think: list


@dataclass
class TraceSpec:
    seed: int = 1
    conversations: int = 200
    systems: int = 8
    system_chars: int = 6000
    zipf_s: float = 1.1
    rate: float = 40.0
    turns_min: int = 2
    turns_max: int = 8
    user_chars: tuple = (150, 600)
    max_tokens: tuple = (8, 24)
    think_mean: float = 0.03
    model: str = "sim-model"


def _words(rng: random.Random, n_chars: int) -> str:
    out = []
    size = 0
    while size < n_chars:
        w = rng.choice(VOCAB)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def make_trace(spec: TraceSpec) -> list:
    rng = random.Random(spec.seed)
    systems = [f"[system {i}] " + _words(rng, spec.system_chars) for i in range(spec.systems)]
    weights = [1.0 / (k + 1) ** spec.zipf_s for k in range(spec.systems)]
    t = 0.0
    convs = []
    for _ in range(spec.conversations):
        t += rng.expovariate(spec.rate)
        n = rng.randint(spec.turns_min, spec.turns_max)
        convs.append(Conversation(
            start=t, system=rng.choices(systems, weights)[0],
            turns=[_words(rng, rng.randint(*spec.user_chars)) for _ in range(n)],
            max_tokens=[rng.randint(*spec.max_tokens) for _ in range(n)],
            think=[rng.expovariate(1.0 / spec.think_mean) for _ in range(n)]))
    return convs


@dataclass
class Sample:
    status: int
    ttft: float
    e2e: float
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class Result:
    samples: list = field(default_factory=list)
    wall: float = 0.0


async def _one(client: httpx.AsyncClient, url: str, body: dict) -> tuple:
    t0 = time.perf_counter()
    ttft = None
    text = []
    usage = None
    async with client.stream("POST", url, content=orjson.dumps(body),
                             headers={"content-type": "application/json"}) as r:
        if r.status_code != 200:
            await r.aread()
            return Sample(r.status_code, 0.0, time.perf_counter() - t0), ""
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = orjson.loads(line[6:])
            for ch in ev.get("choices") or ():
                c = (ch.get("delta") or {}).get("content")
                if c:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    text.append(c)
            if ev.get("usage"):
                usage = ev["usage"]
    e2e = time.perf_counter() - t0
    s = Sample(200, ttft if ttft is not None else e2e, e2e)
    if usage:
        s.prompt_tokens = usage.get("prompt_tokens") or 0
        s.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return s, "".join(text)


async def replay(base_url: str, trace: list, model: str = "sim-model", timeout: float = 60.0) -> Result:
    """Replays ``trace`` against ``base_url`` (a gateway); returns every request's sample."""
    res = Result()
    url = base_url.rstrip("/") + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t_start = time.perf_counter()

        async def conversation(c: Conversation) -> None:
            await asyncio.sleep(max(0.0, c.start - (time.perf_counter() - t_start)))
            msgs = [{"role": "system", "content": c.system}]
            for turn, mt, think in zip(c.turns, c.max_tokens, c.think):
                msgs.append({"role": "user", "content": turn})
                body = {"model": model, "messages": msgs, "max_tokens": mt, "stream": True,
                        "stream_options": {"include_usage": True}}
                try:
                    s, answer = await _one(client, url, body)
                except httpx.HTTPError:
                    s, answer = Sample(599, 0.0, 0.0), ""
                res.samples.append(s)
                if s.status != 200:
                    return
                msgs = msgs + [{"role": "assistant", "content": answer}]
                await asyncio.sleep(think)

        await asyncio.gather(*(conversation(c) for c in trace))
        res.wall = time.perf_counter() - t_start
    return res
