"""Pure-Python twin of ``smg._native.radix``: tenant-tagged radix trees for cache_aware routing.

Holds ``StringTree`` (keys are ``str``; one unit = one character, i.e. one code point) and
``TokenTree`` (keys are sequences of token ids in ``[0, 2**32)``; one unit = one token). Both
twins implement exactly the behaviour described here; ``tests/native/test_radix.py`` checks
them against each other and against a naive model after every step of random operation
sequences.

Theory of operation
-------------------
The tree is a real radix tree: every edge carries a label of one or more units, siblings
differ in their first unit, and a node is split only where two keys diverge or a key ends.
Each node records the *tenants* (worker ids, ``str``) that hold the prefix ending at that
node, and, per tenant, a last-access *stamp*. A tenant holding a node holds its whole edge
label (holdings are node-granular), and holds every ancestor too.

Time is a logical clock, not the wall clock, so the core stays deterministic and sans-I/O:
the counter goes up by one on every ``insert`` of a non-empty key and on every ``match``
that finds something, and that operation stamps the nodes it touches with the new value.

Rules (both twins keep all of them):

1. *Prefix closure.* The tenants of a node are a subset of the tenants of its parent.
   Every non-root node is held by at least one tenant; a node that loses its last
   tenant is freed at once, so memory follows what is held.
2. *Size.* ``tenant_size(t)`` is the number of units tenant ``t`` holds, i.e. the number
   of distinct non-empty prefixes of the keys ``t`` inserted (minus what was evicted).
   ``size()`` is the sum of ``tenant_size`` over all tenants: a prefix held by two
   tenants counts twice. ``evict(max_size)`` bounds this same number, for the whole tree
   (all tenants together). A per-tenant bound is what let the Rust gateway's trees grow
   without limit as workers were added (smg#2137).
3. *Match.* ``match(key)`` finds the longest prefix of ``key`` held by any tenant (a match
   may end inside an edge) and returns ``(length_in_units, tenant)``, where ``tenant`` is
   the most recently used of the tenants holding that whole prefix (those holding the
   node the match ended in). It refreshes that one tenant's stamps on every node of the
   matched path, and changes nothing else; ``match_tenant`` changes nothing at all.
4. *Eviction.* ``evict(max_size)`` removes (tenant, node) holdings while ``size()`` is
   above ``max_size``, always the least recently used holding that is a leaf *for that
   tenant* (the tenant holds none of the node's children), so a tenant's prefixes are
   given up from the longest end and rule 1 holds throughout. One holding is removed
   whole, so ``size()`` can end below ``max_size`` by up to one edge label.
5. *Memory.* ``mem_size()`` estimates the tree's memory in bytes, as the native tree lays
   it out (radix.pxd), kept up to date by every change (a counter, never a walk):
   ``NODE_BYTES`` per node, plus the node's label in bytes (UTF-8 for
   ``StringTree``, surrogates as 3 bytes; 4 bytes per token for ``TokenTree``), plus
   ``SLOT_BYTES`` per (tenant, node) holding. A label two tenants hold is stored, so
   counted, once. ``evict_mem(max_bytes)`` evicts exactly as ``evict`` does (rule 4, same
   order) but until ``mem_size() <= max_bytes``: dropping a holding frees ``SLOT_BYTES``;
   dropping a node's last holding frees the node too (``NODE_BYTES`` + its label), so
   ``mem_size()`` can end below ``max_bytes`` by up to one node. This is the bound
   cache_aware enforces (``max_tree_size``): a bound on units let trees of short unique
   prompts, where per-node overhead dominates, use several times the memory the setting
   suggested.

Why the memory constants are what they are (native layout, radix.pxd; 64-bit CPython):
a ``Node`` is 56 bytes (one 64-byte pymalloc block); its ``Edge`` in the parent's edge
array is 16 bytes in an array grown by doubling (~24 on average); the label's block is
rounded up to 16 bytes (~8); eviction keeps an 8-byte scratch pointer per node
(``_path``). That is ``NODE_BYTES = 112``. A ``Slot`` is 16 bytes in an array grown by
doubling: ``SLOT_BYTES = 24``. Measured on 100k-200k unique 64-char prompts, the
native tree's RSS growth is 0.7-1.0 times this estimate (one to eight tenants per node;
``bench/micro/test_radix_bench.py::test_memory_accounting_vs_rss`` prints it); tracemalloc
sees 0.96 of it for the 50k-conversation benchmark tree. The estimate errs on the safe
side. The twin
keeps the same books so that both twins evict identically; its own Python objects take
several times more per node (the twin is the readable reference and the fallback, not
the memory target).

Why LRU order is total (no tie-breaks needed, so the twins cannot disagree): each stamp
value is written by one operation, for one tenant, along one root path. Later touches
of that tenant overwrite a stamp from the top of that path down, and a split copies
stamps onto a node inserted into the same path, so the nodes still carrying a given
stamp for a tenant form a chain, and at most one node of a chain is a leaf for that
tenant. So no two (tenant, leaf) holdings share a stamp.

This twin is the readable reference; the native tree is the one that meets the latency
target. Labels are ``str`` slices (StringTree) or native-endian ``uint32`` ``bytes``
(TokenTree, one unit = 4 bytes); children are keyed by their first unit.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable
from heapq import heapify, heappop, heappush
from typing import Any

__all__ = ["MAX_KEY_UNITS", "NODE_BYTES", "SLOT_BYTES", "StringTree", "TokenTree"]

#: Longest key accepted, in units. 2**28 keeps every label length (bytes) inside a C
#: ``uint32_t`` in the native twin (UTF-8 is at most 4 bytes per unit, tokens exactly 4);
#: it is far above any prompt (SMG's default --max-payload-size is 512 MiB of JSON).
MAX_KEY_UNITS = 1 << 28

#: ``mem_size()`` accounting (module docstring, rule 5): bytes per node on top of its
#: label, and bytes per (tenant, node) holding. The native module has the same values.
NODE_BYTES = 112
SLOT_BYTES = 24

# Token ids are stored as native uint32 (array typecode "I" wherever int is 32-bit).
_TC = "I" if array("I").itemsize == 4 else "L"
if array(_TC).itemsize != 4:  # pragma: no cover - no supported platform gets here
    raise ImportError("no 32-bit unsigned array typecode on this platform")


class _Node:
    """One edge plus the node it leads to.

    ``tenants`` maps tenant -> ``[stamp, nchild]``, where ``nchild`` counts this node's
    children that the tenant also holds (0 means the holding is a leaf for the tenant,
    i.e. an eviction candidate). ``children`` is None while the node has none (saves an
    empty dict per leaf).
    """

    __slots__ = ("children", "label", "parent", "tenants")

    def __init__(self, parent: _Node | None, label: Any) -> None:
        self.parent = parent
        self.label = label
        self.children: dict[Any, _Node] | None = None
        self.tenants: dict[str, list[int]] = {}


def _lcp(key: Any, pos: int, label: Any, unit: int) -> int:
    """Length (raw index units) of the common prefix of ``key[pos:]`` and ``label``,
    rounded down to a whole unit. The caller guarantees the first unit is equal."""
    n = len(label)
    if key.startswith(label, pos):
        return n
    # Binary search on whole units; each probe is one C-level comparison.
    lo = 1
    hi = min(n, len(key) - pos) // unit
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if key.startswith(label[: mid * unit], pos):
            lo = mid
        else:
            hi = mid - 1
    return lo * unit


def _check_tenant(tenant: object) -> None:
    if not isinstance(tenant, str):
        raise TypeError(f"tenant must be str, not {type(tenant).__name__}")


class _Tree:
    __slots__ = ("_clock", "_mem", "_nodes", "_root", "_sizes", "_total")

    # Width of one unit in the raw label (1 char for str, 4 bytes for uint32 tokens).
    _UNIT = 1
    _EMPTY: Any = ""

    def __init__(self) -> None:
        self._root = _Node(None, self._EMPTY)
        self._clock = 0
        self._sizes: dict[str, int] = {}  # tenant -> units held; only tenants holding > 0
        self._total = 0
        self._nodes = 0  # non-root nodes
        self._mem = 0  # mem_size(), rule 5

    def _key(self, key: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @staticmethod
    def _label_bytes(label: Any) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- mutation helpers -------------------------------------------------------------

    def _hold(self, node: _Node, tenant: str, stamp: int) -> None:
        slot = node.tenants.get(tenant)
        if slot is not None:
            slot[0] = stamp
            return
        node.tenants[tenant] = [stamp, 0]
        self._mem += SLOT_BYTES
        units = len(node.label) // self._UNIT
        self._sizes[tenant] = self._sizes.get(tenant, 0) + units
        self._total += units
        parent = node.parent
        if parent is not self._root:
            # The path is held top-down, so the parent already has this tenant.
            parent.tenants[tenant][1] += 1  # type: ignore[union-attr]

    def _split(self, child: _Node, first: Any, cut: int) -> _Node:
        """Split ``child``'s edge at raw offset ``cut``; returns the new upper node, which
        takes over every holding of ``child`` (same stamps; each with one held child)."""
        parent = child.parent
        assert parent is not None and parent.children is not None
        upper = _Node(parent, child.label[:cut])
        upper.tenants = {t: [s[0], 1] for t, s in child.tenants.items()}
        parent.children[first] = upper
        rest = child.label[cut:]
        child.label = rest
        child.parent = upper
        upper.children = {rest[: self._UNIT]: child}
        self._nodes += 1
        # The two labels together are the old one: only the node and its holdings are new.
        self._mem += NODE_BYTES + SLOT_BYTES * len(upper.tenants)
        return upper

    def _unlink(self, node: _Node) -> None:
        # Detach an unheld node (the caller books the memory it frees).
        parent = node.parent
        assert parent is not None and parent.children is not None
        del parent.children[node.label[: self._UNIT]]
        if not parent.children:
            parent.children = None
        node.parent = None
        self._nodes -= 1

    # -- public API -----------------------------------------------------------------------

    def insert(self, key: Any, tenant: str) -> None:
        """Record that ``tenant`` holds every prefix of ``key``; refresh its stamps on the
        path. Empty keys are ignored.

        Raises:
            TypeError: ``key`` has the wrong type (or holds a non-integer token), or
                ``tenant`` is not a str.
            OverflowError: a token id is outside ``[0, 2**32)``.
            ValueError: the key is longer than ``MAX_KEY_UNITS``.
        """
        key = self._key(key)
        _check_tenant(tenant)
        n = len(key)
        if not n:
            return
        unit = self._UNIT
        self._clock += 1
        stamp = self._clock
        node = self._root
        pos = 0
        while pos < n:
            first = key[pos : pos + unit]
            children = node.children
            child = children.get(first) if children is not None else None
            if child is None:
                child = _Node(node, key[pos:])
                if children is None:
                    node.children = children = {}
                children[first] = child
                self._nodes += 1
                self._mem += NODE_BYTES + self._label_bytes(child.label)
                self._hold(child, tenant, stamp)
                return
            cut = _lcp(key, pos, child.label, unit)
            if cut < len(child.label):
                child = self._split(child, first, cut)
            self._hold(child, tenant, stamp)
            pos += cut
            node = child

    def match(self, key: Any) -> tuple[int, str | None]:
        """Longest prefix of ``key`` held by any tenant.

        Returns:
            ``(matched_units, tenant)``: ``tenant`` is the most recently used tenant among
            those holding the whole matched prefix; ``(0, None)`` when nothing matches
            (including the empty key). The chosen tenant's stamps on the matched path are
            refreshed (it counts as a use); nothing else changes.
        Raises:
            as ``insert`` does for a bad key.
        """
        key = self._key(key)
        unit = self._UNIT
        n = len(key)
        node = self._root
        pos = 0
        path = []
        while pos < n:
            children = node.children
            if children is None:
                break
            child = children.get(key[pos : pos + unit])
            if child is None:
                break
            label = child.label
            cut = _lcp(key, pos, label, unit)
            path.append(child)
            pos += cut
            if cut < len(label):
                break
            node = child
        if not path:
            return (0, None)
        best = ""
        best_stamp = -1
        for t, slot in path[-1].tenants.items():
            if slot[0] > best_stamp:
                best = t
                best_stamp = slot[0]
        self._clock += 1
        stamp = self._clock
        for nd in path:
            nd.tenants[best][0] = stamp
        return (pos // unit, best)

    def match_tenant(self, key: Any, tenant: str) -> int:
        """Longest prefix of ``key`` (in units) held by ``tenant``; 0 if it holds none.
        Read-only: stamps are not refreshed.

        Raises:
            as ``insert`` does.
        """
        key = self._key(key)
        _check_tenant(tenant)
        if tenant not in self._sizes:
            return 0
        unit = self._UNIT
        n = len(key)
        node = self._root
        pos = 0
        while pos < n:
            children = node.children
            if children is None:
                break
            child = children.get(key[pos : pos + unit])
            if child is None or tenant not in child.tenants:
                break
            label = child.label
            cut = _lcp(key, pos, label, unit)
            pos += cut
            if cut < len(label):
                break
            node = child
        return pos // unit

    def match_all(self, key: Any) -> dict:
        """``{tenant: match_tenant(key, tenant)}`` for every tenant that holds a non-empty
        prefix of ``key``, in one descent. Read-only.

        Raises:
            as ``insert`` does.
        """
        key = self._key(key)
        unit = self._UNIT
        n = len(key)
        node = self._root
        pos = 0
        path = []
        while pos < n:
            children = node.children
            if children is None:
                break
            child = children.get(key[pos : pos + unit])
            if child is None:
                break
            cut = _lcp(key, pos, child.label, unit)
            pos += cut
            path.append((child, pos))
            if cut < len(child.label):
                break
            node = child
        out: dict = {}
        for nd, end in reversed(path):  # a tenant's match ends at the deepest node it holds
            for t in nd.tenants:
                if t not in out:
                    out[t] = end // unit
        return out

    def remove_tenant(self, tenant: str) -> None:
        """Drop ``tenant`` everywhere; nodes nobody holds any more are freed. Unknown
        tenants are ignored.

        Raises:
            TypeError: ``tenant`` is not a str.
        """
        _check_tenant(tenant)
        held = self._sizes.pop(tenant, None)
        if held is None:
            return
        # Breadth-first over the nodes the tenant holds (rule 1: only below held nodes),
        # so every parent comes before its children; then undo in reverse order.
        order = []
        children = self._root.children
        if children:
            order.extend(c for c in children.values() if tenant in c.tenants)
        i = 0
        while i < len(order):
            children = order[i].children
            if children:
                order.extend(c for c in children.values() if tenant in c.tenants)
            i += 1
        mem = self._mem
        for nd in reversed(order):
            del nd.tenants[tenant]
            mem -= SLOT_BYTES
            if not nd.tenants:
                self._unlink(nd)
                mem -= NODE_BYTES + self._label_bytes(nd.label)
        self._mem = mem
        self._total -= held

    def evict(self, max_size: int) -> int:
        """While ``size() > max_size``, drop the least recently used (tenant, leaf)
        holding (module docstring, rule 4). The bound is for the whole tree.

        Returns:
            the number of units evicted (``size()`` before minus after).
        Raises:
            TypeError: ``max_size`` is not an integer.
            ValueError: ``max_size`` is negative.
        """
        max_size = operator.index(max_size)
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        before = self._total
        if before > max_size:
            self._evict(max_size, False)
        return before - self._total

    def evict_mem(self, max_bytes: int) -> int:
        """While ``mem_size() > max_bytes``, drop the least recently used (tenant, leaf)
        holding: ``evict`` with the memory estimate as the bound (module docstring, rule 5).

        Returns:
            the bytes freed (``mem_size()`` before minus after).
        Raises:
            TypeError: ``max_bytes`` is not an integer.
            ValueError: ``max_bytes`` is negative.
        """
        max_bytes = operator.index(max_bytes)
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        before = self._mem
        if before > max_bytes:
            self._evict(max_bytes, True)
        return before - self._mem

    def evict_tenant(self, tenant: str, max_size: int) -> int:
        """While ``tenant_size(tenant) > max_size``, drop ``tenant``'s least recently used
        leaf holding (rule 4's order, over that tenant's holdings only). Other tenants
        are untouched.

        Returns:
            the number of units evicted.
        Raises:
            TypeError: ``tenant`` is not a str or ``max_size`` not an integer.
            ValueError: ``max_size`` is negative.
        """
        _check_tenant(tenant)
        max_size = operator.index(max_size)
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        if self._sizes.get(tenant, 0) <= max_size:
            return 0
        before = self._total
        self._evict(max_size, False, tenant)
        return before - self._total

    def _evict(self, bound: int, by_mem: bool, only: str | None = None) -> None:
        # Rule 4's loop; the bound is on mem_size() (by_mem) or on size(), or with
        # ``only`` on that tenant's size over its holdings alone.
        unit = self._UNIT
        root = self._root
        # Stamps of leaf holdings are unique (module docstring), so tuples never compare
        # past their first element.
        heap = []
        stack = [root]
        while stack:
            nd = stack.pop()
            if nd.children:
                for c in nd.children.values():
                    stack.append(c)
                    for t, slot in c.tenants.items():
                        if slot[1] == 0 and (only is None or t == only):
                            heap.append((slot[0], t, c))
        heapify(heap)
        sizes = self._sizes
        label_bytes = self._label_bytes
        total = self._total
        mem = self._mem
        while heap and ((sizes.get(only, 0) if only is not None else (mem if by_mem else total))
                        > bound):
            _, t, nd = heappop(heap)
            del nd.tenants[t]
            mem -= SLOT_BYTES
            units = len(nd.label) // unit
            total -= units
            left = sizes[t] - units
            if left:
                sizes[t] = left
            else:
                del sizes[t]
            parent = nd.parent
            assert parent is not None
            if not nd.tenants:
                self._unlink(nd)
                mem -= NODE_BYTES + label_bytes(nd.label)
            if parent is not root:
                pslot = parent.tenants[t]
                pslot[1] -= 1
                if pslot[1] == 0:
                    heappush(heap, (pslot[0], t, parent))
        self._total = total
        self._mem = mem

    def size(self) -> int:
        """Total units held, summed over tenants (a prefix two tenants hold counts twice)."""
        return self._total

    def mem_size(self) -> int:
        """Estimated memory of the tree in bytes (module docstring, rule 5)."""
        return self._mem

    def tenant_size(self, tenant: str) -> int:
        """Units held by ``tenant`` (0 if unknown)."""
        _check_tenant(tenant)
        return self._sizes.get(tenant, 0)

    def tenants(self) -> list[str]:
        """Tenants holding anything, sorted."""
        return sorted(self._sizes)

    def node_count(self) -> int:
        """Diagnostic: number of nodes, root excluded."""
        return self._nodes

    def _check(self) -> None:
        """Test hook: assert every structural invariant (rules 1-2, child counts)."""
        sizes: dict[str, int] = {}
        count = 0
        mem = 0
        stack = [self._root]
        unit = self._UNIT
        while stack:
            nd = stack.pop()
            if nd is not self._root:
                count += 1
                assert len(nd.label) >= unit and len(nd.label) % unit == 0
                assert nd.tenants, "unheld node"
                mem += NODE_BYTES + self._label_bytes(nd.label) + SLOT_BYTES * len(nd.tenants)
                for t in nd.tenants:
                    sizes[t] = sizes.get(t, 0) + len(nd.label) // unit
            if nd.children is not None:
                assert nd.children, "empty children dict"
                for first, c in nd.children.items():
                    assert c.parent is nd
                    assert c.label[:unit] == first
                    if nd is not self._root:
                        assert set(c.tenants) <= set(nd.tenants), "prefix closure"
                    stack.append(c)
            if nd is not self._root:
                for t, (_, nchild) in nd.tenants.items():
                    held = sum(1 for c in (nd.children or {}).values() if t in c.tenants)
                    assert nchild == held, "child count"
        assert count == self._nodes
        assert sizes == self._sizes
        assert sum(sizes.values()) == self._total
        assert mem == self._mem, "memory accounting"


class StringTree(_Tree):
    """Radix tree over ``str`` keys; one unit = one character (code point)."""

    __slots__ = ()
    _UNIT = 1
    _EMPTY = ""

    def _key(self, key: Any) -> str:
        if not isinstance(key, str):
            raise TypeError(f"StringTree keys must be str, not {type(key).__name__}")
        if len(key) > MAX_KEY_UNITS:
            raise ValueError("key longer than MAX_KEY_UNITS")
        return key

    @staticmethod
    def _label_bytes(label: str) -> int:
        # UTF-8 length, as the native tree stores it (isascii() is O(1) in CPython)
        return len(label) if label.isascii() else len(label.encode("utf-8", "surrogatepass"))


class TokenTree(_Tree):
    """Radix tree over token-id sequences (list, tuple, array, any iterable of ints in
    ``[0, 2**32)``; ``str``/``bytes``/``bytearray`` are refused); one unit = one token."""

    __slots__ = ()
    _UNIT = 4
    _EMPTY = b""

    def _key(self, key: Any) -> bytes:
        if isinstance(key, (str, bytes, bytearray)):
            raise TypeError(f"TokenTree keys must be sequences of ints, not {type(key).__name__}")
        if isinstance(key, array) and key.typecode == _TC:
            raw = key.tobytes()
        else:
            seq: Iterable[Any] = key if isinstance(key, list) else list(key)
            raw = array(_TC, seq).tobytes()
        if len(raw) > 4 * MAX_KEY_UNITS:
            raise ValueError("key longer than MAX_KEY_UNITS")
        return raw

    @staticmethod
    def _label_bytes(label: bytes) -> int:
        return len(label)
