"""Streaming reasoning-parser throughput: a generated answer (reasoning, closer, content)
fed in chunks of about four tokens (16 characters), the way a detokenizer would hand it
over, through a fresh parser per answer.

    python bench/parsers/bench_reasoning.py                       # deepseek_r1, 16-char chunks
    python bench/parsers/bench_reasoning.py --parser qwen3 --chunk 64 --repeat 7

Prints MB/s (UTF-8 bytes of the text) and µs per chunk, best of ``--repeat`` runs, for
streaming and for complete mode, in CPU time (process_time: steadier than wall time on a
shared machine). Timing lives here, never in the tests.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from smg.parsers.reasoning import registry  # noqa: E402

WORDS = ("the", "model", "weighs", "each", "option", "so", "x", "=", "3", "<", "y", "and", "then",
         "checks:", "if", "a", "b", "é", "→", "思考", "(", ")", "\n", "\n\n", "1.", "result")


def answer(rng: random.Random, reasoning_words: int, content_words: int, opener: bool) -> str:
    r = " ".join(rng.choice(WORDS) for _ in range(reasoning_words))
    c = " ".join(rng.choice(WORDS) for _ in range(content_words))
    return ("<think>\n" if opener else "") + r + "\n</think>\n\n" + c


def chunks_of(text: str, size: int) -> list:
    return [text[i:i + size] for i in range(0, len(text), size)]


def run(parser: str, chunk: int, answers: int, repeat: int) -> dict:
    rng = random.Random(7)
    opener = not registry.create(parser).in_reasoning
    texts = [answer(rng, rng.randint(150, 600), rng.randint(50, 300), opener) for _ in range(answers)]
    split = [chunks_of(t, chunk) for t in texts]
    nbytes = sum(len(t.encode()) for t in texts)
    nchunks = sum(len(c) for c in split)
    create = registry.create

    def streaming() -> None:
        for cs in split:
            p = create(parser)
            feed = p.feed
            for c in cs:
                feed(c)
            p.finish()

    def complete() -> None:
        for t in texts:
            create(parser).parse(t)

    out = {"bytes": nbytes, "chunks": nchunks}
    for name, fn in (("stream", streaming), ("complete", complete)):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        out[name] = best
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parser", default="deepseek_r1", choices=registry.names())
    ap.add_argument("--chunk", type=int, default=16, help="characters per chunk (~4 tokens)")
    ap.add_argument("--answers", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    r = run(a.parser, a.chunk, a.answers, a.repeat)
    mb = r["bytes"] / 1e6
    print(f"parser={a.parser} chunk={a.chunk} chars, {r['bytes']} bytes in {r['chunks']} chunks "
          f"({a.answers} answers), best of {a.repeat}")
    print(f"  streaming: {mb / r['stream']:8.1f} MB/s  {r['stream'] / r['chunks'] * 1e6:6.3f} us/chunk")
    print(f"  complete:  {mb / r['complete']:8.1f} MB/s")


if __name__ == "__main__":
    main()
