"""The ``none`` history backend: nothing is stored, every read finds nothing.

With it, ``store: true`` requests are answered but cannot be retrieved or continued
(``previous_response_id`` and conversations answer 404), as SMG's ``none`` does.
"""
from __future__ import annotations


class NullStore:
    name = "none"

    async def put_response(self, rec: dict) -> None:
        return None

    async def get_response(self, rid: str, owner):
        return None

    async def delete_response(self, rid: str, owner) -> bool:
        return False

    async def response_chain(self, rid: str, owner, max_depth: int) -> list:
        return []

    async def create_conversation(self, rec: dict) -> None:
        return None

    async def get_conversation(self, cid: str, owner):
        return None

    async def update_conversation(self, cid: str, owner, metadata: dict):
        return None

    async def delete_conversation(self, cid: str, owner) -> bool:
        return False

    async def add_items(self, conv: dict, items: list, added_at: int) -> None:
        return None

    async def link_items(self, conv: dict, items: list, added_at: int) -> None:
        return None

    async def list_items(self, conv: dict, limit: int, order: str, after: str | None) -> tuple:
        return [], False

    async def get_item(self, iid: str, owner):
        return None

    async def is_linked(self, conv: dict, item: dict) -> bool:
        return False

    async def unlink_item(self, conv: dict, item: dict) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
