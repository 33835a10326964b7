//! The operator's one error type.

/// Everything a reconcile can fail with. The variant name is also the
/// `error` label of the failure metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("invalid JobQueue: {0}")]
    InvalidResource(String),
    #[error("rendering an object: {0}")]
    Render(String),
    #[error("queue node admin call: {0}")]
    NodeAdmin(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::InvalidResource(_) => "invalid_resource",
            Error::Render(_) => "render",
            Error::NodeAdmin(_) => "node_admin",
        }
    }
}
