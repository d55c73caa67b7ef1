//! Every session backend as a `tower-sessions` store.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};
use uuid::Uuid;

use super::Sessions;
use crate::Field;
use crate::model::json::{check_document, check_object};
use crate::model::{Json, Session};
use crate::telemetry::session_site;

/// [`Sessions`] as a [`tower_sessions_core::SessionStore`] (the trait the
/// `tower-sessions` crate's `SessionManagerLayer` takes), on whichever
/// backend the sessions use. Feature `tower-sessions`.
///
/// `tower-sessions` makes the session id (128 bits from a cryptographic
/// generator) and the cookie; this store keeps the record under the
/// SHA-256 of the cookie value, with the same data limit as
/// [`Sessions`], and implements [`ExpiredDeletion`] for cleanup.
///
/// `tower-sessions` records name no user, so "log out everywhere"
/// ([`Sessions::delete_user`]) needs to know which data field holds the
/// user id: name it with [`TowerSessionStore::user_field`], and a session
/// whose data holds a UUID string there belongs to that user.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # fn demo() {
/// use dreamnet_db::{Sessions, TowerSessionStore};
///
/// let sessions = Sessions::in_memory();
/// let store = TowerSessionStore::new(sessions.clone()).user_field("user_id");
/// // tower_sessions::SessionManagerLayer::new(store) goes in front of the routes.
/// # let _ = store;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TowerSessionStore {
    sessions: Sessions,
    user_field: Option<String>,
}

impl TowerSessionStore {
    /// `sessions` as a `tower-sessions` store.
    pub fn new(sessions: Sessions) -> Self {
        TowerSessionStore {
            sessions,
            user_field: None,
        }
    }

    /// The data field that holds the session's user id (a UUID string), so
    /// that [`Sessions::delete_user`] ends the session too.
    pub fn user_field(mut self, field: impl Into<String>) -> Self {
        self.user_field = Some(field.into());
        self
    }

    /// The sessions this store serves.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    fn session_of(
        &self,
        record: &Record,
        now: DateTime<Utc>,
        max: usize,
    ) -> crate::Result<Session> {
        let data = Json::from(Value::Object(record.data.clone().into_iter().collect()));
        let data = check_document(Field::SessionData, &data, max)?;
        let user_id = self
            .user_field
            .as_ref()
            .and_then(|f| record.data.get(f))
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        Ok(Session {
            user_id,
            data,
            created_at: now,
            expires_at: from_offset(record.expiry_date),
        })
    }
}

/// The storage key of a `tower-sessions` id: the SHA-256 of its cookie form.
fn key_of(id: &Id) -> String {
    crate::model::hash_key(&id.to_string())
}

fn from_offset(t: OffsetDateTime) -> DateTime<Utc> {
    let nanos = t.unix_timestamp_nanos();
    let micros = nanos.div_euclid(1000);
    DateTime::from_timestamp_micros(micros.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn to_offset(t: DateTime<Utc>) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.timestamp_micros()) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn backend_error(e: crate::Error) -> session_store::Error {
    // The crate's errors never quote a session id.
    session_store::Error::Backend(e.to_string())
}

/// The session as `tower-sessions` holds it: its data as
/// `serde_json::Value`s. Data a `Value` cannot hold exactly (a number such
/// as `123456789012345678901234567890` that another service wrote) is a
/// decoding error naming its path, never a rounded value.
fn record_of(id: Id, session: Session) -> session_store::Result<Record> {
    let decode = |e: crate::Error| session_store::Error::Decode(format!("session data: {e}"));
    check_object(Field::SessionData, &session.data).map_err(decode)?;
    let data: HashMap<String, Value> = match session.data.to_value().map_err(decode)? {
        Value::Object(map) => map.into_iter().collect(),
        _ => HashMap::new(),
    };
    Ok(Record {
        id,
        data,
        expiry_date: to_offset(session.expires_at),
    })
}

#[async_trait::async_trait]
impl SessionStore for TowerSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let (backend, now, max) = self.sessions.parts();
        self.sessions
            .traced(session_site!("create"), |_| true, async {
                let session = self.session_of(record, now, max)?;
                // A new id while the one drawn is taken by a live session (128
                // random bits: in practice, never).
                for _ in 0..8 {
                    if backend.insert(&key_of(&record.id), &session, now).await? {
                        return Ok(());
                    }
                    record.id = Id::default();
                }
                Err(crate::Error::Database {
                    source: "eight fresh session ids collided: the random source is broken".into(),
                })
            })
            .await
            .map_err(backend_error)
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (backend, now, max) = self.sessions.parts();
        self.sessions
            .traced(session_site!("save"), |_| true, async {
                let session = self.session_of(record, now, max)?;
                let key = key_of(&record.id);
                if session.expires_at <= now {
                    backend.delete(&key, now).await.map(drop)
                } else {
                    backend.put(&key, &session, now).await
                }
            })
            .await
            .map_err(backend_error)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let (backend, now, _) = self.sessions.parts();
        let session = self
            .sessions
            .traced(
                session_site!("load"),
                Option::is_some,
                backend.load(&key_of(id), now),
            )
            .await
            .map_err(backend_error)?;
        session.map(|s| record_of(*id, s)).transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let (backend, now, _) = self.sessions.parts();
        self.sessions
            .traced(
                session_site!("delete"),
                |ended| *ended,
                backend.delete(&key_of(id), now),
            )
            .await
            .map(drop)
            .map_err(backend_error)
    }
}

#[async_trait::async_trait]
impl ExpiredDeletion for TowerSessionStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        let (backend, now, _) = self.sessions.parts();
        self.sessions
            .traced(
                session_site!("delete_expired"),
                |_| true,
                backend.delete_expired(now),
            )
            .await
            .map(drop)
            .map_err(backend_error)
    }
}
