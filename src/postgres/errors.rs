//! From diesel's and bb8's errors to the crate's [`Error`].

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use uuid::Uuid;

use crate::error::{Backend, Entity, Error, Field};

/// The driver error as an [`Error`], with no context of which record it was
/// about.
impl From<DieselError> for Error {
    fn from(e: DieselError) -> Self {
        classify(e, None)
    }
}

/// The driver error as an [`Error`]; a foreign-key violation on `user_id`
/// becomes `NotFound` for the user named in the server's detail, or
/// `user` when the detail names none.
pub(super) fn classify(e: DieselError, user: Option<Uuid>) -> Error {
    match &e {
        DieselError::DatabaseError(kind, info) => {
            let constraint = info.constraint_name().unwrap_or_default();
            match kind {
                DatabaseErrorKind::UniqueViolation if constraint.contains("email") => {
                    return Error::Conflict {
                        field: Field::Email,
                    };
                }
                DatabaseErrorKind::UniqueViolation if constraint.contains("wallet") => {
                    return Error::Conflict {
                        field: Field::WalletAddress,
                    };
                }
                DatabaseErrorKind::ForeignKeyViolation if constraint.contains("user_id") => {
                    let named = info.details().and_then(id_in_detail).or(user);
                    if let Some(id) = named {
                        return Error::NotFound {
                            entity: Entity::User,
                            id,
                        };
                    }
                }
                DatabaseErrorKind::ClosedConnection => return unavailable(e),
                _ if is_connection_loss(info.message()) => return unavailable(e),
                _ => {}
            }
        }
        DieselError::BrokenTransactionManager => return unavailable(e),
        _ => {}
    }
    Error::Database {
        source: Box::new(e),
    }
}

/// Messages PostgreSQL sends as it ends a session (restart, shutdown,
/// `pg_terminate_backend`).
fn is_connection_loss(message: &str) -> bool {
    message.starts_with("terminating connection")
        || message.starts_with("the database system is")
        || message.contains("connection closed")
}

fn unavailable(e: DieselError) -> Error {
    Error::Unavailable {
        backend: Backend::Postgres,
        source: Box::new(e),
    }
}

/// The id in `Key (user_id)=(…) is not present in table "users".`
fn id_in_detail(detail: &str) -> Option<Uuid> {
    let start = detail.find("=(")? + 2;
    let end = start + detail[start..].find(')')?;
    Uuid::parse_str(&detail[start..end]).ok()
}

/// A pool checkout failure as an [`Error`]: a timeout is
/// [`Error::PoolTimeout`], unless opening connections has been failing
/// meanwhile, which means the server is unreachable.
pub(super) fn checkout(
    e: bb8::RunError<diesel::ConnectionError>,
    waited: std::time::Duration,
    last_connect_error: Option<String>,
) -> Error {
    match (e, last_connect_error) {
        (bb8::RunError::TimedOut, None) => Error::PoolTimeout { waited },
        (bb8::RunError::TimedOut, Some(cause)) => Error::Unavailable {
            backend: Backend::Postgres,
            source: cause.into(),
        },
        (bb8::RunError::User(e), _) => Error::Unavailable {
            backend: Backend::Postgres,
            source: Box::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_user_id_from_the_detail() {
        let id = Uuid::now_v7();
        let detail = format!("Key (user_id)=({id}) is not present in table \"users\".");
        assert_eq!(id_in_detail(&detail), Some(id));
        assert_eq!(id_in_detail("no id here"), None);
    }
}
