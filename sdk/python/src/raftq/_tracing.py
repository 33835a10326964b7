"""W3C trace context across the queue: producers write the current span's
``traceparent`` into a job's headers; workers run the handler in a span
that is its child. Uses OpenTelemetry's API only; without an SDK installed
both are no-ops."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "raftq"


def inject(headers: MutableMapping[str, str]) -> None:
    """Adds ``traceparent`` (and ``tracestate``) of the current span, if any,
    unless the caller set them."""
    if "traceparent" in headers:
        return
    _PROPAGATOR.inject(headers)


#: What a handler runs in when no OpenTelemetry SDK is installed.
_NO_SPAN: AbstractContextManager[trace.Span] = nullcontext(trace.INVALID_SPAN)

#: Whether an SDK's tracer provider is installed. Looking costs an
#: environment lookup, so workers look once per frame of jobs
#: (``look_for_sdk``) rather than once per job; once installed, a provider
#: stays (the API refuses to replace it).
_sdk_installed = False


def look_for_sdk() -> None:
    global _sdk_installed
    if not _sdk_installed:
        provider = trace.get_tracer_provider()
        _sdk_installed = not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def handler_span(
    queue: str, job_id: str, attempt: int, headers: Mapping[str, str]
) -> AbstractContextManager[trace.Span]:
    """The span a handler runs in: a consumer span, child of the producer's.
    Without an SDK installed it is a shared no-op, so a worker pays next to
    nothing for tracing it does not use."""
    if not _sdk_installed:
        return _NO_SPAN
    # A job enqueued outside any trace starts a trace of its own.
    parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else Context()
    return trace.get_tracer(_TRACER_NAME).start_as_current_span(
        f"{queue} process",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "raftq",
            "messaging.destination.name": queue,
            "messaging.message.id": job_id,
            "raftq.attempt": attempt,
        },
    )


def error_status(error: BaseException) -> trace.Status:
    return trace.Status(trace.StatusCode.ERROR, str(error) or type(error).__name__)
