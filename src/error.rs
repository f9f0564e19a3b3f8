//! The one error type. Each error knows where it came from (client, upstream site, storage,
//! internal) and what it means; its HTTP status is decided here and nowhere else. Each API family
//! renders it in its own envelope (see `http::envelope`).

use http::StatusCode;

/// Who is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Storage,
    Internal,
}

/// What went wrong, in CCS terms (NotAllowed 403, NotExist 404, NotAcceptable 406,
/// AlreadyExist 409, Deleted 410, Operation 500) plus what the other families need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    NotAcceptable,
    Conflict,
    Gone,
    /// The target is not in the state the request names (a version to delete): 412.
    PreconditionFailed,
    PayloadTooLarge,
    /// A `Range` no byte of the object satisfies: 416.
    RangeNotSatisfiable,
    Locked,
    TooManyRequests,
    Internal,
    BadGateway,
    Unavailable,
    GatewayTimeout,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub origin: Origin,
    pub message: String,
    /// Seconds after which the client may try again (rendered as `Retry-After`).
    pub retry_after: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, origin: Origin, message: impl Into<String>) -> Self {
        Self {
            kind,
            origin,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 429: the client asked too often; it may try again after `retry_after` seconds.
    pub fn too_many_requests(m: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(Kind::TooManyRequests, Origin::Client, m)
        }
    }
    /// 413: the body is larger than this site accepts.
    pub fn payload_too_large(m: impl Into<String>) -> Self {
        Self::new(Kind::PayloadTooLarge, Origin::Client, m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, Origin::Client, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(Kind::Unauthorized, Origin::Client, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, Origin::Client, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, Origin::Client, m)
    }
    pub fn not_acceptable(m: impl Into<String>) -> Self {
        Self::new(Kind::NotAcceptable, Origin::Client, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, Origin::Client, m)
    }
    pub fn gone(m: impl Into<String>) -> Self {
        Self::new(Kind::Gone, Origin::Client, m)
    }
    pub fn precondition_failed(m: impl Into<String>) -> Self {
        Self::new(Kind::PreconditionFailed, Origin::Client, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(Kind::Internal, Origin::Internal, m)
    }
    pub fn storage(m: impl Into<String>) -> Self {
        Self::new(Kind::Internal, Origin::Storage, m)
    }
    pub fn upstream(kind: Kind, m: impl Into<String>) -> Self {
        Self::new(kind, Origin::Upstream, m)
    }

    /// The one place where meaning becomes an HTTP status.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Gone => StatusCode::GONE,
            Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Kind::Locked => StatusCode::LOCKED,
            Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::BadGateway => StatusCode::BAD_GATEWAY,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whether retrying the same operation later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            Kind::Internal
                | Kind::BadGateway
                | Kind::Unavailable
                | Kind::GatewayTimeout
                | Kind::TooManyRequests
        )
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::new(
            Kind::Internal,
            Origin::Internal,
            format!("metadata store: {e}"),
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::storage(format!("storage i/o: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::bad_request(format!("invalid JSON: {e}"))
    }
}
