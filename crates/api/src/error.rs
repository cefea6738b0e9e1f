use crate::json::error_page;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pgherd_dcs::DcsError;
use std::net::SocketAddr;
use thiserror::Error;

/// The REST API server stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("REST API listener {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    pub(crate) fn io(addr: Option<SocketAddr>, source: std::io::Error) -> ServeError {
        ServeError::Io {
            addr: addr.map_or_else(|| "(unknown address)".to_string(), |a| a.to_string()),
            source,
        }
    }
}

/// Why a GET endpoint could not answer; each maps to a JSON error response.
#[derive(Debug, Error)]
pub(crate) enum EndpointError {
    #[error("cannot read the cluster from the DCS: {0}")]
    Dcs(#[from] DcsError),
    #[error("the DCS has no config key")]
    NoConfig,
    #[error("no failsafe state is known")]
    NoFailsafe,
}

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        // Patroni answers both "absent" cases with 502; a DCS we cannot reach is "try later".
        let status = match self {
            EndpointError::Dcs(_) => StatusCode::SERVICE_UNAVAILABLE,
            EndpointError::NoConfig | EndpointError::NoFailsafe => StatusCode::BAD_GATEWAY,
        };
        tracing::info!("REST API: answering {status}: {self}");
        error_page(status, None)
    }
}
