"""Type stub for smg._native.radix (the pure-Python twin smg.routing.radix_py has the
same API; its module docstring defines the semantics). mypy's stubtest checks the twin
and the compiled module against this stub (tests/test_stubs.py)."""

from collections.abc import Iterable
from typing import Any

__all__ = ["MAX_KEY_UNITS", "NODE_BYTES", "SLOT_BYTES", "StringTree", "TokenTree"]

MAX_KEY_UNITS: int
NODE_BYTES: int  # mem_size(): bytes per node on top of its label
SLOT_BYTES: int  # mem_size(): bytes per (tenant, node) holding

class _Tree:
    # key: Any here, narrowed by each tree below (str / Iterable[int]).
    def insert(self, key: Any, tenant: str) -> None:
        """Record that ``tenant`` holds every prefix of ``key``; refresh its stamps on
        the path. Empty keys are ignored.

        Raises:
            TypeError: wrong key type (or a non-integer token), or ``tenant`` not a str.
            OverflowError: a token id outside ``[0, 2**32)``.
            ValueError: key longer than ``MAX_KEY_UNITS``.
        """
    def match(self, key: Any) -> tuple[int, str | None]:
        """Longest prefix held by any tenant: ``(matched_units, most recently used tenant
        among those holding it)``, ``(0, None)`` if none. Refreshes that tenant's stamps
        on the matched path; changes nothing else."""
    def match_tenant(self, key: Any, tenant: str) -> int:
        """Longest prefix (units) held by ``tenant``; read-only."""
    def match_all(self, key: Any) -> dict[str, int]:
        """``{tenant: match_tenant(key, tenant)}`` for every tenant holding a prefix of
        ``key`` (one descent); read-only."""
    def remove_tenant(self, tenant: str) -> None:
        """Drop ``tenant`` everywhere; unheld nodes are freed."""
    def evict(self, max_size: int) -> int:
        """While ``size() > max_size`` drop the LRU (tenant, leaf) holding; returns units
        evicted. Bound is for the whole tree. Raises ValueError if ``max_size < 0``."""
    def evict_tenant(self, tenant: str, max_size: int) -> int:
        """As ``evict``, over ``tenant``'s holdings only, while ``tenant_size(tenant) >
        max_size``; returns units evicted."""
    def evict_mem(self, max_bytes: int) -> int:
        """As ``evict``, in the same order, while ``mem_size() > max_bytes``; returns the
        bytes freed. Raises ValueError if ``max_bytes < 0``."""
    def size(self) -> int:
        """Units held, summed over tenants (shared prefixes count once per tenant)."""
    def mem_size(self) -> int:
        """Estimated memory in bytes: ``NODE_BYTES`` + label bytes per node, plus
        ``SLOT_BYTES`` per (tenant, node) holding (radix_py docstring, rule 5)."""
    def tenant_size(self, tenant: str) -> int: ...
    def tenants(self) -> list[str]:
        """Tenants holding anything, sorted."""
    def node_count(self) -> int:
        """Diagnostic: nodes, root excluded."""
    def _check(self) -> None: ...

class StringTree(_Tree):
    def insert(self, key: str, tenant: str) -> None: ...
    def match(self, key: str) -> tuple[int, str | None]: ...
    def match_tenant(self, key: str, tenant: str) -> int: ...

class TokenTree(_Tree):
    def insert(self, key: Iterable[int], tenant: str) -> None: ...
    def match(self, key: Iterable[int]) -> tuple[int, str | None]: ...
    def match_tenant(self, key: Iterable[int], tenant: str) -> int: ...
