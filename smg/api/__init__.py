"""Request validation and response shaping per API family (OpenAI, Anthropic, SGLang)."""
