"""Tool-call parsers: model output text → OpenAI ``tool_calls`` plus content.

Sans-I/O and importable alone.  :mod:`.base` holds the interface and the framed streaming
engine; the formats live in :mod:`.json_formats`, :mod:`.xml_formats` and :mod:`.pythonic`;
:mod:`.registry` names them and maps model ids to them.
"""
from .base import (
    ToolCall, ToolCallDelta, ToolParser, ToolParseResult, ToolStreamDelta, new_call_id,
)
from .registry import create, for_model, names

__all__ = [
    "ToolCall", "ToolCallDelta", "ToolParser", "ToolParseResult", "ToolStreamDelta",
    "new_call_id", "create", "for_model", "names",
]
