"""The simulated engine, sans I/O: prompt rendering, block keys, an LRU prefix cache, the scheduler.

Rules:
- Tokens are approximated from the rendered prompt: ``chars_per_token`` characters a
  token, so a longer shared prefix is a longer shared token prefix. Chat messages are
  rendered as ``<|role|>\\ncontent\\n`` each, then ``<|assistant|>\\n`` (``render_chat``).
- The cache holds whole blocks of ``block_size`` tokens keyed by a chain hash (each key
  covers the block and everything before it, as SGLang's radix cache and vLLM's block
  hashes do): a request hits the longest run of its leading blocks that are cached.
- The cache is bounded (``cache_blocks``) and evicts least recently used blocks. A
  request's blocks are touched deepest first, so a prefix's root is more recent than
  its tail: eviction trims branches from the leaves, never cuts a prefix in its middle
  while its tail stays.
- Scheduling: at most ``max_running`` requests run; the rest wait in FIFO order. On
  admission the request's cached blocks are counted (``cached_tokens``) and its blocks
  are inserted; its prefill of the uncached tokens takes ``prefill_us_per_token`` each
  (plus ``prefill_overhead_ms``) and is queued behind the prefills already admitted
  (one prefill lane), so its first token is at the end of its prefill. Each further
  token takes one decode step of ``decode_base_ms + decode_per_req_ms * running``.
- Deterministic for a seed: the same requests in the same order give the same cache
  outcomes and token counts; the seed only draws the optional output-length jitter.
- Counters: requests, prompt and cached tokens, block hits and misses, evictions.
"""
from __future__ import annotations

import hashlib
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class SimParams:
    block_size: int = 16            # tokens per cache block
    cache_blocks: int = 4096        # cache capacity in blocks
    max_running: int = 8            # running batch bound; the rest wait
    chars_per_token: int = 4
    prefill_us_per_token: float = 20.0
    prefill_overhead_ms: float = 0.5
    decode_base_ms: float = 1.0
    decode_per_req_ms: float = 0.1
    default_max_tokens: int = 16
    out_jitter: float = 0.0         # output length drawn in [n*(1-j), n] when > 0
    seed: int = 0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def render_chat(messages: list) -> str:
    """A chat prompt as the engine's template would render it (prefix-preserving across turns)."""
    parts = []
    for m in messages:
        if isinstance(m, dict):
            parts.append(f"<|{m.get('role', 'user')}|>\n{_text(m.get('content'))}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


def block_keys(text: str, block_size: int, chars_per_token: int) -> list:
    """Chain-hash keys of ``text``'s whole blocks (8-byte blake2b digests)."""
    step = block_size * chars_per_token
    data = text.encode("utf-8", "surrogatepass")
    keys = []
    prev = b""
    for i in range(0, len(data) - step + 1, step):
        prev = hashlib.blake2b(prev + data[i:i + step], digest_size=8).digest()
        keys.append(prev)
    return keys


class PrefixCache:
    """A bounded LRU set of block keys with hit/miss/eviction counters."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self._blocks: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, keys: list) -> int:
        """How many leading ``keys`` are cached (no state change)."""
        n = 0
        blocks = self._blocks
        for k in keys:
            if k not in blocks:
                break
            n += 1
        return n

    def use(self, keys: list) -> int:
        """Counts and caches ``keys`` for one request; returns the leading blocks that hit."""
        hit = self.match(keys)
        self.hits += hit
        self.misses += len(keys) - hit
        blocks = self._blocks
        for k in reversed(keys):  # deepest first: the root ends most recent
            if k in blocks:
                blocks.move_to_end(k)
            else:
                blocks[k] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)
            self.evictions += 1
        return hit

    def clear(self) -> None:
        self._blocks.clear()


class Job:
    """One request inside the engine."""

    __slots__ = ("keys", "prompt_tokens", "out_tokens", "cached_tokens", "first_token_at", "admitted_at",
                 "state", "on_admit")

    def __init__(self, keys: list, prompt_tokens: int, out_tokens: int) -> None:
        self.keys = keys
        self.prompt_tokens = prompt_tokens
        self.out_tokens = out_tokens
        self.cached_tokens = 0
        self.first_token_at = 0.0
        self.admitted_at = 0.0
        self.state = "new"  # new -> waiting -> running -> done
        self.on_admit: Callable | None = None


class EngineModel:
    def __init__(self, params: SimParams | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.p = params or SimParams()
        self.clock = clock
        self.cache = PrefixCache(self.p.cache_blocks)
        self.waiting: deque = deque()
        self.running = 0
        self._prefill_free = 0.0
        self._rng = random.Random(self.p.seed)
        self.requests = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.generated_tokens = 0

    # -- building a job

    def job(self, prompt: str, max_tokens: int | None) -> Job:
        p = self.p
        n_prompt = max(1, -(-len(prompt) // p.chars_per_token))
        n_out = max(1, int(max_tokens if max_tokens else p.default_max_tokens))
        if p.out_jitter > 0:
            n_out = max(1, int(round(n_out * (1.0 - self._rng.random() * p.out_jitter))))
        return Job(block_keys(prompt, p.block_size, p.chars_per_token), n_prompt, n_out)

    # -- scheduling

    def submit(self, job: Job) -> None:
        """Queues ``job``; it is admitted now or when a slot frees (``job.on_admit(job)``)."""
        self.requests += 1
        job.state = "waiting"
        self.waiting.append(job)
        self._admit()

    def finish(self, job: Job) -> None:
        """``job`` finished or its client left: its slot (or queue place) is freed."""
        if job.state == "running":
            self.running -= 1
            job.state = "done"
            self._admit()
        elif job.state == "waiting":
            self.waiting.remove(job)
            job.state = "done"

    def _admit(self) -> None:
        p = self.p
        while self.waiting and self.running < p.max_running:
            job = self.waiting.popleft()
            now = self.clock()
            hit = self.cache.use(job.keys)
            job.cached_tokens = min(hit * p.block_size, job.prompt_tokens - 1)
            uncached = job.prompt_tokens - job.cached_tokens
            start = max(now, self._prefill_free)
            self._prefill_free = start + (p.prefill_overhead_ms + uncached * p.prefill_us_per_token / 1000.0) / 1000.0
            job.first_token_at = self._prefill_free
            job.admitted_at = now
            job.state = "running"
            self.running += 1
            self.prompt_tokens += job.prompt_tokens
            self.cached_tokens += job.cached_tokens
            if job.on_admit is not None:
                job.on_admit(job)

    def waiting_uncached_tokens(self) -> int:
        """Prompt tokens of the waiting requests that the cache does not hold now."""
        bs = self.p.block_size
        return sum(max(0, j.prompt_tokens - self.cache.match(j.keys) * bs) for j in self.waiting)

    def step_seconds(self) -> float:
        """One decode step at the current batch size."""
        return (self.p.decode_base_ms + self.p.decode_per_req_ms * self.running) / 1000.0

    # -- reports

    def stats(self) -> dict:
        c = self.cache
        looked = c.hits + c.misses
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens, "generated_tokens": self.generated_tokens,
                "block_hits": c.hits, "block_misses": c.misses, "evictions": c.evictions,
                "cached_blocks": len(c), "cache_blocks": c.capacity,
                "hit_rate": (c.hits / looked) if looked else 0.0,
                "token_hit_rate": (self.cached_tokens / self.prompt_tokens) if self.prompt_tokens else 0.0,
                "running": self.running, "waiting": len(self.waiting)}

    def reset_counters(self) -> None:
        c = self.cache
        c.hits = c.misses = c.evictions = 0
        self.requests = self.prompt_tokens = self.cached_tokens = self.generated_tokens = 0
