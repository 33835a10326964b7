"""W3C trace context across the queue: producers write the current span's
``traceparent`` into a job's headers; workers run the handler in a span
that is its child. Uses OpenTelemetry's API only; without an SDK installed
both are no-ops."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "raftq"


def inject(headers: MutableMapping[str, str]) -> None:
    """Adds ``traceparent`` (and ``tracestate``) of the current span, if any,
    unless the caller set them."""
    if "traceparent" in headers:
        return
    _PROPAGATOR.inject(headers)


@contextmanager
def handler_span(queue: str, job_id: str, attempt: int, headers: Mapping[str, str]) -> Iterator[trace.Span]:
    """The span a handler runs in: a consumer span, child of the producer's."""
    parent = _PROPAGATOR.extract(headers)
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(
        f"{queue} process",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "raftq",
            "messaging.destination.name": queue,
            "messaging.message.id": job_id,
            "raftq.attempt": attempt,
        },
    ) as span:
        yield span


def error_status(error: BaseException) -> trace.Status:
    return trace.Status(trace.StatusCode.ERROR, str(error) or type(error).__name__)
