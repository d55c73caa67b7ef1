//! From diesel's and bb8's errors to the crate's [`Error`].

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use uuid::Uuid;

use crate::error::{Backend, BoxError, Entity, Error, Field};

/// Unique constraints and indexes on a user's email: drizzle-kit's name
/// (what the migrations create), PostgreSQL's default name (what a
/// database adopted before its rename carries, and what a table the services
/// create by hand would), and the case-insensitive index.
const EMAIL_UNIQUE: [&str; 3] = [
    "users_email_unique",
    "users_email_key",
    "users_email_lower_key",
];

/// The same for a user's wallet address.
const WALLET_UNIQUE: [&str; 3] = [
    "users_wallet_address_unique",
    "users_wallet_address_key",
    "users_wallet_address_lower_key",
];

/// Foreign keys from `user_id` to `users`, under both names.
const USER_FOREIGN_KEYS: [&str; 4] = [
    "api_keys_user_id_users_id_fk",
    "api_keys_user_id_fkey",
    "events_user_id_users_id_fk",
    "events_user_id_fkey",
];

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
                DatabaseErrorKind::UniqueViolation if EMAIL_UNIQUE.contains(&constraint) => {
                    return Error::Conflict {
                        field: Field::Email,
                    };
                }
                DatabaseErrorKind::UniqueViolation if WALLET_UNIQUE.contains(&constraint) => {
                    return Error::Conflict {
                        field: Field::WalletAddress,
                    };
                }
                DatabaseErrorKind::ForeignKeyViolation
                    if USER_FOREIGN_KEYS.contains(&constraint) =>
                {
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
                DatabaseErrorKind::Unknown if is_permission_denial(info.message()) => {
                    return Error::PermissionDenied {
                        source: Box::new(e),
                    };
                }
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

/// Messages PostgreSQL sends with SQLSTATE 42501 (insufficient_privilege):
/// a missing privilege on a table, schema, sequence or function, DDL on an
/// object the role does not own, an action reserved to superusers or to a
/// role's members. diesel-async keeps no SQLSTATE for these (its kind is
/// `Unknown`), so the message is read, in the server's English (the default
/// `lc_messages`; on a server set to another language they stay
/// [`Error::Database`]).
fn is_permission_denial(message: &str) -> bool {
    [
        "permission denied",
        "must be owner of",
        "must be superuser",
        "must be member of role",
    ]
    .iter()
    .any(|m| message.starts_with(m))
}

/// A boxed error from diesel's migration harness (or any boxed error of a
/// statement) as an [`Error`]: a diesel error is classified as above; the
/// harness's own error keeps only the server's message in its text
/// (`Failed to run <migration> with: <message>`), so a refusal for want of
/// a privilege is found there. [`Error::Database`] otherwise.
pub(super) fn boxed(e: BoxError) -> Error {
    let e = match e.downcast::<DieselError>() {
        Ok(diesel) => return classify(*diesel, None),
        Err(e) => e,
    };
    let shown = e.to_string();
    let message = shown.split_once(" with: ").map_or(shown.as_str(), |m| m.1);
    if is_permission_denial(message) {
        Error::PermissionDenied { source: e }
    } else {
        Error::Database { source: e }
    }
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

    /// What PostgreSQL reports: a message, and the constraint a violation
    /// names (none for SQLSTATE 42501 or an unknown kind).
    struct Reported {
        message: &'static str,
        constraint: Option<&'static str>,
    }

    impl diesel::result::DatabaseErrorInformation for Reported {
        fn message(&self) -> &str {
            self.message
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            self.constraint
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn refused(message: &'static str) -> DieselError {
        DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(Reported {
                message,
                constraint: None,
            }),
        )
    }

    #[test]
    fn insufficient_privilege_is_permission_denied() {
        for message in [
            "permission denied for table users",
            "permission denied for schema public",
            "permission denied for function dreamnet_spend_key_credits",
            "must be owner of table users",
            "must be superuser to create an event trigger",
        ] {
            let e = Error::from(refused(message));
            assert!(
                matches!(e, Error::PermissionDenied { .. }),
                "{message}: {e:?}"
            );
            // Through the migration harness: as its error of one migration,
            // or as the bare error of its bookkeeping.
            let wrapped: BoxError =
                format!("Failed to run 2026-11-25-000001_create_core_tables with: {message}")
                    .into();
            assert!(matches!(boxed(wrapped), Error::PermissionDenied { .. }));
            let bare: BoxError = Box::new(refused(message));
            assert!(matches!(boxed(bare), Error::PermissionDenied { .. }));
        }
        for message in [
            "syntax error at or near \"x\"",
            "relation \"x\" does not exist",
        ] {
            assert!(matches!(
                Error::from(refused(message)),
                Error::Database { .. }
            ));
            let bare: BoxError = Box::new(refused(message));
            assert!(matches!(boxed(bare), Error::Database { .. }));
        }
        let other: BoxError =
            "Failed to run x with: canceling statement due to lock timeout".into();
        assert!(matches!(boxed(other), Error::Database { .. }));
    }

    fn violated(kind: DatabaseErrorKind, constraint: &'static str) -> Error {
        classify(
            DieselError::DatabaseError(
                kind,
                Box::new(Reported {
                    message: "violation",
                    constraint: Some(constraint),
                }),
            ),
            Some(Uuid::nil()),
        )
    }

    #[test]
    fn knows_drizzle_kit_and_postgres_constraint_names() {
        use DatabaseErrorKind::{ForeignKeyViolation, UniqueViolation};
        for name in EMAIL_UNIQUE {
            let e = violated(UniqueViolation, name);
            assert!(
                matches!(
                    e,
                    Error::Conflict {
                        field: Field::Email
                    }
                ),
                "{name}: {e:?}"
            );
        }
        for name in WALLET_UNIQUE {
            let e = violated(UniqueViolation, name);
            assert!(
                matches!(
                    e,
                    Error::Conflict {
                        field: Field::WalletAddress
                    }
                ),
                "{name}: {e:?}"
            );
        }
        for name in USER_FOREIGN_KEYS {
            let e = violated(ForeignKeyViolation, name);
            assert!(
                matches!(
                    e,
                    Error::NotFound {
                        entity: Entity::User,
                        ..
                    }
                ),
                "{name}: {e:?}"
            );
        }
        // A key's hash is unique too, but no field of a user.
        let e = violated(UniqueViolation, "api_keys_hashed_key_key");
        assert!(matches!(e, Error::Database { .. }), "{e:?}");
    }
}
