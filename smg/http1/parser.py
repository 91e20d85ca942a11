"""Selector: the native HTTP/1.1 parsers when built, else the pure-Python twin."""
from smg._native import load
from smg.http1.parser_py import DEFAULT_MAX_HEAD_SIZE
from smg.http1.parser_py import RequestParser as RequestParserPy
from smg.http1.parser_py import ResponseParser as ResponseParserPy

_m = load("http1")
RequestParserC = _m.RequestParser if _m is not None else None
ResponseParserC = _m.ResponseParser if _m is not None else None
RequestParser = RequestParserC or RequestParserPy
ResponseParser = ResponseParserC or ResponseParserPy

__all__ = ["DEFAULT_MAX_HEAD_SIZE", "RequestParser", "RequestParserPy", "RequestParserC",
           "ResponseParser", "ResponseParserPy", "ResponseParserC"]
