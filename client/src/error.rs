use tonic::Code;

/// What went wrong talking to raftq.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {}", connect_reason(.source, *.tls))]
    Connect {
        addr: String,
        /// Whether TLS was on.
        tls: bool,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("invalid address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    /// The server refused or failed the request.
    #[error("{}: {}{}", code_name(.0.code()), .0.message(), status_hint(.0))]
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

/// An error and its sources, one after another: tonic's own message is
/// only "transport error".
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// What a status made from a broken connection (not sent by the server)
/// most likely means.
fn status_hint(status: &tonic::Status) -> String {
    connection_hint(status)
        .map(|h| format!(" ({h})"))
        .unwrap_or_default()
}

/// For a status that a broken connection made (not one the server sent):
/// what it most likely means, and the transport's own words.
pub fn connection_hint(status: &tonic::Status) -> Option<String> {
    if !matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::Unavailable | Code::Cancelled
    ) {
        return None;
    }
    let mut detail = status.message().to_string();
    if let Some(source) = std::error::Error::source(status) {
        detail = format!("{detail}: {}", chain(source));
    }
    let hint = if detail.contains("CertificateRequired") || detail.contains("certificate required")
    {
        "the server requires a client certificate (--client-cert / --client-key); a peer port always does"
    } else if detail.contains("h2 protocol error")
        || detail.contains("transport error")
        || detail.contains("canceled")
    {
        "the connection broke: the server may require TLS (--tls), or a client certificate (a peer port always does)"
    } else {
        return None;
    };
    Some(format!("{hint}; {detail}"))
}

/// Why a connection failed, in terms a person can act on.
fn connect_reason(e: &tonic::transport::Error, tls: bool) -> String {
    let detail = chain(e);
    let hint = if detail.contains("UnknownIssuer") || detail.contains("invalid peer certificate") {
        Some("the server's certificate is not trusted: pass the CA that signed it (--ca-cert)")
    } else if detail.contains("CertificateRequired") || detail.contains("certificate required") {
        Some("the server requires a client certificate (--client-cert / --client-key)")
    } else if tls && (detail.contains("InvalidContentType") || detail.contains("corrupt message")) {
        Some("the server does not speak TLS here: connect without --tls, or to its TLS port")
    } else if !tls
        && (detail.contains("connection closed")
            || detail.contains("reset by peer")
            || detail.contains("broken pipe")
            || detail.contains("frame with invalid size"))
    {
        Some("the server closed the connection: it may require TLS (--tls)")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint} ({detail})"),
        None => detail,
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
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        _ => "error",
    }
}
