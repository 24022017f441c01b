"""JSON logs with request and trace ids, and W3C trace context carried across Kafka."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import TracerProvider

_configured = False


# A real provider from the start (not the API's no-op one), so that trace context is created
# and propagated even when no exporter is configured.
trace.set_tracer_provider(TracerProvider())


def configure(service: str, level: str = "INFO", json: bool = True) -> None:
    """Set up structlog once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        structlog.processors.dict_tracebacks if json else structlog.dev.set_exc_info,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def _add_trace_ids(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event["trace_id"] = format(span.trace_id, "032x")
        event["span_id"] = format(span.span_id, "016x")
    return event


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def context_from_headers(headers: Iterable[tuple[str, bytes | str | None]] | None) -> Any:
    """The trace context a producer put into a Kafka message's headers."""
    carrier = {
        key: value.decode() if isinstance(value, bytes) else value
        for key, value in (headers or [])
        if key == "traceparent" and value is not None
    }
    return extract(carrier) if carrier else otel_context.get_current()
