"""Gateway settings: one schema (schema.py) feeding the CLI flags and the YAML config."""
from smg.config.schema import GatewayConfig, SETTINGS
from smg.config.load import build_config

__all__ = ["GatewayConfig", "SETTINGS", "build_config"]
