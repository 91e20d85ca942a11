"""The gRPC full-server path's answers: engine token chunks in, OpenAI and SGLang
shapes out (``render.ResponseBuilder``). Sans-I/O; no dependency on smg.server."""
from smg.generation.render import ResponseBuilder

__all__ = ["ResponseBuilder"]
