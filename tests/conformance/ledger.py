"""The session's record: what was compared, which differences were allowed, which entries were used.

Rules:
- One ``LEDGER`` per pytest session; cases call ``check`` (which returns the differences
  that are not allow-listed, for the case to assert on) and ``count`` for the numbers
  the summary prints (``COUNTERS``).
- An allow-list entry is *exercised* when its ``case`` glob matched a case that ran
  and compared the entry's aspect, and *used* when it matched a difference; exercised
  but unused entries are stale.
"""
from __future__ import annotations

from collections import Counter
from tests.conformance import allowlist

COUNTERS = ("routes compared", "bad-input cases", "Workers API steps", "metric families compared",
            "allow-listed differences")


class Ledger:
    def __init__(self) -> None:
        self.routes: set = set()
        self.counts: Counter = Counter()
        self.cases: list = []
        self.used: Counter = Counter()
        self.unallowed: list = []

    def route(self, route: str) -> None:
        self.routes.add(route)

    def count(self, name: str, n: int = 1) -> None:
        assert name in COUNTERS, name
        self.counts[name] += n

    def check(self, case: str, diffs: list, aspects: frozenset) -> list:
        """Records ``case`` as run, having compared ``aspects``; returns the differences no
        allow-list entry covers."""
        self.cases.append((case, aspects))
        left = []
        for d in diffs:
            entry = allowlist.match(d)
            if entry is None:
                left.append(d)
            else:
                self.used[entry.key] += 1
                self.counts["allow-listed differences"] += 1
        self.unallowed.extend(left)
        return left

    def stale(self) -> list:
        """Entries that matched no difference although a case they cover ran and compared
        their aspect."""
        return [e for e in allowlist.ALLOWED
                if self.used[e.key] == 0 and any(e.aspect in aspects and allowlist.glob_match(c, e.case)
                                                 for c, aspects in self.cases)]

    def report(self) -> str:
        """Every difference not allow-listed, grouped by case, as plain text."""
        by_case: dict = {}
        for d in self.unallowed:
            by_case.setdefault(d.case, []).append(d)
        out = []
        for case in sorted(by_case):
            out.append(case)
            out.extend(f"    {d}" for d in by_case[case])
        return "\n".join(out) + "\n"

    def summary_lines(self) -> list:
        counts = dict(self.counts)
        counts["routes compared"] = len(self.routes)
        lines = [f"{name}: {counts.get(name, 0)}" for name in COUNTERS]
        lines.append(f"allow-list entries used: {sum(1 for e in allowlist.ALLOWED if self.used[e.key])}"
                     f" of {len(allowlist.ALLOWED)}")
        lines.append(f"cases compared: {len(self.cases)}; differences not allow-listed: {len(self.unallowed)}")
        return lines


LEDGER = Ledger()


def fail_message(case: str, diffs: list) -> str:
    return f"{case}: {len(diffs)} difference(s) from the Rust SMG:\n" + "\n".join(f"  {d}" for d in diffs)
