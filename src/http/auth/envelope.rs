//! 401, 403 and 429 in each control-plane family's own error envelope, plus the headers every
//! family gets: `WWW-Authenticate: Bearer ...` (RFC 6750) and `Retry-After`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::keys::Rejection;
use super::Family;
use crate::error::{Error, Kind, Origin};
use crate::http::common::{text_header, ERROR};

/// Why the auth layer answers instead of the route.
#[derive(Debug)]
pub enum Denial {
    Unauthorized(Rejection),
    Forbidden { required: &'static [&'static str] },
    TooManyRequests { retry_after: u64 },
}

impl Denial {
    fn status(&self) -> StatusCode {
        match self {
            Denial::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Denial::Forbidden { .. } => StatusCode::FORBIDDEN,
            Denial::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn message(&self) -> String {
        match self {
            Denial::Unauthorized(why) => why.describe(),
            Denial::Forbidden { required } => format!(
                "the token lacks the scope for this operation (needs one of: {})",
                required.join(", ")
            ),
            Denial::TooManyRequests { retry_after } => {
                format!("too many requests from this client: retry after {retry_after} s")
            }
        }
    }
}

/// The denial in `family`'s envelope.
pub fn render(family: Family, denial: &Denial) -> Response {
    let mut response = match family {
        Family::Dr => acronis(denial),
        Family::Administration => ccs(denial),
        Family::Backbeat => backbeat(denial),
        Family::Rucio => rucio(denial),
        Family::Alfresco => alfresco(denial),
    };
    add_protocol_headers(&mut response, denial);
    response
}

/// `WWW-Authenticate` on 401 and 403 (RFC 6750 §3), `Retry-After` on 429.
fn add_protocol_headers(response: &mut Response, denial: &Denial) {
    let headers = response.headers_mut();
    let challenge = match denial {
        Denial::Unauthorized(Rejection::Missing) => r#"Bearer realm="mirrorgate""#.to_owned(),
        Denial::Unauthorized(why) => format!(
            r#"Bearer realm="mirrorgate", error="invalid_token", error_description="{}""#,
            why.describe()
        ),
        Denial::Forbidden { required } => format!(
            r#"Bearer realm="mirrorgate", error="insufficient_scope", scope="{}""#,
            required.join(" ")
        ),
        Denial::TooManyRequests { retry_after } => {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            return;
        }
    };
    headers.insert(WWW_AUTHENTICATE, text_header(&challenge));
}

/// Acronis DR: `{"error":{code,context,debug:{msg,additional},domain}}`, codes and messages
/// as in the seed.
fn acronis(denial: &Denial) -> Response {
    let (code, msg, context) = match denial {
        Denial::Unauthorized(_) => (
            "Unauthorized",
            "Authorization header is invalid.",
            json!({}),
        ),
        Denial::Forbidden { .. } => (
            "MethodNotAllowed",
            "This method is not allowed for this user account.",
            json!({}),
        ),
        Denial::TooManyRequests { retry_after } => (
            "TooManyRequests",
            "Service failed to process the request due to a high load at the moment. Please try \
             again after number of seconds that is indicated in the \"context.retry_after\" field \
             or in the \"Retry-After\" response header.",
            json!({ "retry_after": retry_after }),
        ),
    };
    let body = json!({ "error": {
        "code": code,
        "context": context,
        "debug": { "msg": msg, "additional": [denial.message()] },
        "domain": "DisasterRecovery",
    }});
    (denial.status(), Json(body)).into_response()
}

/// CCS administration: the CCS rendering of [`Error`] (status, `x-clonecloudstore-error`).
fn ccs(denial: &Denial) -> Response {
    let kind = match denial {
        Denial::Unauthorized(_) => Kind::Unauthorized,
        Denial::Forbidden { .. } => Kind::Forbidden,
        Denial::TooManyRequests { .. } => Kind::TooManyRequests,
    };
    Error::new(kind, Origin::Client, denial.message()).into_response()
}

/// Backbeat (Arsenal error names): `{"code","description",<Name>:true}`.
fn backbeat(denial: &Denial) -> Response {
    let name = match denial {
        Denial::Unauthorized(Rejection::Missing) => "MissingSecurityHeader",
        Denial::Unauthorized(Rejection::Expired) => "ExpiredToken",
        Denial::Unauthorized(_) => "InvalidToken",
        Denial::Forbidden { .. } => "AccessDenied",
        Denial::TooManyRequests { .. } => "TooManyRequests",
    };
    let description = denial.message();
    let mut body = json!({ "code": denial.status().as_u16(), "description": description });
    body[name] = Value::Bool(true);
    let mut response = (denial.status(), Json(body)).into_response();
    response
        .headers_mut()
        .insert(ERROR, text_header(&description));
    response
}

/// Rucio: `{"ExceptionClass","ExceptionMessage"}`, repeated as headers.
fn rucio(denial: &Denial) -> Response {
    let class = match denial {
        Denial::Unauthorized(_) => "CannotAuthenticate",
        Denial::Forbidden { .. } => "AccessDenied",
        Denial::TooManyRequests { .. } => "TooManyRequests",
    };
    let message = denial.message();
    let body = json!({ "ExceptionClass": class, "ExceptionMessage": message });
    let mut response = (denial.status(), Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("exceptionclass"),
        HeaderValue::from_static(class),
    );
    headers.insert(
        HeaderName::from_static("exceptionmessage"),
        text_header(&rucio_header_message(&message)),
    );
    headers.insert(ERROR, text_header(&message));
    response
}

/// Rucio cuts its `ExceptionMessage` header at 125 characters.
fn rucio_header_message(message: &str) -> String {
    let mut short: String = message.chars().take(125).collect();
    if short.len() < message.len() {
        short.push_str("...");
    }
    short
}

/// Alfresco REST: `{"error":{errorKey,statusCode,briefSummary,stackTrace,descriptionURL}}`.
fn alfresco(denial: &Denial) -> Response {
    let key = match denial {
        Denial::Forbidden { .. } => "framework.exception.PermissionDenied",
        _ => "framework.exception.ApiDefault",
    };
    let body = json!({ "error": {
        "errorKey": key,
        "statusCode": denial.status().as_u16(),
        "briefSummary": denial.message(),
        "stackTrace": "For security reasons the stack trace is no longer displayed, but the \
                       property is kept for previous versions",
        "descriptionURL": "https://api-explorer.alfresco.com",
    }});
    (denial.status(), Json(body)).into_response()
}
