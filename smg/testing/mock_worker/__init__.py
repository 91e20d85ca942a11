"""An OpenAI-compatible fake inference engine on a raw ``asyncio.Protocol``.

Used by the test suite, by ``smg-proxy``'s demo mode (two of these when no worker is
given) and by the benchmark rig (bench/rig/compare.py), so it has to be fast enough
never to be the bottleneck of a gateway measurement.

Rules:
- It speaks HTTP/1.1 with the project's own pieces: requests are read by
  ``smg.http1.parser.RequestParser``, every response is framed with
  ``smg.http1.writer`` (``wire.py`` adds only the open head templates need).
- Import from here (``from smg.testing.mock_worker import MockConfig, MockWorker``);
  the modules below are its parts, not its API.

Theory of operation: one ``MockProtocol`` per connection parses requests and answers
each in arrival order (keep-alive and pipelining). A generation answer is rendered once
per (endpoint, model, prompt size) into bytes with a fixed-width placeholder where the
per-request id goes, so the fast path (no delay, no failure injection) costs a few
microseconds: ``id.join(parts)`` and one write. Delays, long streams to slow readers
and hangs are handed to a task; later pipelined requests wait behind it.

Where things are:

| module | what |
|---|---|
| ``config.py`` | ``MockConfig``, its validation, the failure modes |
| ``stats.py`` | ``MockStats`` |
| ``server.py`` | ``MockWorker`` (start/stop, HTTPS, template cache, ids), ``start_mock_workers``, ``tls_context`` |
| ``protocol.py`` | ``MockProtocol``: parsing, ordering, plain responses |
| ``endpoints.py`` | the route table; embeddings, rerank, info, health, ``/_mock/*`` admin |
| ``generation.py`` | chat, completions, ``/generate``, messages (the hot path) |
| ``templates.py`` | generation answers and SSE events rendered once into templates |
| ``streaming.py`` | streams and delayed answers: batching, pacing, backpressure, cuts |
| ``failures.py`` | failure injection: status, reset, cut, hang |
| ``errors.py`` | OpenAI- and Anthropic-shaped error bodies |
| ``wire.py`` | the open response head, on ``smg.http1.writer`` |
| ``cli.py`` | ``smg-proxy mock-worker`` / ``python -m smg.testing.mock_worker`` |

Stats (``MockWorker.stats``) count every request except ``/_mock/*`` ones.
"""
from smg.testing.mock_worker.cli import mock_worker_command, run_forever
from smg.testing.mock_worker.config import FAIL_MODES, MockConfig
from smg.testing.mock_worker.server import MockWorker, start_mock_workers, tls_context
from smg.testing.mock_worker.stats import MockStats

__all__ = ["FAIL_MODES", "MockConfig", "MockStats", "MockWorker", "mock_worker_command", "run_forever",
           "start_mock_workers", "tls_context"]
