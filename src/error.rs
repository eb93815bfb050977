//! The one place where an error becomes an HTTP status and body, in the two
//! wire shapes of CONTRACT: OAuth errors at the token endpoint (RFC 6749
//! §5.2) and Core-style `{code, message}` everywhere else. A client never
//! sees library error text; internal failures are logged with their cause.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::service::{GrantError, ServiceError};

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Errors outside the token endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid access token")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    #[error("too many requests")]
    TooManyRequests(u64),
    #[error("request headers too large (limit {0} bytes)")]
    HeadersTooLarge(usize),
    #[error("service temporarily unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

/// Core's error shape, for every route but the token endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code, `STS_0001` … `STS_0011`.
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// The stable code clients can match on; unit-tested below.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "STS_0001",
            Self::Unauthenticated => "STS_0002",
            Self::Forbidden(_) => "STS_0003",
            Self::NotFound(_) => "STS_0004",
            Self::Conflict(_) => "STS_0005",
            Self::PayloadTooLarge(_) => "STS_0006",
            Self::Unavailable => "STS_0007",
            Self::Internal => "STS_0008",
            Self::MethodNotAllowed => "STS_0009",
            Self::TooManyRequests(_) => "STS_0010",
            Self::HeadersTooLarge(_) => "STS_0011",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = self.to_string();
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthenticated => {
                response.insert_header((header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#));
            }
            Self::Unavailable => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            Self::TooManyRequests(secs) => {
                response.insert_header((header::RETRY_AFTER, *secs));
            }
            _ => {}
        }
        response.json(ErrorBody { code: self.code(), message })
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid(message) => Self::BadRequest(message),
            ServiceError::NotFound(what) => Self::NotFound(what),
            ServiceError::Conflict(message) => Self::Conflict(message),
            ServiceError::Forbidden(message) => Self::Forbidden(message),
            ServiceError::CallerInactive => Self::Unauthenticated,
            ServiceError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "database unavailable");
                Self::Unavailable
            }
            ServiceError::Busy => Self::Unavailable,
            ServiceError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Self::Internal
            }
        }
    }
}

/// Errors at the token endpoint, RFC 6749 §5.2.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    retry_after: Option<u64>,
}

/// RFC 6749 §5.2 error body of the token endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OAuthBody {
    pub error: &'static str,
    pub error_description: &'static str,
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl OAuthError {
    pub fn invalid_request(description: &'static str) -> Self {
        Self { status: StatusCode::BAD_REQUEST, error: "invalid_request", description, retry_after: None }
    }

    /// The body exceeded the token endpoint's limit (checked before parsing).
    pub fn payload_too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "invalid_request",
            description: "request body too large",
            retry_after: None,
        }
    }

    pub fn error_code(&self) -> &'static str {
        self.error
    }
}

impl From<GrantError> for OAuthError {
    fn from(error: GrantError) -> Self {
        let (status, code, description) = match &error {
            GrantError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", *d),
            // One description for every refused grant: the answer must not
            // tell an unknown user from a wrong password or a locked account.
            GrantError::InvalidGrant(_) => {
                (StatusCode::BAD_REQUEST, "invalid_grant", "the grant is invalid, expired or revoked")
            }
            GrantError::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed"),
            GrantError::UnsupportedGrantType => {
                (StatusCode::BAD_REQUEST, "unsupported_grant_type", "the grant type is not supported")
            }
            GrantError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "token endpoint unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again later")
            }
            GrantError::TooManyRequests(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "slow_down", "too many failed attempts; retry later")
            }
            GrantError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again later"),
            GrantError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error at the token endpoint");
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            }
        };
        let retry_after = match error {
            GrantError::TooManyRequests(secs) => Some(secs),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_SECS),
            _ => None,
        };
        Self { status, error: code, description, retry_after }
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if self.status == StatusCode::UNAUTHORIZED {
            // Client authentication is HTTP Basic (or the body): the
            // challenge names the scheme a client can answer with.
            response.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="sts""#));
        }
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs));
        }
        response.json(OAuthBody { error: self.error, error_description: self.description })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_error_has_its_status_and_a_distinct_code() {
        let table = [
            (ApiError::BadRequest("x".into()), 400, "STS_0001"),
            (ApiError::Unauthenticated, 401, "STS_0002"),
            (ApiError::Forbidden("no".into()), 403, "STS_0003"),
            (ApiError::NotFound("organisation"), 404, "STS_0004"),
            (ApiError::Conflict("x".into()), 409, "STS_0005"),
            (ApiError::PayloadTooLarge(1), 413, "STS_0006"),
            (ApiError::Unavailable, 503, "STS_0007"),
            (ApiError::Internal, 500, "STS_0008"),
            (ApiError::MethodNotAllowed, 405, "STS_0009"),
            (ApiError::TooManyRequests(1), 429, "STS_0010"),
            (ApiError::HeadersTooLarge(1), 431, "STS_0011"),
        ];
        for (error, status, code) in table {
            assert_eq!(error.status_code().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code, "{error:?}");
        }
    }

    #[test]
    fn grant_errors_map_to_rfc_6749_codes() {
        let table = [
            (GrantError::InvalidRequest("x"), 400, "invalid_request"),
            (GrantError::InvalidGrant("bad password".into()), 400, "invalid_grant"),
            (GrantError::InvalidClient, 401, "invalid_client"),
            (GrantError::UnsupportedGrantType, 400, "unsupported_grant_type"),
            (GrantError::Busy, 503, "temporarily_unavailable"),
        ];
        for (error, status, code) in table {
            let oauth = OAuthError::from(error);
            assert_eq!(oauth.status_code().as_u16(), status);
            assert_eq!(oauth.error_code(), code);
        }
    }

    #[test]
    fn internal_errors_never_show_their_cause() {
        let error = ApiError::from(ServiceError::Internal(anyhow::anyhow!("relation users does not exist")));
        assert_eq!(error.to_string(), "internal error");
    }
}
