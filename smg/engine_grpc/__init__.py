"""The inference engines' own gRPC services, seen from the gateway (the gRPC
"full server" path, smg.md §6).

- ``sampling``: sans-I/O building of the engines' ``GenerateRequest`` from a parsed
  OpenAI body and the prompt's token ids (SGLang ``SglangScheduler``, vLLM ``VllmEngine``).
- ``client``: ``EngineChannel``, one ``grpc.aio`` channel to one engine: streamed
  generation normalized to ``EngineChunk``, abort, health, model/server info, loads,
  the tokenizer bundle, embeddings.
- ``errors``: gRPC status codes mapped onto the ``smg.errors.UpstreamError`` family.

Rules: the engines' messages come from the ``smg-grpc-proto`` package
(``smg_grpc_proto.generated``); no .proto of an engine is copied into this repository.
This package sits in the lowest layer: it imports ``smg.errors``, grpc, protobuf,
smg_grpc_proto, orjson and the stdlib only. Importing the package imports nothing
(each module is imported by name).
"""
