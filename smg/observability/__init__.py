"""Observability: Prometheus metrics, access logs, OpenTelemetry tracing."""
