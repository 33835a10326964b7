//! A request over a size limit is refused with `RESOURCE_EXHAUSTED`, the
//! code for a limit a caller exceeded, where tonic says `OUT_OF_RANGE` (a
//! code that means "past the end", and that clients treat as a bug in
//! their own request rather than a limit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http::{HeaderMap, HeaderValue, Request, Response};

/// Wraps every service of a server.
#[derive(Clone, Copy, Default)]
pub struct OverLimitLayer;

impl<S> tower_layer::Layer<S> for OverLimitLayer {
    type Service = OverLimit<S>;

    fn layer(&self, inner: S) -> OverLimit<S> {
        OverLimit(inner)
    }
}

#[derive(Clone)]
pub struct OverLimit<S>(S);

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for OverLimit<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            rewrite(response.headers_mut());
            Ok(response)
        })
    }
}

/// A trailers-only answer (how tonic refuses a request it cannot decode)
/// with OUT_OF_RANGE for a message over the size limit becomes
/// RESOURCE_EXHAUSTED.
fn rewrite(headers: &mut HeaderMap) {
    let out_of_range = headers.get("grpc-status").map(HeaderValue::as_bytes) == Some(b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_size_limits_change_code() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("Error,%20decoded%20message%20length%20too%20large"),
        );
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "8");
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("offset%20past%20end"),
        );
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "11");
    }
}
