"""Output parsers: split a model's generated text into reasoning, content and tool calls.

Layout:
- ``smg.parsers.reasoning``: reasoning parsers (``<think>…</think>`` and the other
  families' markers), one instance per request or stream; ``registry`` names them.
- ``smg.parsers.tools``: tool-call parsers (Hermes/Qwen, DeepSeek, Llama, Mistral,
  pythonic, Kimi, GLM, MiniMax, …); ``registry`` names them.
- ``smg.parsers.partial_json``: the tolerant JSON reader for streamed arguments.
- ``smg.parsers.select``: which parser a request gets (model card / worker label →
  the configured name → the model-name map → ``passthrough``).

Rules every parser keeps:
- Sans-I/O: text in, results out; nothing here imports ``smg.server`` or touches a
  socket, the loop or the clock, so the package imports alone.
- No exception escapes a parser on any input: malformed or truncated output falls
  back to normal text.
- Streaming equals complete mode: the deltas of ``feed`` for any split of a text,
  followed by ``finish``, concatenate to what ``parse`` returns for the whole text.
- A partial marker is held back only while it could still become a marker; memory
  is bounded by the text fed.
"""
