"""History storage of the Responses and Conversations APIs: SMG's logical records
behind one interface, and the backend the settings choose (``--history-backend``).

The records (plain dicts, JSON-serializable, so every backend keeps them as they are):

- response: ``id``, ``owner``, ``conversation_id``, ``previous_response_id``,
  ``input`` (the turn's input items, with ids), ``created_at``, ``model``,
  ``safety_identifier``, ``raw_response`` (the Response object as answered);
- conversation: ``id``, ``owner``, ``created_at``, ``metadata``;
- conversation item: ``id``, ``owner``, ``response_id``, ``item_type``, ``role``,
  ``content``, ``status``, ``created_at``, ``item`` (the item object as answered);
- link: (conversation id, item id, ``added_at``); an item may be linked to several
  conversations, and a conversation lists its items in link order.

Rules:
- Every operation is a coroutine and may raise ``StorageUnavailable`` (a backend that
  failed or timed out); callers answer 503 ``storage_unavailable`` and nothing already
  stored is lost.
- Records carry the tenant that made them (``owner``: None when the request had
  none). A read or delete by another tenant finds nothing (the API answers 404); a
  record without owner is visible to every tenant.
- Backends never raise for an unknown id: reads answer None, deletes False.
"""
from __future__ import annotations

from smg.errors import ConfigError

__all__ = ["StorageUnavailable", "visible", "build", "MAX_CHAIN_DEPTH"]

#: How far ``response_chain`` walks ``previous_response_id`` back.
MAX_CHAIN_DEPTH = 100


class StorageUnavailable(Exception):
    """A storage operation failed or timed out (503 ``storage_unavailable``)."""


def visible(record: dict | None, owner: str | None) -> dict | None:
    """``record`` when the tenant ``owner`` may see it (its own, or one without owner)."""
    if record is None:
        return None
    o = record.get("owner")
    return record if o is None or o == owner else None


def build(config):
    """The store ``config.history_backend`` names (memory, none, postgres, redis); a
    database backend connects in its ``start()``, awaited before the listeners bind."""
    backend = config.history_backend
    if backend == "memory":
        from smg.history.memory import MemoryStore
        return MemoryStore(config.history_memory_max_responses, config.history_memory_max_items,
                           config.history_memory_retention_secs)
    if backend == "none":
        from smg.history.null import NullStore
        return NullStore()
    if backend == "postgres":
        if not config.postgres_db_url:
            raise ConfigError("--history-backend", "postgres needs --postgres-db-url")
        from smg.history.postgres import PostgresStore
        return PostgresStore(config.postgres_db_url, config.postgres_pool_max, config.postgres_op_timeout_secs)
    if backend == "redis":
        if not config.redis_url:
            raise ConfigError("--history-backend", "redis needs --redis-url")
        from smg.history.redis_store import RedisStore
        return RedisStore(config.redis_url, config.redis_pool_max, config.redis_retention_days,
                          config.redis_op_timeout_secs)
    raise ConfigError("--history-backend", f"{backend!r} is not available yet (memory, none, postgres or redis)")
