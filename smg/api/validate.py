"""Per-endpoint request checks done by the gateway before routing.

Only what routing needs and what is unambiguous is checked here (the body is a JSON
object, required fields exist with the right JSON type); everything else is the
worker's to judge, so a newer API field never gets rejected by the gateway.
"""
from __future__ import annotations

# path -> ((field, allowed types, human type name), ...)
REQUIRED = {
    b"/v1/chat/completions": (("messages", (list,), "an array"),),
    b"/v1/completions": (("prompt", (str, list), "a string or an array"),),
    b"/v1/embeddings": (("input", (str, list), "a string or an array"),),
    b"/v1/rerank": (("query", (str,), "a string"), ("documents", (list,), "an array")),
    b"/rerank": (("query", (str,), "a string"), ("documents", (list,), "an array")),
    b"/v1/messages": (("messages", (list,), "an array"),),
    b"/generate": (),
}


def check(path: bytes, body: dict) -> str | None:
    """Returns an error message, or None when the body is acceptable."""
    for name, types, what in REQUIRED.get(path, ()):
        v = body.get(name)
        if v is None:
            return f"missing required field '{name}'"
        if not isinstance(v, types):
            return f"field '{name}' must be {what}"
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return "field 'model' must be a string"
    return None
