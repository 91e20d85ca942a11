"""Connections to workers: the keep-alive pool, its protocol, a control-plane client."""
