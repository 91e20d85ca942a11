"""Streaming responses: observing and relaying upstream Server-Sent-Events streams.

Import the SSE scanner from :mod:`smg.streaming.sse`, which picks the native or
pure-Python implementation.
"""
