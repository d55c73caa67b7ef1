//! What every call reports: a `tracing` span per call, recording the
//! operation, the table, how it ended and how long it took, and never its
//! arguments. Every facade (the store's repositories, sessions) runs its
//! calls through [`traced`].

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use crate::error::{Error, Result};

/// Runs `fut` in a `dreamnet_db` span recording the operation, the table,
/// how long it took and how it ended. Never records arguments, so no secret
/// reaches a log.
pub(crate) async fn traced<T>(
    op: &'static str,
    table: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let span = tracing::debug_span!(
        "dreamnet_db",
        op,
        table,
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty
    );
    let start = Instant::now();
    let result = fut.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => error_kind(e),
    };
    span.record("outcome", outcome);
    span.record("duration_us", start.elapsed().as_micros() as u64);
    result
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "not_found",
        Error::Conflict { .. } => "conflict",
        Error::InvalidInput { .. } => "invalid_input",
        Error::Unauthorized(_) => "unauthorized",
        Error::PoolTimeout { .. } => "pool_timeout",
        Error::Unavailable { .. } => "unavailable",
        Error::Config(_) => "config",
        Error::UploadInterrupted { .. } => "upload_interrupted",
        Error::Database { .. } => "database_error",
    }
}
