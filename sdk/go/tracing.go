package raftq

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// W3C trace context across the queue, with OpenTelemetry's API only:
// without an SDK installed there is no span and nothing is written.
var traceContext = propagation.TraceContext{}

// injectTrace adds the traceparent (and tracestate) of ctx's span to
// headers, unless the caller set one.
func injectTrace(ctx context.Context, headers map[string]string) {
	if _, set := headers["traceparent"]; set {
		return
	}
	traceContext.Inject(ctx, propagation.MapCarrier(headers))
}

var consumerSpan = trace.WithSpanKind(trace.SpanKindConsumer)

// handlerSpanName names the spans of a queue's handlers.
func handlerSpanName(queue string) string { return queue + " process" }

// tracer follows the global provider: one set later takes over.
var tracer = otel.Tracer("raftq")

// defaultTracerProvider is the global provider before any is set.
var defaultTracerProvider = otel.GetTracerProvider()

// noSpan stands for a handler's span when tracing is off: ending it, or
// recording an error on it, does nothing.
var noSpan = trace.SpanFromContext(context.Background())

// tracingOn: a tracer provider other than the default or a no-op is set.
func tracingOn() bool {
	provider := otel.GetTracerProvider()
	if provider == defaultTracerProvider {
		return false
	}
	_, off := provider.(noop.TracerProvider)
	return !off
}

// handlerSpan starts the span a handler runs in: a consumer span, child
// of the producer's. Attributes are built only for a recording span, so
// a worker without an OpenTelemetry SDK pays next to nothing.
func handlerSpan(ctx context.Context, name string, job *Job) (context.Context, trace.Span) {
	if !tracingOn() {
		return ctx, noSpan
	}
	parent := ctx
	if _, traced := job.Headers["traceparent"]; traced {
		parent = traceContext.Extract(ctx, propagation.MapCarrier(job.Headers))
	}
	spanCtx, span := tracer.Start(parent, name, consumerSpan)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "raftq"),
			attribute.String("messaging.destination.name", job.Queue),
			attribute.String("messaging.message.id", job.ID),
			attribute.Int("raftq.attempt", int(job.Attempt)),
		)
	}
	return spanCtx, span
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
