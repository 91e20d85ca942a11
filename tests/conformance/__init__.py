"""Differential conformance suite: smg-proxy against the real Rust SMG (see conftest.py)."""
