"""OpenAI's Responses and Conversations APIs, served over the gateway's chat pipeline
and the history store (smg/history)."""
