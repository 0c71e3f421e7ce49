//! Errors to HTTP, in one place.
//!
//! The Feast-compatible endpoints answer errors the way Feast's feature server does, so that
//! Feast's own clients (its `remote` online store) raise the matching Feast exception: the body
//! is a JSON string holding `{"module": "feast.errors", "class": ..., "message": ...}`. The
//! message always names what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_features::{FeatureError, NotFoundKind};

/// An error answered over HTTP.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The Feast exception class clients should raise.
    pub class: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            class: "FeastError",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            class: "FeastError",
            message: message.into(),
        }
    }
}

impl From<FeatureError> for ApiError {
    fn from(e: FeatureError) -> ApiError {
        let (status, class) = match &e {
            FeatureError::NotFound {
                kind: NotFoundKind::View,
                ..
            } => (StatusCode::NOT_FOUND, "FeatureViewNotFoundException"),
            FeatureError::NotFound {
                kind: NotFoundKind::Service,
                ..
            } => (StatusCode::NOT_FOUND, "FeatureServiceNotFoundException"),
            FeatureError::NotFound {
                kind: NotFoundKind::Feature,
                ..
            } => (StatusCode::NOT_FOUND, "FeastObjectNotFoundException"),
            FeatureError::BadRequest(_) | FeatureError::Invalid(_) => {
                (StatusCode::BAD_REQUEST, "FeastError")
            }
            FeatureError::Registry(r) if r.is_retryable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "FeastError")
            }
            FeatureError::Store(s) if s.is_retryable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "FeastError")
            }
            FeatureError::Registry(_)
            | FeatureError::Store(_)
            | FeatureError::Data { .. }
            | FeatureError::Io { .. }
            | FeatureError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "FeastError"),
        };
        ApiError {
            status,
            class,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        }
        let detail = serde_json::json!({
            "module": "feast.errors",
            "class": self.class,
            "message": self.message,
        })
        .to_string();
        let body = serde_json::Value::String(detail).to_string();
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// An error of the model endpoints (Open Inference Protocol and predict-by-entity): the body is
/// `{"error": "..."}`, as the protocol specifies.
#[derive(Debug)]
pub struct OipError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds) with a 429.
    pub retry_after: Option<std::time::Duration>,
}

impl OipError {
    pub fn bad_request(message: impl Into<String>) -> OipError {
        OipError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<crate::inference::InferError> for OipError {
    fn from(e: crate::inference::InferError) -> OipError {
        use crate::inference::InferError as E;
        let (status, retry_after) = match &e {
            E::NotFound(_) => (StatusCode::NOT_FOUND, None),
            // The protocol answers "not ready" with a 4xx.
            E::BadRequest(_) | E::NotReady(_) => (StatusCode::BAD_REQUEST, None),
            E::Overloaded { retry_after, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, Some(*retry_after))
            }
            E::Unavailable(_) | E::CircuitOpen(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            E::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, None),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        OipError {
            status,
            message: e.to_string(),
            retry_after,
        }
    }
}

impl From<FeatureError> for OipError {
    fn from(e: FeatureError) -> OipError {
        let ApiError {
            status, message, ..
        } = ApiError::from(e);
        OipError {
            status,
            message,
            retry_after: None,
        }
    }
}

impl From<kiln_stream::StreamError> for OipError {
    fn from(e: kiln_stream::StreamError) -> OipError {
        use kiln_stream::StreamError as E;
        let status = match &e {
            E::BadEvent { .. } => StatusCode::BAD_REQUEST,
            E::UnknownSource(_) => StatusCode::NOT_FOUND,
            // Another process holds the log: retrying later may work.
            E::Locked { .. } | E::Broker { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::Store(s) if s.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            E::Setup(_) | E::Io { .. } | E::Corrupt { .. } | E::Store(_) | E::Parquet { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        OipError {
            status,
            message: e.to_string(),
            retry_after: None,
        }
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        }
        let mut resp = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(after) = self.retry_after {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(after.as_secs().max(1)),
            );
        }
        resp
    }
}

/// The same errors over gRPC: the status codes the protocol's HTTP statuses correspond to.
impl From<crate::inference::InferError> for tonic::Status {
    fn from(e: crate::inference::InferError) -> tonic::Status {
        use crate::inference::InferError as E;
        match e {
            E::NotFound(m) => tonic::Status::not_found(m),
            E::BadRequest(m) => tonic::Status::invalid_argument(m),
            E::NotReady(m) => tonic::Status::failed_precondition(m),
            E::Overloaded {
                message,
                retry_after,
            } => {
                let mut s = tonic::Status::resource_exhausted(message);
                if let Ok(v) = retry_after.as_secs().max(1).to_string().parse() {
                    s.metadata_mut().insert("retry-after", v);
                }
                s
            }
            E::Unavailable(m) | E::CircuitOpen(m) => tonic::Status::unavailable(m),
            E::Timeout(m) => tonic::Status::deadline_exceeded(m),
            E::Internal(m) => tonic::Status::internal(m),
        }
    }
}
