"""smg/server/service.py: READY=1 waits for a ready worker when asked, a reload is
wrapped in RELOADING=1/READY=1 only once the service is ready, the watchdog pings and
the worker count in STATUS= follow the loop, STOPPING=1 names the drain."""
from __future__ import annotations

import asyncio


class FakeNotifier:
    enabled = True

    def __init__(self, watchdog_interval=0.01):
        self.watchdog_interval = watchdog_interval
        self.sent = []

    def notify(self, *lines):
        self.sent.append(lines)
        return True

    def ready(self, status):
        return self.notify("READY=1", f"STATUS={status}")

    def reloading(self):
        return self.notify("RELOADING=1")

    def stopping(self, status):
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status):
        return self.notify(f"STATUS={status}")

    def watchdog(self):
        return self.notify("WATCHDOG=1")

    def close(self):
        self.sent.append(("closed",))


def test_lifecycle():
    from smg.server.service import Service

    async def main():
        n = FakeNotifier()
        ready = [0]
        s = Service(n, lambda: "listening on x", lambda: ready[0])
        started = asyncio.ensure_future(s.started(wait_for_worker=True))
        await asyncio.sleep(0.05)
        assert ("STATUS=listening on x; waiting for a ready worker",) in n.sent
        assert not any("READY=1" in m for m in n.sent) and ("WATCHDOG=1",) in n.sent
        assert s.reload(lambda: "applied") == "applied"  # before READY=1: no RELOADING/READY
        assert not any("RELOADING=1" in m or "READY=1" in m for m in n.sent)
        ready[0] = 1
        await asyncio.wait_for(started, 5)
        assert n.sent[-1] == ("READY=1", "STATUS=listening on x; 1 worker ready")
        ready[0] = 2
        for _ in range(100):
            if ("STATUS=listening on x; 2 workers ready",) in n.sent:
                break
            await asyncio.sleep(0.01)
        assert ("STATUS=listening on x; 2 workers ready",) in n.sent
        mark = len(n.sent)
        s.reload(lambda: None)
        assert n.sent[mark:mark + 2] == [("RELOADING=1",), ("READY=1", "STATUS=listening on x; 2 workers ready")]
        s.stopping(3)
        assert n.sent[-1] == ("STOPPING=1", "STATUS=draining 3 in-flight requests")
        s.close()
        count = len(n.sent)
        await asyncio.sleep(0.05)
        assert n.sent[count - 1:] == [("closed",)]  # no ping after close

    asyncio.run(main())
