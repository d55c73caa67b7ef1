//! The one error type every operation of this crate returns.

use std::time::Duration;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error every store operation returns.
///
/// Callers match on the variant; the underlying driver error, where there is
/// one, is kept as [`std::error::Error::source`] and never formatted into the
/// message, so connection strings and secrets cannot leak through `Display`.
///
/// ```
/// use dreamnet_db::{Error, Field};
///
/// fn status(err: &Error) -> u16 {
///     match err {
///         Error::NotFound { .. } => 404,
///         Error::Conflict { .. } => 409,
///         Error::InvalidInput { .. } => 422,
///         Error::Unauthorized(_) => 401,
///         Error::PoolTimeout { .. } | Error::Unavailable { .. } => 503,
///         _ => 500,
///     }
/// }
/// let err = Error::Conflict { field: Field::Email };
/// assert_eq!(status(&err), 409);
/// assert_eq!(err.to_string(), "conflict: another record already has this email");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No record of this kind has this id.
    #[error("not found: no {entity} with id {id}")]
    NotFound {
        /// What was looked for.
        entity: Entity,
        /// The id that was asked for.
        id: uuid::Uuid,
    },
    /// A unique field already holds this value in another record.
    #[error("conflict: another record already has this {field}")]
    Conflict {
        /// The field whose value is taken.
        field: Field,
    },
    /// The input was refused before anything was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field that was refused.
        field: Field,
        /// Why, in words a developer can act on (never the rejected secret).
        reason: String,
    },
    /// A presented API key was refused.
    #[error("unauthorized: {0}")]
    Unauthorized(KeyRejection),
    /// The connection pool could not hand out a connection in time.
    #[error("timed out after {waited:?} waiting for a database connection")]
    PoolTimeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The backend (database or cache server) could not be reached or
    /// dropped the connection.
    #[error("{backend} unavailable")]
    Unavailable {
        /// Which backend failed.
        backend: Backend,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The configuration could not be used (a malformed URL, an unknown
    /// `sslmode`, an unreadable certificate file).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An upload's byte stream ended with an error of its own (the client
    /// stopped sending, the connection dropped): nothing of it was kept.
    #[error("the upload stream failed")]
    UploadInterrupted {
        /// The stream's error.
        #[source]
        source: BoxError,
    },
    /// The database does not have the schema the crate's migrations promise
    /// (from [`Store::migrate`](crate::Store::migrate) and
    /// [`Store::verify_schema`](crate::Store::verify_schema)): every
    /// difference, by name.
    #[error("{0}")]
    Schema(crate::SchemaMismatch),
    /// The database refused the call because the store's role lacks a
    /// privilege it needs (SQLSTATE 42501): a write through the read-only
    /// role, a migration through the application role, a change to an
    /// append-only table. See [`RoleNames`](crate::RoleNames). The server's
    /// message (naming the table or schema, never a value) is the
    /// `source`.
    #[error("permission denied: the database role lacks a privilege this call needs")]
    PermissionDenied {
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// Any other error the database reported.
    #[error("database error")]
    Database {
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

/// A boxed error kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The kinds of record an [`Error::NotFound`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Entity {
    /// A row of `users`.
    User,
    /// A row of `api_keys`.
    ApiKey,
    /// A row of `events`.
    Event,
    /// A stored file (a row of `media` and its object).
    Media,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::User => "user",
            Entity::ApiKey => "api key",
            Entity::Event => "event",
            Entity::Media => "media file",
        })
    }
}

/// The backends an [`Error::Unavailable`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// The PostgreSQL server.
    Postgres,
    /// The Redis server.
    Redis,
    /// The object store holding media files (a local folder, S3, ...).
    ObjectStore,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Redis => "redis",
            Backend::ObjectStore => "object store",
        })
    }
}

/// The input fields an [`Error::InvalidInput`] or [`Error::Conflict`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// A user's email address.
    Email,
    /// A user's wallet address.
    WalletAddress,
    /// A user's passport tier.
    PassportTier,
    /// A user's metadata document.
    Metadata,
    /// A user's preferences document.
    Preferences,
    /// The service an API key is issued for.
    Service,
    /// An API key's expiry.
    ExpiresAt,
    /// An event's type.
    EventType,
    /// An event's payload.
    Payload,
    /// A page size.
    Limit,
    /// A time range.
    TimeRange,
    /// A record id.
    Id,
    /// A rate-limit policy.
    RateLimitPolicy,
    /// The cost of a rate-limited request.
    Cost,
    /// A session token.
    SessionId,
    /// A session's data.
    SessionData,
    /// A session's lifetime.
    SessionTtl,
    /// A page's cursor.
    Cursor,
    /// A JSON document not (yet) tied to a field: [`Json::parse`],
    /// [`Json::to_value`], [`Json::deserialize`].
    ///
    /// [`Json::parse`]: crate::Json::parse
    /// [`Json::to_value`]: crate::Json::to_value
    /// [`Json::deserialize`]: crate::Json::deserialize
    Json,
    /// A media file's content (its size, or its type sniffed from its bytes).
    Content,
    /// A media file's original name.
    FileName,
    /// A byte range of a media file.
    Range,
    /// A signed URL's lifetime.
    Expiry,
    /// The bucket period of an analytics query.
    Period,
    /// A funnel's steps.
    Steps,
    /// A funnel's window.
    Window,
    /// The payload key a breakdown groups by.
    PayloadKey,
    /// A search text.
    Query,
    /// An API key permission.
    Permission,
    /// An API key's display name.
    KeyName,
    /// An API key's credits.
    Credits,
    /// An API key's credit refill.
    Refill,
    /// Who an audited change is recorded as made by.
    Actor,
    /// A database role's name ([`RoleNames`](crate::RoleNames)).
    Role,
    /// How many matches a relevance search ranks
    /// ([`EventSearch::candidates`](crate::EventSearch::candidates)).
    Candidates,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Email => "email",
            Field::WalletAddress => "wallet_address",
            Field::PassportTier => "passport_tier",
            Field::Metadata => "metadata",
            Field::Preferences => "preferences",
            Field::Service => "service",
            Field::ExpiresAt => "expires_at",
            Field::EventType => "event_type",
            Field::Payload => "payload",
            Field::Limit => "limit",
            Field::TimeRange => "time range",
            Field::Id => "id",
            Field::RateLimitPolicy => "rate limit policy",
            Field::Cost => "cost",
            Field::SessionId => "session id",
            Field::SessionData => "session data",
            Field::SessionTtl => "session lifetime",
            Field::Cursor => "cursor",
            Field::Json => "json",
            Field::Content => "content",
            Field::FileName => "file name",
            Field::Range => "range",
            Field::Expiry => "expiry",
            Field::Period => "period",
            Field::Steps => "steps",
            Field::Window => "window",
            Field::PayloadKey => "payload key",
            Field::Query => "query",
            Field::Permission => "permission",
            Field::KeyName => "key name",
            Field::Credits => "credits",
            Field::Refill => "refill",
            Field::Actor => "actor",
            Field::Role => "role",
            Field::Candidates => "candidates",
        })
    }
}

/// Why a presented API key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyRejection {
    /// The string cannot be an API key (empty, too long, control
    /// characters, or a `dnk_` key of the wrong shape).
    Malformed,
    /// No key with this hash exists.
    Unknown,
    /// The key was revoked.
    Revoked,
    /// The key's expiry has passed.
    Expired,
    /// The key was issued for another service.
    WrongService,
    /// The key is disabled (reversibly, unlike revocation).
    Disabled,
    /// The key lacks a permission the check required.
    InsufficientPermissions,
    /// The key has no credits left for this request.
    UsageExceeded,
    /// One of the key's rate limits refused the request.
    RateLimited {
        /// How long until the request would be allowed.
        retry_after: Duration,
    },
}

impl std::fmt::Display for KeyRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyRejection::Malformed => "malformed api key",
            KeyRejection::Unknown => "unknown api key",
            KeyRejection::Revoked => "revoked api key",
            KeyRejection::Expired => "expired api key",
            KeyRejection::WrongService => "api key not valid for this service",
            KeyRejection::Disabled => "disabled api key",
            KeyRejection::InsufficientPermissions => "api key lacks a required permission",
            KeyRejection::UsageExceeded => "api key usage exceeded",
            KeyRejection::RateLimited { .. } => "api key rate limited",
        })
    }
}

impl Error {
    /// An [`Error::InvalidInput`] for `field` with `reason`.
    pub(crate) fn invalid(field: Field, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// `true` for errors worth retrying later: a pool timeout or an
    /// unreachable backend.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::PoolTimeout { .. } | Error::Unavailable { .. })
    }
}
