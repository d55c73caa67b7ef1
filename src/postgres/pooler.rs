//! Finding out, at start, whether the URL leads through a pooler that
//! shares server connections between clients (PgBouncer in transaction or
//! statement mode), and whether a prepared statement survives a change of
//! server connection there.
//!
//! Two client connections, A and B. A prepares `SELECT pg_backend_pid()`
//! and runs it: the server connection that answered is now idle again. B
//! opens a transaction and asks for its backend's pid. Directly, or
//! through a pooler in session mode, B's backend is never A's. Through a
//! transaction pooler, B is usually handed the server connection A just
//! gave back (PgBouncer reuses the most recently used one); then, while B
//! holds it, A runs its statement again, necessarily on another server
//! connection: PgBouncer before 1.21 (or with `max_prepared_statements =
//! 0`) answers that the statement does not exist; 1.21 and later prepare
//! it there transparently. A few rounds are tried, in case another client
//! takes the server connection in between.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::connect::ConnectSpec;

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pooling {
    /// Each client connection has a server connection of its own:
    /// directly connected, or a pooler in session mode.
    Session,
    /// Server connections are shared between clients; prepared statements
    /// survive a change of server connection (PgBouncer 1.21 or later).
    TransactionKeepsStatements,
    /// Server connections are shared between clients and a prepared
    /// statement is lost when the next statement lands on another one.
    TransactionLosesStatements,
}

impl Pooling {
    /// Whether server connections are shared between clients.
    pub(crate) fn shared(self) -> bool {
        self != Pooling::Session
    }
}

const ROUNDS: usize = 5;

fn lost(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME)
}

async fn pid_in_transaction(b: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
    let mut pid = None;
    for m in b.simple_query("BEGIN; SELECT pg_backend_pid()").await? {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            pid = r.get(0).and_then(|s| s.parse().ok());
        }
    }
    Ok(pid)
}

/// Probes the server behind `spec` (see the module's documentation).
pub(crate) async fn probe(spec: &ConnectSpec) -> Result<Pooling, crate::error::BoxError> {
    let a = spec.client().await?;
    let b = spec.client().await?;
    let stmt = a.prepare("SELECT pg_backend_pid()").await?;
    for _ in 0..ROUNDS {
        let pa: i32 = match a.query_one(&stmt, &[]).await {
            Ok(r) => r.get(0),
            Err(e) if lost(&e) => return Ok(Pooling::TransactionLosesStatements),
            Err(e) => return Err(e.into()),
        };
        let pb = pid_in_transaction(&b).await?;
        if pb == Some(pa) {
            let again = a.query_one(&stmt, &[]).await;
            b.batch_execute("COMMIT").await?;
            return match again {
                Ok(_) => Ok(Pooling::TransactionKeepsStatements),
                Err(e) if lost(&e) => Ok(Pooling::TransactionLosesStatements),
                Err(e) => Err(e.into()),
            };
        }
        b.batch_execute("COMMIT").await?;
    }
    Ok(Pooling::Session)
}
