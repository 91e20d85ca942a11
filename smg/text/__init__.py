"""text processing for the full-server path: chat templates, tokenizers, detokenization,
stop strings; no I/O, no server dependency."""
