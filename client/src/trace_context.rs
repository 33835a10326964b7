//! W3C trace context across the queue, with OpenTelemetry's API only:
//! producers write the current context's `traceparent` (and `tracestate`)
//! into a job's headers; workers run each handler in a consumer span that
//! is its child. Without an OpenTelemetry SDK installed nothing is written
//! and the spans are no-ops.

use std::collections::HashMap;
use std::str::FromStr;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{global, Context, KeyValue};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Adds the current context's span as `traceparent` unless the caller set
/// one.
pub(crate) fn inject(headers: &mut HashMap<String, String>) {
    if headers.contains_key(TRACEPARENT) {
        return;
    }
    let cx = Context::current();
    let span = cx.span();
    let span = span.span_context();
    if !span.is_valid() {
        return;
    }
    headers.insert(
        TRACEPARENT.to_string(),
        format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags() & TraceFlags::SAMPLED
        ),
    );
    let state = span.trace_state().header();
    if !state.is_empty() {
        headers.insert(TRACESTATE.to_string(), state);
    }
}

/// The producer's span from a job's headers, as a remote parent.
fn extract(headers: &HashMap<String, String>) -> Option<SpanContext> {
    let mut parts = headers.get(TRACEPARENT)?.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace_id.len() != 32 || span_id.len() != 16 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = headers
        .get(TRACESTATE)
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let span = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    );
    span.is_valid().then_some(span)
}

/// The context a handler runs in: a new consumer span, child of the
/// producer's span when the job carries one.
pub(crate) fn handler_context(
    queue: &str,
    job_id: &str,
    attempt: u32,
    headers: &HashMap<String, String>,
) -> Context {
    let parent = match extract(headers) {
        Some(span) => Context::new().with_remote_span_context(span),
        None => Context::new(),
    };
    let tracer = global::tracer("raftq");
    let span = tracer
        .span_builder(format!("{queue} process"))
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("messaging.system", "raftq"),
            KeyValue::new("messaging.destination.name", queue.to_string()),
            KeyValue::new("messaging.message.id", job_id.to_string()),
            KeyValue::new("raftq.attempt", i64::from(attempt)),
        ])
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_bad_ones_are_ignored() {
        let headers = HashMap::from([
            (
                TRACEPARENT.to_string(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            ),
            (TRACESTATE.to_string(), "vendor=value".to_string()),
        ]);
        let span = extract(&headers).expect("a valid traceparent");
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.is_sampled() && span.is_remote());
        assert_eq!(span.trace_state().header(), "vendor=value");
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let headers = HashMap::from([(TRACEPARENT.to_string(), bad.to_string())]);
            assert!(extract(&headers).is_none(), "{bad:?} was accepted");
        }
    }
}
