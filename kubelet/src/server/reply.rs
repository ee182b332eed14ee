//! What handlers answer with: the response body type, the errors every handler
//! returns (each knows its status code), and plain-text and JSON responses.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

/// Every response body: whole (errors, JSON, metrics) or streamed (logs).
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Why a request failed, with the status code upstream answers it with. The message
/// is the body, in plain text, as go-restful's WriteError writes it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A well-formed query whose values are not allowed together (upstream validates
    /// PodLogOptions after decoding and answers 422).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A failed CRI call, mapped as upstream's streaming.WriteError maps gRPC codes
    /// (NotFound → 404, ResourceExhausted → 429, the rest → 500); InvalidArgument is a
    /// 400 here because it is the caller's input the runtime refused.
    pub fn from_cri(doing: &str, status: &tonic::Status) -> ApiError {
        let msg = format!("{doing}: {}", status.message());
        match status.code() {
            tonic::Code::NotFound => ApiError::NotFound(msg),
            tonic::Code::ResourceExhausted => ApiError::TooManyRequests(msg),
            tonic::Code::InvalidArgument => ApiError::BadRequest(msg),
            _ => ApiError::Internal(msg),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut resp = text(status, self.to_string());
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Upstream's streaming.WriteError asks the client to come back later.
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text response, as Go's http.Error writes them.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(full(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A 200 JSON response.
pub fn json(value: &impl Serialize) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::Internal(format!("encode the response: {e}")))?;
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_not_found_is_a_404_and_unavailable_a_500() {
        let e = ApiError::from_cri("exec in \"c\"", &tonic::Status::not_found("no such"));
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.to_string(), "exec in \"c\": no such");
        let e = ApiError::from_cri("exec", &tonic::Status::unavailable("down"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
