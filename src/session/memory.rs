//! Sessions in this process's memory.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::backend::SessionBackend;
use crate::error::Result;
use crate::model::{Json, Session};

/// Sweep expired sessions after this many inserts, so that a process that
/// never calls `delete_expired` still holds only about this many dead
/// sessions beyond its live ones.
const SWEEP_EVERY: u64 = 1024;

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    by_user: HashMap<Uuid, HashSet<String>>,
    inserts: u64,
}

impl State {
    fn remove(&mut self, key: &str) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        if let Some(user) = session.user_id {
            self.unindex(user, key);
        }
        Some(session)
    }

    fn unindex(&mut self, user: Uuid, key: &str) {
        if let Some(keys) = self.by_user.get_mut(&user) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_user.remove(&user);
            }
        }
    }

    fn store(&mut self, key: &str, session: Session) {
        if let Some(user) = session.user_id {
            self.by_user.entry(user).or_default().insert(key.to_owned());
        }
        self.sessions.insert(key.to_owned(), session);
        self.inserts += 1;
    }

    fn sweep(&mut self, now: DateTime<Utc>) -> u64 {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.remove(key);
        }
        expired.len() as u64
    }

    fn live(&mut self, key: &str, now: DateTime<Utc>) -> Option<&mut Session> {
        self.sessions.get_mut(key).filter(|s| s.expires_at > now)
    }
}

/// One lock around the map; no call holds it across an `.await` (none
/// awaits at all).
#[derive(Default)]
pub(super) struct MemorySessions {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemorySessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemorySessions")
    }
}

impl MemorySessions {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave a half-made change: every change
        // below is made in full or not at all.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl SessionBackend for MemorySessions {
    async fn insert(&self, key: &str, session: &Session, now: DateTime<Utc>) -> Result<bool> {
        let mut state = self.state();
        if state.live(key, now).is_some() {
            return Ok(false);
        }
        state.remove(key);
        state.store(key, session.clone());
        if state.inserts % SWEEP_EVERY == 0 {
            state.sweep(now);
        }
        Ok(true)
    }

    async fn put(&self, key: &str, session: &Session, _now: DateTime<Utc>) -> Result<()> {
        let mut state = self.state();
        let mut session = session.clone();
        if let Some(old) = state.remove(key) {
            session.created_at = old.created_at;
        }
        state.store(key, session);
        Ok(())
    }

    async fn load(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        Ok(self.state().live(key, now).map(|s| s.clone()))
    }

    async fn update(
        &self,
        key: &str,
        data: Option<&Json>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>> {
        let mut state = self.state();
        Ok(state.live(key, now).map(|s| {
            if let Some(data) = data {
                s.data = data.clone();
            }
            s.expires_at = expires_at;
            s.clone()
        }))
    }

    async fn delete(&self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        Ok(self.state().remove(key).is_some_and(|s| s.expires_at > now))
    }

    async fn delete_user(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<u64> {
        let mut state = self.state();
        let keys = state.by_user.remove(&user_id).unwrap_or_default();
        let mut live = 0;
        for key in keys {
            if state
                .sessions
                .remove(&key)
                .is_some_and(|s| s.expires_at > now)
            {
                live += 1;
            }
        }
        Ok(live)
    }

    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(self.state().sweep(now))
    }
}
