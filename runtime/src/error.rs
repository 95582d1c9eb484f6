//! Typed errors of the serving runtime and their OpenAI-shaped JSON bodies.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to an HTTP client. Every variant becomes an OpenAI-shaped body:
/// `{"error": {"message": …, "type": …, "param": null, "code": …}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body is not valid JSON or misses a required field.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than the configured maximum.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured maximum, in bytes.
        limit: usize,
    },
    /// The request names a model this server does not serve.
    #[error("the model `{requested}` does not exist; this server serves `{served}`")]
    ModelNotFound {
        /// The model the request asked for.
        requested: String,
        /// The model this server serves.
        served: String,
    },
    /// The prompt does not fit into the model's context.
    #[error("{0}")]
    PromptTooLong(String),
    /// More requests wait than the configured maximum.
    #[error("server is overloaded: {queued} requests are already waiting (max {max}); retry later")]
    Overloaded {
        /// Requests waiting now.
        queued: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A request waited for a generation slot longer than the queue timeout.
    #[error(
        "no generation slot became free within {seconds} s while all {running} were busy; retry \
         later (the wait is bounded by --queue-timeout-seconds, the slots by --max-running)"
    )]
    QueueTimeout {
        /// The queue timeout, in seconds.
        seconds: f64,
        /// The slots, all busy.
        running: usize,
    },
    /// A request asks for more new tokens than the server's cap.
    #[error(
        "`{field}` is {asked}, above this server's cap of {cap} new tokens (--max-tokens); ask \
         for at most {cap}"
    )]
    TooManyTokens {
        /// The request field that asked (`max_tokens`, `max_new_tokens`, ...).
        field: &'static str,
        /// What it asked for.
        asked: usize,
        /// The cap.
        cap: usize,
    },
    /// The model is still loading (or failed to load).
    #[error("{0}")]
    NotReady(String),
    /// The server is shutting down and takes no new work.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The engine failed while serving the request.
    #[error("inference failed: {0}")]
    Engine(String),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::PromptTooLong(_) | Self::TooManyTokens { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            Self::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady(_) | Self::ShuttingDown | Self::QueueTimeout { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::BadRequest(_) => ("invalid_request_error", "invalid_request"),
            Self::PromptTooLong(_) => ("invalid_request_error", "context_length_exceeded"),
            Self::TooManyTokens { .. } => ("invalid_request_error", "max_tokens_exceeded"),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", "payload_too_large"),
            Self::ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
            Self::Overloaded { .. } => ("rate_limit_error", "too_many_requests"),
            Self::NotReady(_) => ("service_unavailable", "model_not_ready"),
            Self::QueueTimeout { .. } => ("service_unavailable", "queue_timeout"),
            Self::ShuttingDown => ("service_unavailable", "shutting_down"),
            Self::Engine(_) => ("server_error", "internal_error"),
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        json!({"error": {"message": self.to_string(), "type": kind, "param": null, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if matches!(
            self,
            Self::Overloaded { .. } | Self::QueueTimeout { .. } | Self::NotReady(_)
        ) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "invalid_request"),
            (
                ApiError::PayloadTooLarge { limit: 5 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::Overloaded { queued: 2, max: 2 },
                429,
                "too_many_requests",
            ),
            (ApiError::NotReady("loading".into()), 503, "model_not_ready"),
            (
                ApiError::QueueTimeout {
                    seconds: 30.0,
                    running: 16,
                },
                503,
                "queue_timeout",
            ),
            (
                ApiError::TooManyTokens {
                    field: "max_tokens",
                    asked: 9,
                    cap: 8,
                },
                400,
                "max_tokens_exceeded",
            ),
            (ApiError::Engine("boom".into()), 500, "internal_error"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(err.body()["error"]["code"], code);
            assert!(err.body()["error"]["message"].is_string());
        }
    }
}
