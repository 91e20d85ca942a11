"""OpenTelemetry tracing (optional: ``pip install 'smg-proxy[trace]'``).

One SERVER span per request, parented on the client's W3C ``traceparent`` /
``tracestate`` when present, carrying the routing decision (policy, worker, model) as
attributes; the span's context is injected into the request sent to the worker, so
the worker's spans join the same trace. Disabled tracing costs nothing: the gateway
holds ``None`` instead of a Tracing object.
"""
from __future__ import annotations

from smg.errors import ConfigError


class Tracing:
    def __init__(self, endpoint: str = "localhost:4317", exporter=None, service_name: str = "smg") -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.trace import SpanKind, Status, StatusCode
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            raise ConfigError("--enable-trace", "needs the tracing extra: pip install 'smg-proxy[trace]'") from None
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise ConfigError("--enable-trace",
                                  "needs the OTLP exporter: pip install 'smg-proxy[trace]'") from None
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                                           max_export_batch_size=64))
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.provider = provider
        self.tracer = provider.get_tracer("smg")
        self._prop = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    def start(self, method: bytes, path: bytes, headers: list, rid: bytes):
        carrier = {}
        for n, v in headers:
            if n == b"traceparent" or n == b"tracestate":
                carrier[n.decode()] = v.decode("latin-1")
        ctx = self._prop.extract(carrier) if carrier else None
        name = f"{method.decode('latin-1')} {path.decode('latin-1')}"
        return self.tracer.start_span(name, context=ctx, kind=self._server, attributes={
            "http.request.method": method.decode("latin-1"), "url.path": path.decode("latin-1"),
            "smg.request_id": rid.decode("latin-1")})

    def inject(self, span) -> list:
        """Headers (bytes pairs) carrying ``span``'s context to the worker."""
        from opentelemetry import trace

        carrier: dict = {}
        self._prop.inject(carrier, context=trace.set_span_in_context(span))
        return [(k.encode(), v.encode()) for k, v in carrier.items()]

    def end(self, span, status: int, attrs: dict) -> None:
        span.set_attribute("http.response.status_code", status)
        for k, v in attrs.items():
            if v is not None:
                span.set_attribute(k, v)
        if status >= 500:
            span.set_status(self._error)
        span.end()

    def shutdown(self) -> None:
        self.provider.shutdown()
