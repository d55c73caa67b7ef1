//! Login sessions: an unguessable token for the client, JSON data and an
//! expiry on the server, in memory, on Redis or in PostgreSQL.
//!
//! Every backend keeps a session under the SHA-256 of its token, never the
//! token itself, so whoever can read the session table or the Redis keys
//! still cannot present a session. Tokens never appear in `Debug`,
//! `Display`, logs or error messages.

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "tower-sessions")]
mod tower;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::backend::SessionBackend;
use crate::clock::{SharedClock, now_micros};
use crate::error::{Error, Field, Result};
use crate::model::Json;
pub use crate::model::Session;
use crate::model::json::{check_document, check_object};
use crate::telemetry::{SessionSite, Storage, session_site, traced_session};

#[cfg(feature = "redis")]
pub use self::redis::RedisSessionOptions;
#[cfg(feature = "tower-sessions")]
pub use self::tower::TowerSessionStore;

/// The largest session data accepted by default, in bytes of JSON as
/// `jsonb` prints it without spaces: 16 KiB.
/// Sessions are read on every request, so they are kept small;
/// [`Sessions::max_data_bytes`] changes it.
pub const DEFAULT_MAX_SESSION_BYTES: usize = 16 * 1024;

/// The longest lifetime a session can be given: 400 days, the longest a
/// browser keeps a cookie.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// Random bytes in a token made by [`Sessions::create`]: 256 bits.
const TOKEN_BYTES: usize = 32;

/// Shortest and longest token [`SessionId::parse`] accepts. The shortest
/// is what 128 bits take in unpadded base64.
const MIN_TOKEN_LEN: usize = 22;
const MAX_TOKEN_LEN: usize = 128;

/// The token a client holds for its session (in a cookie, usually).
///
/// Made by [`Sessions::create`] from 256 bits of the operating system's
/// secure random source, as 64 lower-case hex digits. `Debug` and
/// `Display` never show it; [`SessionId::expose_secret`] does, for the
/// cookie.
///
/// ```
/// use dreamnet_db::SessionId;
///
/// let id = SessionId::parse("3f1c6a0d9e2b4c7a8f5e1d3b6a9c0e2f4b7d1a3c5e8f0b2d4a6c9e1f3b5d7a9c")?;
/// assert_eq!(format!("{id:?}"), "SessionId(<redacted>)");
/// assert!(SessionId::parse("short").is_err());
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Clone)]
pub struct SessionId(SecretString);

impl SessionId {
    fn generate() -> Result<Self> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::Database {
            source: format!("the operating system's random source failed: {e}").into(),
        })?;
        let mut token = String::with_capacity(2 * TOKEN_BYTES);
        crate::model::push_hex(&mut token, &bytes);
        Ok(SessionId(token.into()))
    }

    /// Checks the shape of a token a client presented: 22 to 128
    /// characters from the URL-safe alphabet (`A–Z a–z 0–9 - _`). Anything
    /// else is [`Error::InvalidInput`] naming [`Field::SessionId`], without
    /// quoting the token.
    pub fn parse(token: &str) -> Result<Self> {
        let len_ok = (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len());
        let chars_ok = token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !len_ok || !chars_ok {
            return Err(Error::invalid(
                Field::SessionId,
                "a session token is 22 to 128 characters of A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
        Ok(SessionId(token.to_owned().into()))
    }

    /// The token itself, to hand to the client.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// What backends store the session under: the SHA-256 of the token.
    pub(crate) fn storage_key(&self) -> String {
        crate::model::hash_key(self.0.expose_secret())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted session id>")
    }
}

impl std::str::FromStr for SessionId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SessionId::parse(s)
    }
}

/// What [`Sessions::create`] needs.
#[derive(Debug, Clone)]
pub struct NewSession {
    user_id: Option<Uuid>,
    data: Json,
    ttl: Duration,
}

impl NewSession {
    /// A session without a user and with empty data, living `ttl`.
    pub fn new(ttl: Duration) -> Self {
        NewSession {
            user_id: None,
            data: Json::empty_object(),
            ttl,
        }
    }

    /// The session belongs to `user_id`.
    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// The session starts with `data` (a JSON object).
    pub fn data(mut self, data: impl Into<Json>) -> Self {
        self.data = data.into();
        self
    }
}

/// A session just created, with the token the client gets.
#[derive(Debug, Clone)]
pub struct CreatedSession {
    /// The token: give it to the client (it is shown only here).
    pub id: SessionId,
    /// The session as stored.
    pub session: Session,
}

/// The session store: create, load, save, extend and delete sessions, end
/// every session of a user, and remove expired ones. Cheap to clone; every
/// clone shares the backend.
///
/// - `Sessions::in_memory` (feature `memory`): one process, and tests.
/// - `Sessions::redis` (feature `redis`): many processes; Redis expires
///   sessions by itself.
/// - [`Sessions::postgres`]: the `sessions` table, over a [`Store`]'s pool.
///
/// Every backend passes the same conformance tests. With the
/// `tower-sessions` feature, `TowerSessionStore` serves any of them to
/// axum and tower through the `tower-sessions` crate.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dreamnet_db::Result<()> {
/// use std::time::Duration;
/// use dreamnet_db::{NewSession, SessionId, Sessions};
/// use serde_json::json;
///
/// let sessions = Sessions::in_memory();
/// let user = uuid::Uuid::now_v7();
/// let created = sessions
///     .create(NewSession::new(Duration::from_secs(3600)).user(user).data(json!({"cart": []})))
///     .await?;
/// let cookie = created.id.expose_secret().to_owned();
///
/// // A later request presents the cookie.
/// let id = SessionId::parse(&cookie)?;
/// let session = sessions.load(&id).await?.expect("live");
/// assert_eq!(session.user_id, Some(user));
///
/// sessions.save(&id, json!({"cart": ["tea"]}), Duration::from_secs(3600)).await?;
/// assert_eq!(sessions.delete_user(user).await?, 1); // log out everywhere
/// assert!(sessions.load(&id).await?.is_none());
/// # Ok(()) }
/// # #[cfg(not(feature = "memory"))]
/// # fn main() {}
/// ```
///
/// [`Store`]: crate::Store
#[derive(Clone)]
pub struct Sessions {
    backend: Arc<dyn SessionBackend>,
    storage: Storage,
    clock: SharedClock,
    max_data_bytes: usize,
    /// The store whose audit log records "log out everywhere", with its
    /// actor: PostgreSQL sessions only, where the record can be written in
    /// the same transaction.
    audit: Option<crate::Store>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("backend", &self.backend)
            .field("max_data_bytes", &self.max_data_bytes)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    fn with_backend(
        backend: Arc<dyn SessionBackend>,
        storage: Storage,
        clock: SharedClock,
    ) -> Self {
        Sessions {
            backend,
            storage,
            clock,
            max_data_bytes: DEFAULT_MAX_SESSION_BYTES,
            audit: None,
        }
    }

    /// Sessions in this process's memory, timed by the system clock.
    /// Expired sessions are never returned and are swept as new ones come
    /// in, so the map does not grow without bound.
    #[cfg(feature = "memory")]
    pub fn in_memory() -> Self {
        Self::in_memory_with_clock(crate::SystemClock)
    }

    /// Sessions in memory, timed by `clock` (a [`crate::ManualClock`] in
    /// tests).
    #[cfg(feature = "memory")]
    pub fn in_memory_with_clock(clock: impl crate::Clock) -> Self {
        Self::with_backend(
            Arc::new(memory::MemorySessions::default()),
            Storage::Memory,
            Arc::new(clock),
        )
    }

    /// Sessions in PostgreSQL's `sessions` table (created by the crate's
    /// third migration), over `store`'s pool and timed by its clock.
    /// Fails with [`Error::Config`] when `store` is not on PostgreSQL.
    ///
    /// [`delete_user`](Self::delete_user) writes a `sessions.ended` record
    /// in the store's audit log, in the same transaction, as made by the
    /// store handle's actor (`Sessions::postgres(&store.acting_as(..))`),
    /// unless the store was built with auditing off.
    pub fn postgres(store: &crate::Store) -> Result<Self> {
        let backend = store.session_backend().ok_or_else(|| {
            Error::Config("PostgreSQL sessions need a store connected to PostgreSQL".to_owned())
        })?;
        let mut sessions = Self::with_backend(backend, Storage::Postgres, store.clock());
        sessions.audit = Some(store.clone());
        Ok(sessions)
    }

    /// Sessions on Redis at `url` (`redis://` or `rediss://`). Each session
    /// is a hash that Redis expires by itself; each user's sessions are
    /// indexed by a set that expires with the user's last session. Every
    /// call is bounded by [`RedisSessionOptions::timeout`] and fails with
    /// [`Error::Unavailable`] when Redis does not answer in time. Nothing
    /// connects until the first call.
    #[cfg(feature = "redis")]
    pub async fn redis(url: &str, options: RedisSessionOptions) -> Result<Self> {
        let backend = redis::RedisSessions::connect(url, options)?;
        Ok(Self::with_backend(
            Arc::new(backend),
            Storage::Redis,
            Arc::new(crate::SystemClock),
        ))
    }

    /// The same sessions timed by `clock`: creation times, expiries and
    /// what counts as expired all follow it. Tests pass a
    /// [`crate::ManualClock`] and move time exactly, on every backend. (On
    /// Redis, keys still expire by Redis's own clock, `ttl` after they were
    /// written; a session expired by `clock` is never returned before that.)
    pub fn with_clock(mut self, clock: impl crate::Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The largest session data accepted, in bytes of JSON as `jsonb` prints
    /// it without spaces. Default [`DEFAULT_MAX_SESSION_BYTES`].
    pub fn max_data_bytes(mut self, bytes: usize) -> Self {
        self.max_data_bytes = bytes;
        self
    }

    fn now(&self) -> DateTime<Utc> {
        now_micros(self.clock.as_ref())
    }

    /// Runs `fut` as a traced and counted session call (see
    /// [`traced_session`]).
    pub(crate) async fn traced<T>(
        &self,
        site: &'static SessionSite,
        live: fn(&T) -> bool,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        traced_session(site, self.storage, live, fut).await
    }

    /// Checks session data and returns it as it is stored.
    fn check_data(&self, data: &Json) -> Result<Json> {
        check_object(Field::SessionData, data)?;
        check_document(Field::SessionData, data, self.max_data_bytes)
    }

    fn expiry(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>> {
        if ttl.is_zero() || ttl > MAX_SESSION_TTL {
            return Err(Error::invalid(
                Field::SessionTtl,
                "a session lives more than zero and at most 400 days",
            ));
        }
        let ttl = chrono::Duration::from_std(ttl).expect("at most 400 days");
        Ok((now + ttl).trunc_subsecs(6))
    }

    /// Creates a session with a fresh token (256 bits from the operating
    /// system's secure random source).
    ///
    /// Refused with [`Error::InvalidInput`] when the data is not a JSON
    /// object, is over [`Sessions::max_data_bytes`] or is a document the
    /// store does not accept (see [`Json`](crate::Json))
    /// ([`Field::SessionData`]), or when the lifetime is zero or over
    /// [`MAX_SESSION_TTL`] ([`Field::SessionTtl`]); nothing is stored then.
    pub async fn create(&self, new: NewSession) -> Result<CreatedSession> {
        self.traced(session_site!("create"), |_| true, async {
            let data = self.check_data(&new.data)?;
            let now = self.now();
            let session = Session {
                user_id: new.user_id,
                data,
                created_at: now,
                expires_at: Self::expiry(now, new.ttl)?,
            };
            // 256 random bits do not collide; the loop is there so that a
            // broken random source cannot make two clients share a session.
            for _ in 0..3 {
                let id = SessionId::generate()?;
                if self
                    .backend
                    .insert(&id.storage_key(), &session, now)
                    .await?
                {
                    return Ok(CreatedSession { id, session });
                }
            }
            Err(Error::Database {
                source: "three fresh session tokens collided: the random source is broken".into(),
            })
        })
        .await
    }

    /// The live session for `id`, or `None` if there is none (unknown,
    /// deleted or expired: the three are not told apart).
    pub async fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        self.traced(session_site!("load"), Option::is_some, async {
            self.backend.load(&id.storage_key(), self.now()).await
        })
        .await
    }

    /// Replaces the data of the live session `id` and sets it to expire
    /// `ttl` from now. `None` if there is no live session: a session that
    /// ended is not brought back. Bad data or lifetime is refused as in
    /// [`Sessions::create`].
    pub async fn save(
        &self,
        id: &SessionId,
        data: impl Into<Json>,
        ttl: Duration,
    ) -> Result<Option<Session>> {
        let data = data.into();
        self.traced(session_site!("save"), Option::is_some, async {
            let data = self.check_data(&data)?;
            let now = self.now();
            let expires_at = Self::expiry(now, ttl)?;
            self.backend
                .update(&id.storage_key(), Some(&data), expires_at, now)
                .await
        })
        .await
    }

    /// Extends the live session `id` on activity: it now expires `ttl`
    /// from now. Returns the new expiry, or `None` if there is no live
    /// session.
    pub async fn extend(&self, id: &SessionId, ttl: Duration) -> Result<Option<DateTime<Utc>>> {
        self.traced(session_site!("extend"), Option::is_some, async {
            let now = self.now();
            let expires_at = Self::expiry(now, ttl)?;
            Ok(self
                .backend
                .update(&id.storage_key(), None, expires_at, now)
                .await?
                .map(|s| s.expires_at))
        })
        .await
    }

    /// Ends the session `id`. Says whether a live session ended.
    pub async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.traced(session_site!("delete"), |ended| *ended, async {
            self.backend.delete(&id.storage_key(), self.now()).await
        })
        .await
    }

    /// Ends every session of `user_id` ("log out everywhere"). Returns how
    /// many live sessions ended.
    ///
    /// Deleting a user through [`crate::Users::delete`] does not end their
    /// sessions (sessions do not depend on the `users` table); call this
    /// too.
    pub async fn delete_user(&self, user_id: Uuid) -> Result<u64> {
        self.traced(session_site!("delete_user"), |_| true, async {
            let ended = self.backend.delete_user(user_id, self.now());
            match &self.audit {
                Some(store) => store.audited(ended).await,
                None => crate::backend::audit::scope(None, ended).await,
            }
        })
        .await
    }

    /// Removes expired sessions and returns how many it removed. Expired
    /// sessions are never returned anyway; this frees their space. Run it
    /// now and then (every few minutes) for PostgreSQL, where it is an
    /// index range scan of `sessions (expires_at)`. The in-memory backend
    /// also sweeps as sessions are created; on Redis, sessions expire by
    /// themselves and this returns 0.
    pub async fn delete_expired(&self) -> Result<u64> {
        self.traced(session_site!("delete_expired"), |_| true, async {
            self.backend.delete_expired(self.now()).await
        })
        .await
    }

    /// Runs [`Sessions::delete_expired`] every `period` on the current
    /// tokio runtime until the returned handle is aborted (or the runtime
    /// shuts down). A failed round is logged (`tracing` warning) and the
    /// next one runs as planned. The first round runs one `period` from
    /// now.
    ///
    /// ```
    /// # #[cfg(feature = "memory")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// let sessions = dreamnet_db::Sessions::in_memory();
    /// let cleanup = sessions.spawn_cleanup(Duration::from_secs(300));
    /// // … on shutdown:
    /// cleanup.abort();
    /// # }
    /// # #[cfg(not(feature = "memory"))]
    /// # fn main() {}
    /// ```
    pub fn spawn_cleanup(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let sessions = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                match sessions.delete_expired().await {
                    Ok(removed) => tracing::debug!(removed, "expired sessions removed"),
                    Err(e) => tracing::warn!(error = %e, "removing expired sessions failed"),
                }
            }
        })
    }

    /// The backend, for the `tower-sessions` adapter.
    #[cfg(feature = "tower-sessions")]
    pub(crate) fn parts(&self) -> (&dyn SessionBackend, DateTime<Utc>, usize) {
        (self.backend.as_ref(), self.now(), self.max_data_bytes)
    }
}
