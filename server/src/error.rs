//! Errors: [`ApiError`] is what a request can fail with, answered as OpenAI's error JSON with
//! the matching status code; [`ServerError`] is what setting the server up can fail with.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

/// A failed request, as the client sees it.
#[derive(Debug, Clone, Error)]
pub enum ApiError {
    /// Malformed JSON, a missing field, or a value out of range (400).
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<&'static str> },
    /// The prompt plus `max_tokens` do not fit the model's context (400).
    #[error(
        "this model's maximum context length is {context} tokens; the request needs {prompt} prompt tokens \
         plus {max_tokens} completion tokens ({}); reduce the prompt or max_tokens",
        prompt + max_tokens
    )]
    ContextLength {
        context: usize,
        prompt: usize,
        max_tokens: usize,
        param: &'static str,
    },
    /// The request names a model this server does not serve (404).
    #[error("the model `{0}` does not exist; this server serves `{1}`")]
    ModelNotFound(String, String),
    /// No such route (404) or method (405).
    #[error("{1}")]
    Route(StatusCode, String),
    /// The request queue is full (503).
    #[error("the server is busy: {0} requests are already waiting; retry later")]
    Overloaded(usize),
    /// The engine failed (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::ContextLength { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(..) => StatusCode::NOT_FOUND,
            Self::Route(status, _) => *status,
            Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` object of OpenAI's error JSON.
    pub fn body(&self) -> ErrorBody {
        let (kind, param, code) = match self {
            Self::InvalidRequest { param, .. } => ("invalid_request_error", *param, None),
            Self::ContextLength { param, .. } => {
                ("invalid_request_error", Some(*param), Some("context_length_exceeded"))
            }
            Self::ModelNotFound(..) => ("invalid_request_error", Some("model"), Some("model_not_found")),
            Self::Route(..) => ("invalid_request_error", None, None),
            Self::Overloaded(_) => ("server_error", None, Some("overloaded")),
            Self::Internal(_) => ("server_error", None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        }
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// OpenAI's error object; `param` and `code` are `null` when they do not apply.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request rejected");
        }
        (status, Json(self.body())).into_response()
    }
}

/// Why the server could not be set up or run.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("the model has no tokenizer (tokenizer.json or GGUF metadata); the server needs one")]
    NoTokenizer,
    #[error("cannot start the engine thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}
