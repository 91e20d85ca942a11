"""Request validation, per API: what SMG refuses before a request reaches a worker,
with SMG's status, ``code`` and ``param``.

A ``Validator`` belongs to an endpoint record (smg/server/endpoints.py) and is used by
the validation filter (smg/server/handlers.py ``parse_body``), which parses the body
once; the validator judges the parsed dict and never re-parses or re-encodes it.

Rules:
- The checks are those of SMG's typed requests and no more (a field SMG does not
  type passes, and so does every field it does not know): one module per API holds
  them (``openai_chat``, ``completions``, ``messages``, ``embeddings``, ``rerank``,
  ``generate``), written in the engine of ``_core``.
- Routes SMG validates answer faults as JSON errors in the route's API format
  (status 400); routes it only decodes answer plain text (``plain``: 415 for a
  non-JSON content type, 400 for bad JSON, 422 for a wrong field), as SMG does.
- Order: content type, then JSON syntax, then "is an object", then the API's checks.
  A Content-Type naming anything but JSON is refused; a body without one is read as
  JSON (the validation filter's choice: clients and tools that omit the header keep
  working).
"""
from __future__ import annotations

from smg.api.validate import completions, embeddings, generate, messages, openai_chat, rerank
from smg.api.validate._core import DECODE_PREFIX, INVALID_TYPE, Bad, Invalid, Shape, decode_fault, unexpected
from smg.api.validate.screen import VALID

__all__ = ["Invalid", "Validator", "VALID", "CHAT", "COMPLETIONS", "MESSAGES", "EMBEDDINGS", "RERANK", "RERANK_V1",
           "GENERATE", "CLASSIFY", "COUNT_TOKENS", "json_content_type"]


def json_content_type(value: bytes | None) -> bool:
    """Whether a Content-Type value is JSON: ``application/json`` or
    ``application/<anything>+json``, any parameters, any case."""
    if value == b"application/json":  # what nearly every client sends
        return True
    if not value:
        return False
    i = value.find(b";")
    mime = (value if i < 0 else value[:i]).strip().lower()
    if mime == b"application/json":
        return True
    return mime.startswith(b"application/") and mime.endswith(b"+json")


class Validator:
    """How one API's bodies are judged: ``check(body) -> Invalid | None`` (a ``Shape``;
    ``passes(body) == VALID`` is the fast proof of None) and the answers to bodies that
    are not a JSON object of the right type.

    ``what`` names the request type in messages; ``plain`` (see the module rules)."""

    __slots__ = ("check", "passes", "what", "plain", "sequence", "bad_content_type")

    def __init__(self, check: Shape, what: str, plain: bool = False, sequence: tuple = ()) -> None:
        self.check = check
        self.passes = check.passes
        self.what = what
        self.plain = plain
        self.sequence = sequence  # checkers of the fields, when a JSON array may stand for the object
        if plain:
            self.bad_content_type = Invalid(415, "json_parse_error", None,
                                            "Expected request with `Content-Type: application/json`", True)
        else:
            self.bad_content_type = Invalid(400, "json_parse_error", None,
                                            "Missing Content-Type: application/json header")

    def syntax(self, detail: str) -> Invalid:
        """The answer to a body that is not JSON (``detail``: the parser's words)."""
        if self.plain:
            return Invalid(400, "invalid_json", None, f"Failed to parse the request body as JSON: {detail}", True)
        return Invalid(400, "invalid_json", None, f"JSON syntax error: Failed to parse the request body as JSON: "
                                                  f"{detail}")

    def not_object(self, obj) -> Invalid:
        """The answer to JSON that is not an object."""
        if type(obj) is list and self.sequence:
            for i, (x, check) in enumerate(zip(obj, self.sequence)):
                try:
                    check(x)
                except Bad as e:
                    e.where = [i]
                    return decode_fault(e, self.plain)
        detail = f"invalid type: {unexpected(obj)}, expected struct {self.what}"
        if self.plain:
            return Invalid(422, INVALID_TYPE, None, f"Failed to deserialize the JSON body into the target type: "
                                                    f"{detail}", True)
        return Invalid(400, INVALID_TYPE, None, DECODE_PREFIX + detail)


CHAT = Validator(openai_chat.validate, "ChatCompletionRequest")
COMPLETIONS = Validator(completions.validate, "CompletionRequest")
MESSAGES = Validator(messages.validate, "CreateMessageRequest")
EMBEDDINGS = Validator(embeddings.validate, "EmbeddingRequest", plain=True)
RERANK = Validator(rerank.validate, "RerankRequest", sequence=rerank.SEQUENCE)
RERANK_V1 = Validator(rerank.validate_v1, "V1RerankReqInput", plain=True)
GENERATE = Validator(generate.validate, "GenerateRequest", plain=True)
CLASSIFY = Validator(embeddings.validate_classify, "ClassifyRequest", plain=True)
COUNT_TOKENS = Validator(messages.validate_count_tokens, "CountMessageTokensRequest")
