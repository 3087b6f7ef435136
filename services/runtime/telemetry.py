"""Traces: OpenTelemetry with the official instrumentations (gRPC server and
client, psycopg under SQLAlchemy, Redis), W3C trace context, exported as the standard
OpenTelemetry environment variables say.

Off unless OTEL_TRACES_EXPORTER says otherwise:
  OTEL_TRACES_EXPORTER=otlp     OTLP over gRPC to OTEL_EXPORTER_OTLP_ENDPOINT
                                (with OTEL_EXPORTER_OTLP_INSECURE=true for plain h2c)
  OTEL_TRACES_EXPORTER=console  spans as JSON to stdout (the process's log file)
Must run before the app is built: the instrumentations patch what is created after.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

log = logging.getLogger(__name__)

_enabled = False


def tracing_enabled() -> bool:
    return _enabled


def _exporter(kind: str) -> SpanExporter | None:
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "console":
        return ConsoleSpanExporter()
    if kind not in ("", "none"):
        log.warning("unknown OTEL_TRACES_EXPORTER, tracing stays off", extra={"value": kind})
    return None


def configure_tracing(service: str, instance: str) -> bool:
    """Installs the tracer provider and the instrumentations; False when off."""
    global _enabled
    exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower())
    if exporter is None:
        return False
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", f"wallet-{service}"),
            "service.instance.id": instance,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)

    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    # Every SQL statement, whichever SQLAlchemy layer sends it.
    PsycopgInstrumentor().instrument(enable_commenter=False)
    RedisInstrumentor().instrument()
    _enabled = True
    log.info("tracing on", extra={"exporter": type(exporter).__name__})
    return True


def shutdown_tracing() -> None:
    """Flushes spans still queued (on graceful shutdown)."""
    provider: Any = trace.get_tracer_provider()
    if _enabled and hasattr(provider, "shutdown"):
        provider.shutdown()


def annotate_current_span(attributes: dict[str, str]) -> None:
    """Adds wallet attributes (ids, never secrets) to the span of the current RPC."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex, for log lines; None outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
