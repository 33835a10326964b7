// W3C trace context across the queue: producers write the active span's
// `traceparent` into a job's headers; workers run each handler in a span
// that is its child. OpenTelemetry's API only: without an SDK registered
// there is no active span and nothing is written.
import {
  context,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Context,
  type Span,
} from "@opentelemetry/api";

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Adds the active span's `traceparent` (and `tracestate`) unless set. */
export function inject(headers: Record<string, string>): void {
  if ("traceparent" in headers) return;
  const span = trace.getSpanContext(context.active());
  if (span === undefined || !trace.isSpanContextValid(span)) return;
  const flags = (span.traceFlags & TraceFlags.SAMPLED).toString(16).padStart(2, "0");
  headers.traceparent = `00-${span.traceId}-${span.spanId}-${flags}`;
  const state = span.traceState?.serialize();
  if (state) headers.tracestate = state;
}

/** The producer's span context from a job's headers, as a parent. */
export function extract(headers: Record<string, string>): Context {
  const match = TRACEPARENT.exec(headers.traceparent ?? "");
  if (match === null) return ROOT_CONTEXT;
  const [, traceId, spanId, flags] = match;
  const parent = { traceId, spanId, traceFlags: parseInt(flags, 16), isRemote: true };
  if (!trace.isSpanContextValid(parent)) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, parent);
}

/** Runs `fn` in a consumer span, child of the producer's. */
export async function inHandlerSpan<T>(
  queue: string,
  jobId: string,
  attempt: number,
  headers: Record<string, string>,
  fn: () => Promise<T>,
): Promise<T> {
  const tracer = trace.getTracer("raftq");
  const attributes = {
    "messaging.system": "raftq",
    "messaging.destination.name": queue,
    "messaging.message.id": jobId,
    "raftq.attempt": attempt,
  };
  return tracer.startActiveSpan(
    `${queue} process`,
    { kind: SpanKind.CONSUMER, attributes },
    extract(headers),
    async (span: Span) => {
      try {
        return await fn();
      } catch (error) {
        span.recordException(error instanceof Error ? error : String(error));
        span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}
