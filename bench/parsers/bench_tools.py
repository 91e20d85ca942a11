"""Streaming throughput of the tool-call parsers (smg/parsers/tools), and of the
partial-JSON reader against the ``partial-json-parser`` package.

Workloads (each one model reply: a sentence of content, then two calls whose arguments hold
nested objects, numbers, unicode and a ~1 KB string):

- ``json``, ``qwen``, ``deepseek``, ``pythonic``: the reply in each format, fed in chunks of
  16 characters (about what a detokenizer hands over per few tokens), then ``finish``.

Reported per format: MB/s of reply text and µs per chunk; the complete-mode ``parse`` of the
same reply for comparison.  Each run checks the streamed calls equal ``parse``'s, so it
cannot pass on a broken parser; timing decides nothing.

Partial JSON: µs per call for re-reading a growing arguments string (the way a stream sees
it) with ``partial_json_parser.loads`` (if installed), against this package's incremental
``JsonStream`` (which reads each new character once).

Run: ``python bench/parsers/bench_tools.py``.
"""
from __future__ import annotations

import json
import time
import timeit

from smg.parsers.partial_json import JsonStream
from smg.parsers.tools import create

CHUNK = 16
ARGS = [
    {"location": {"city": "Paris", "country": "FR", "coords": [48.8566, 2.3522]}, "units": "metric",
     "days": 5, "include": ["hourly", "alerts"], "note": "Prévisions détaillées — 天气 ☀️ " * 20},
    {"query": "best croissant near the Louvre", "limit": 10, "open_now": True, "filters": {"price": [1, 2]},
     "text": "x" * 1000},
]
CONTENT = "Sure — let me look that up for you. "


def render(fmt: str) -> str:
    calls = [("get_weather", ARGS[0]), ("search_places", ARGS[1])]
    if fmt == "json":
        return CONTENT + json.dumps([{"name": n, "arguments": a} for n, a in calls], ensure_ascii=False)
    if fmt == "qwen":
        return CONTENT + "\n".join(
            f"<tool_call>\n{json.dumps({'name': n, 'arguments': a}, ensure_ascii=False)}\n</tool_call>" for n, a in calls
        )
    if fmt == "deepseek":
        body = "\n".join(
            f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{json.dumps(a, ensure_ascii=False)}\n```"
            "<｜tool▁call▁end｜>" for n, a in calls
        )
        return f"{CONTENT}<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"
    if fmt == "pythonic":
        return CONTENT + "[" + ", ".join(
            f"{n}(" + ", ".join(f"{k}={v!r}" for k, v in a.items()) + ")" for n, a in calls
        ) + "]"
    raise ValueError(fmt)


def stream_once(fmt: str, text: str):
    p = create(fmt)
    calls: dict[int, list] = {}
    for i in range(0, len(text), CHUNK):
        for c in p.feed(text[i:i + CHUNK]).calls:
            e = calls.setdefault(c.index, ["", ""])
            e[0] += c.name or ""
            e[1] += c.arguments
    for c in p.finish().calls:
        e = calls.setdefault(c.index, ["", ""])
        e[0] += c.name or ""
        e[1] += c.arguments
    return [tuple(v) for _, v in sorted(calls.items())]


def _time_one(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_format(fmt: str, seconds: float = 1.0) -> dict:
    text = render(fmt)
    complete = [(c.name, c.arguments) for c in create(fmt).parse(text).calls]
    assert len(complete) == 2 and stream_once(fmt, text) == complete, fmt
    chunks = (len(text) + CHUNK - 1) // CHUNK
    # best of several runs: the figures are for an unloaded core
    reps = max(1, int(seconds / 5 / max(_time_one(lambda: stream_once(fmt, text)), 1e-6)))
    dt = min(timeit.repeat(lambda: stream_once(fmt, text), number=reps, repeat=5)) / reps
    dc = min(timeit.repeat(lambda: create(fmt).parse(text), number=reps, repeat=5)) / reps
    size = len(text.encode())
    return {"format": fmt, "bytes": size, "chunks": chunks, "stream_MBps": size / dt / 1e6,
            "us_per_chunk": dt / chunks * 1e6, "parse_MBps": size / dc / 1e6}


def bench_partial_json(sizes=(256, 1024, 4096)) -> list[dict]:
    try:
        import partial_json_parser as pjp
    except ImportError:  # optional comparison
        pjp = None
    out = []
    for size in sizes:
        doc = json.dumps({"text": "y" * size, "n": [1, 2, 3], "o": {"k": "v"}})
        prefixes = [doc[:i] for i in range(CHUNK, len(doc), CHUNK)]
        row = {"args_chars": len(doc), "calls": len(prefixes)}
        if pjp is not None:
            t0 = time.perf_counter()
            for p in prefixes:
                pjp.loads(p)
            row["partial_json_parser_us_per_call"] = (time.perf_counter() - t0) / len(prefixes) * 1e6
        t0 = time.perf_counter()
        r = JsonStream()
        for p in prefixes:
            r.feed(p)
        r.feed(doc)
        assert r.done and json.loads(r.text()) == json.loads(doc)
        row["JsonStream_us_per_call"] = (time.perf_counter() - t0) / (len(prefixes) + 1) * 1e6
        out.append(row)
    return out


def main() -> None:
    for fmt in ("json", "qwen", "deepseek", "pythonic"):
        r = bench_format(fmt)
        print(f"{r['format']:9s} {r['bytes']:6d} B {r['chunks']:4d} chunks  stream {r['stream_MBps']:6.2f} MB/s "
              f"{r['us_per_chunk']:6.2f} us/chunk   parse {r['parse_MBps']:6.2f} MB/s")
    for row in bench_partial_json():
        print("partial JSON", row)


if __name__ == "__main__":
    main()
