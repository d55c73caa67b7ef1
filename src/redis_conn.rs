//! The one way this crate opens Redis: a lazy [`ConnectionManager`] that
//! reconnects by itself, with every call bounded.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Backend, Error, Result};

/// A connection manager for `url` whose calls give up after `timeout`.
/// Lazy: nothing connects until the first call, so a service starts (and
/// falls back as documented) while Redis is down. Errors never quote the
/// URL, which may hold a password.
pub(crate) fn manager(url: &str, timeout: Duration) -> Result<ConnectionManager> {
    let client = ::redis::Client::open(url).map_err(|_| {
        Error::Config(
            "the Redis URL is not valid (expected redis://host[:port][/db] or rediss://…)".into(),
        )
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| Error::Unavailable {
        backend: Backend::Redis,
        source: Box::new(e),
    })
}
