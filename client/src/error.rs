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

    /// False for failures that repeating the same request cannot fix (bad
    /// input, unknown job, stale lease); true for the rest (no leader yet, a
    /// node restarting, a broken connection).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::BadAddress { .. } | Error::Invalid(_) => false,
            Error::Status(s) => !matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::FailedPrecondition
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::Unimplemented
                    | Code::OutOfRange
                    | Code::AlreadyExists
            ),
        }
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
