use tonic::Code;

/// What went wrong talking to raftq.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("invalid address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    /// The server refused or failed the request.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl Error {
    /// The gRPC code, when the server answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status(s) => Some(s.code()),
            _ => None,
        }
    }

    /// True for failures a retry may fix (no leader yet, node restarting).
    pub fn is_retryable(&self) -> bool {
        matches!(self.code(), Some(Code::Unavailable) | Some(Code::Unknown))
            || matches!(self, Error::Connect { .. })
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::FailedPrecondition => "failed precondition",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Internal => "internal error",
        Code::Unimplemented => "unimplemented",
        _ => "error",
    }
}
