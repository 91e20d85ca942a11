"""``smg-proxy mock-worker`` / ``python -m smg.testing.mock_worker``: one worker until interrupted.

Rules: one flag per ``MockConfig`` field, same name and default; values go through
``MockConfig.update`` (a bad one is a usage error, exit status 2). The worker prints
one ``listening on <url>`` line once it accepts (the bench rig and tests wait for it)
and exits 0 on SIGINT/SIGTERM.
"""
from __future__ import annotations

import asyncio

import click

from smg.testing.mock_worker.config import MockConfig
from smg.testing.mock_worker.server import MockWorker


@click.command("mock-worker")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0 = any free port).")
@click.option("--model", default="mock-model", show_default=True)
@click.option("--worker-id", default="", help="x-mock-worker value [default: mock-<port>].")
@click.option("--ttft", default=0.0, show_default=True, type=float, help="Seconds to the first token.")
@click.option("--token-delay", default=0.0, show_default=True, type=float, help="Seconds between tokens.")
@click.option("--num-chunks", default=8, show_default=True, type=int, help="Tokens per answer.")
@click.option("--fail-status", default=None, type=int, help="Fail inference requests with this status.")
@click.option("--fail-rate", default=1.0, show_default=True, type=float,
              help="Probability that an inference request fails (with a fail status/mode set).")
@click.option("--fail-mode", default=None, type=click.Choice(["status", "reset", "cut", "hang"]))
@click.option("--cut-after-chunks", default=2, show_default=True, type=int)
@click.option("--embedding-dim", default=8, show_default=True, type=int)
@click.option("--admin-status", default=200, show_default=True, type=int,
              help="Status of /flush_cache, /start_profile, /stop_profile (not 200: they fail).")
@click.option("--num-labels", default=2, show_default=True, type=int, help="Classes of /v1/classify.")
@click.option("--owned-by", default="mock", show_default=True,
              help="owned_by in /v1/models (sglang/vllm make SMG detect that engine).")
def mock_worker_command(host: str, port: int, model: str, worker_id: str, ttft: float, token_delay: float,
                        num_chunks: int, fail_status: int | None, fail_rate: float, fail_mode: str | None,
                        cut_after_chunks: int, embedding_dim: int, admin_status: int, num_labels: int,
                        owned_by: str) -> None:
    """Run one OpenAI-compatible mock inference worker until interrupted."""
    try:
        cfg = MockConfig()
        cfg.update({"model": model, "worker_id": worker_id, "ttft": ttft, "token_delay": token_delay,
                    "num_chunks": num_chunks, "fail_status": fail_status, "fail_rate": fail_rate,
                    "fail_mode": fail_mode, "cut_after_chunks": cut_after_chunks,
                    "embedding_dim": embedding_dim, "admin_status": admin_status, "num_labels": num_labels,
                    "owned_by": owned_by})
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    run_forever(cfg, host, port)


def run_forever(cfg: MockConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Runs one worker on uvloop (asyncio if uvloop is missing) until SIGINT/SIGTERM."""
    import signal

    async def main() -> None:
        worker = await MockWorker(cfg).start(host, port)
        print(f"mock worker {cfg.worker_id} ({cfg.model}) listening on {worker.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
                pass
        await stop.wait()
        await worker.stop()

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main())
    else:
        uvloop.run(main())
