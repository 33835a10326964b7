//! The REST/JSON API and the web console, served on the client port beside
//! gRPC (HTTP/1.1 and HTTP/2, with the port's TLS, limits and auth).
//!
//! Every handler turns its JSON into the gRPC request and calls the same
//! `Queue` / `QueueAdmin` service a gRPC client reaches, with the caller's
//! connection (its certificate) and `Authorization` header: validation,
//! permissions, forwarding to the shard's leader and errors are the gRPC
//! path's, never a copy of it. This module owns only the mapping
//! ([`types`], [`error`]), the console's assets and the routes' table,
//! which the OpenAPI document (`openapi.json`) must match.

mod console;
pub mod error;
mod handlers;
mod types;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method};
use axum::routing::{on, MethodFilter, MethodRouter};
use serde::de::DeserializeOwned;
use tonic::metadata::AsciiMetadataValue;

use crate::context::NodeContext;
use crate::history::History;
use crate::security::listener::ConnInfo;
use crate::security::Port;
use crate::service::{QueueAdminService, QueueService};
use error::ApiError;

/// The OpenAPI document of the routes below.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the console may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleOptions {
    /// Serve the console's pages at `/`.
    pub enabled: bool,
    /// Hide every action, whatever the signed-in principal's roles.
    pub read_only: bool,
}

pub struct Rest {
    ctx: Arc<NodeContext>,
    queue: QueueService,
    admin: QueueAdminService,
    history: Arc<History>,
    console: ConsoleOptions,
}

impl Rest {
    pub fn new(ctx: Arc<NodeContext>, history: Arc<History>, console: ConsoleOptions) -> Rest {
        Rest {
            queue: QueueService::new(ctx.clone(), Port::Client),
            admin: QueueAdminService::new(ctx.clone(), Port::Client),
            ctx,
            history,
            console,
        }
    }
}

/// The routes, and the table of them the OpenAPI test compares with the
/// document.
struct Table {
    router: axum::Router<Arc<Rest>>,
    routes: Vec<(Method, &'static str)>,
}

impl Table {
    fn add(
        mut self,
        method: Method,
        path: &'static str,
        handler: MethodRouter<Arc<Rest>>,
    ) -> Table {
        self.routes.push((method, path));
        self.router = self.router.route(path, handler);
        self
    }
}

fn table() -> Table {
    use handlers::*;
    let t = Table {
        router: axum::Router::new(),
        routes: Vec::new(),
    };
    t.add(
        Method::GET,
        "/api/openapi.json",
        on(MethodFilter::GET, openapi),
    )
    .add(Method::GET, "/api/v1/whoami", on(MethodFilter::GET, whoami))
    .add(
        Method::GET,
        "/api/v1/cluster",
        on(MethodFilter::GET, cluster),
    )
    .add(
        Method::GET,
        "/api/v1/queues",
        on(MethodFilter::GET, all_stats),
    )
    .add(
        Method::GET,
        "/api/v1/history",
        on(MethodFilter::GET, history),
    )
    .add(
        Method::GET,
        "/api/v1/queues/{queue}",
        on(MethodFilter::GET, queue_info),
    )
    .add(
        Method::PATCH,
        "/api/v1/queues/{queue}",
        on(MethodFilter::PATCH, set_queue_config),
    )
    .add(
        Method::POST,
        "/api/v1/queues/{queue}/pause",
        on(MethodFilter::POST, pause),
    )
    .add(
        Method::POST,
        "/api/v1/queues/{queue}/resume",
        on(MethodFilter::POST, resume),
    )
    .add(
        Method::POST,
        "/api/v1/queues/{queue}/purge",
        on(MethodFilter::POST, purge),
    )
    .add(
        Method::POST,
        "/api/v1/queues/{queue}/jobs",
        on(MethodFilter::POST, enqueue),
    )
    .add(
        Method::GET,
        "/api/v1/queues/{queue}/jobs",
        on(MethodFilter::GET, list_jobs),
    )
    .add(
        Method::POST,
        "/api/v1/queues/{queue}/fetch",
        on(MethodFilter::POST, fetch),
    )
    .add(
        Method::GET,
        "/api/v1/queues/{queue}/dead",
        on(MethodFilter::GET, list_dead),
    )
    .add(
        Method::POST,
        "/api/v1/queues/{queue}/dead/requeue",
        on(MethodFilter::POST, requeue_dead),
    )
    .add(
        Method::POST,
        "/api/v1/queues/{queue}/dead/purge",
        on(MethodFilter::POST, purge_dead),
    )
    .add(
        Method::GET,
        "/api/v1/jobs/{job_id}",
        on(MethodFilter::GET, get_job),
    )
    .add(
        Method::DELETE,
        "/api/v1/jobs/{job_id}",
        on(MethodFilter::DELETE, cancel_job),
    )
    .add(Method::POST, "/api/v1/ack", on(MethodFilter::POST, ack))
    .add(Method::POST, "/api/v1/nack", on(MethodFilter::POST, nack))
    .add(
        Method::POST,
        "/api/v1/extend",
        on(MethodFilter::POST, extend),
    )
}

/// The routes served, as (method, path template).
pub fn routes() -> Vec<(Method, &'static str)> {
    table().routes
}

/// The REST API, the console and a fallback that answers unknown paths:
/// gRPC's UNIMPLEMENTED for gRPC calls, 404 for the rest.
pub fn router(rest: Arc<Rest>) -> axum::Router {
    let console = rest.console;
    let mut router = table().router;
    if console.enabled {
        router = console::routes(router);
    }
    router
        .route("/api/{*rest}", axum::routing::any(handlers::no_route))
        .fallback(handlers::fallback)
        .with_state(rest)
}

/// Who is calling: the connection (its client certificate) and the
/// `Authorization` header, passed to the gRPC services as their metadata.
pub struct Caller {
    conn: Option<ConnInfo>,
    authorization: Option<AsciiMetadataValue>,
}

impl Caller {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(conn) = &self.conn {
            request.extensions_mut().insert(conn.clone());
        }
        if let Some(token) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        let authorization = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(ascii(value).ok_or_else(|| {
                ApiError::from(tonic::Status::unauthenticated(
                    "the authorization header must be `Bearer <token>` in ASCII",
                ))
            })?),
        };
        Ok(Caller {
            conn: parts.extensions.get::<ConnInfo>().cloned(),
            authorization,
        })
    }
}

fn ascii(value: &HeaderValue) -> Option<AsciiMetadataValue> {
    AsciiMetadataValue::try_from(value.as_bytes()).ok()
}

/// A JSON body, its errors naming the field (`jobs[0].priority: invalid
/// type ...`). An empty body reads as `{}`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Json<T>, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::field("body", e.body_text()))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        serde_path_to_error::deserialize(&mut de)
            .map(Json)
            .map_err(|e| field_error("body", e))
    }
}

/// A query string, its errors naming the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Query<T>, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| field_error("query", e))
    }
}

fn field_error<E: std::fmt::Display>(whole: &str, e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let field = if path == "." || path.is_empty() {
        whole.to_string()
    } else {
        path
    };
    ApiError::field(field, e.inner())
}
