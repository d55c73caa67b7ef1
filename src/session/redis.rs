//! Sessions on Redis. A session is a hash under `<prefix>s:<sha256 of the
//! token>` with the fields `u` (user id or empty), `c` and `e` (creation
//! and expiry, µs since the epoch) and `d` (the JSON data), which Redis
//! expires by itself. A user's sessions are listed in the set
//! `<prefix>u:<user id>`, which lives as long as the user's longest
//! session. Every change is one Lua script, so each call is one round trip
//! and atomic across processes.

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::backend::SessionBackend;
use crate::error::{Backend, BoxError, Error, Result};
use crate::model::{Json, Session};

/// KEYS[1] the session. ARGV: 1 mode (`nx`: only if no live session holds
/// the key; `put`: replace, keeping the creation time), 2 user or '',
/// 3 created µs, 4 expires µs, 5 data, 6 ttl ms, 7 the session's hash,
/// 8 user-set prefix, 9 now µs. Returns 1 if stored.
const STORE: &str = r#"
if ARGV[1] == 'nx' then
  local e = redis.call('HGET', KEYS[1], 'e')
  if e and tonumber(e) > tonumber(ARGV[9]) then return 0 end
end
local old = redis.call('HMGET', KEYS[1], 'u', 'c')
local created = ARGV[3]
if ARGV[1] == 'put' and old[2] then created = old[2] end
if old[1] and old[1] ~= '' and old[1] ~= ARGV[2] then
  redis.call('SREM', ARGV[8] .. old[1], ARGV[7])
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'u', ARGV[2], 'c', created, 'e', ARGV[4], 'd', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if ARGV[2] ~= '' then
  local set = ARGV[8] .. ARGV[2]
  redis.call('SADD', set, ARGV[7])
  if redis.call('PTTL', set) < tonumber(ARGV[6]) then redis.call('PEXPIRE', set, ARGV[6]) end
end
return 1
"#;

/// KEYS[1] the session. ARGV: 1 new expiry µs, 2 ttl ms, 3 '1' if 4 is the
/// new data, 4 data, 5 user-set prefix, 6 now µs. Returns {u, c, e, d} of
/// the live session after the change, or {} if there is none.
const UPDATE: &str = r#"
local e = redis.call('HGET', KEYS[1], 'e')
if not e or tonumber(e) <= tonumber(ARGV[6]) then return {} end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'd', ARGV[4]) end
redis.call('HSET', KEYS[1], 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'u', 'c', 'e', 'd')
if s[1] ~= '' then
  local set = ARGV[5] .. s[1]
  if redis.call('PTTL', set) < tonumber(ARGV[2]) then redis.call('PEXPIRE', set, ARGV[2]) end
end
return s
"#;

/// KEYS[1] the session. ARGV: 1 user-set prefix, 2 the session's hash,
/// 3 now µs. Returns 1 if a live session ended.
const DELETE: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'u', 'e')
redis.call('DEL', KEYS[1])
if s[1] and s[1] ~= '' then redis.call('SREM', ARGV[1] .. s[1], ARGV[2]) end
if s[2] and tonumber(s[2]) > tonumber(ARGV[3]) then return 1 end
return 0
"#;

/// KEYS[1] the user's set. ARGV: 1 session-key prefix, 2 user, 3 now µs.
/// Deletes the sessions the set lists that still belong to the user;
/// returns how many were live.
const DELETE_USER: &str = r#"
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[1] .. m
  local s = redis.call('HMGET', k, 'u', 'e')
  if s[1] == ARGV[2] then
    redis.call('DEL', k)
    if s[2] and tonumber(s[2]) > tonumber(ARGV[3]) then n = n + 1 end
  end
end
redis.call('DEL', KEYS[1])
return n
"#;

/// How Redis sessions connect.
#[derive(Debug, Clone)]
pub struct RedisSessionOptions {
    /// Prefix of every key. Default `dreamnet:v1:sess:`. Processes sharing a
    /// prefix share their sessions.
    pub prefix: String,
    /// Bound on each Redis call; past it the call fails with
    /// [`Error::Unavailable`]. Default 250 ms.
    pub timeout: Duration,
}

impl Default for RedisSessionOptions {
    fn default() -> Self {
        RedisSessionOptions {
            prefix: "dreamnet:v1:sess:".to_owned(),
            timeout: Duration::from_millis(250),
        }
    }
}

pub(super) struct RedisSessions {
    conn: ConnectionManager,
    options: RedisSessionOptions,
    /// `<prefix>s:`, before a session's hash.
    session_prefix: String,
    /// `<prefix>u:`, before a user's id.
    user_prefix: String,
    store: Script,
    update: Script,
    delete: Script,
    delete_user: Script,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Milliseconds from `now` to `until`, at least 1 (Redis refuses 0).
fn ttl_ms(now: DateTime<Utc>, until: DateTime<Utc>) -> i64 {
    ((micros(until) - micros(now)) / 1000).max(1)
}

#[derive(Debug, thiserror::Error)]
#[error("Redis did not answer within {0:?}")]
struct TimedOut(Duration);

#[derive(Debug, thiserror::Error)]
#[error("a session stored in Redis is malformed: {0}")]
struct Malformed(&'static str);

fn unavailable(source: BoxError) -> Error {
    Error::Unavailable {
        backend: Backend::Redis,
        source,
    }
}

/// A session from the `u`, `c`, `e`, `d` fields, if all are there.
fn decode(fields: Vec<Option<String>>) -> Result<Option<Session>> {
    let [u, c, e, d]: [Option<String>; 4] = match fields.try_into() {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    let (Some(u), Some(c), Some(e), Some(d)) = (u, c, e, d) else {
        return Ok(None);
    };
    let bad = |what| Error::Database {
        source: Box::new(Malformed(what)),
    };
    let time = |s: &str, what| {
        s.parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| bad(what))
    };
    Ok(Some(Session {
        user_id: if u.is_empty() {
            None
        } else {
            Some(Uuid::parse_str(&u).map_err(|_| bad("user id"))?)
        },
        created_at: time(&c, "creation time")?,
        expires_at: time(&e, "expiry")?,
        data: Json::from_stored(d).map_err(|_| bad("data"))?,
    }))
}

impl RedisSessions {
    pub(super) fn connect(url: &str, options: RedisSessionOptions) -> Result<Self> {
        Ok(RedisSessions {
            conn: crate::redis_conn::manager(url, options.timeout)?,
            session_prefix: format!("{}s:", options.prefix),
            user_prefix: format!("{}u:", options.prefix),
            options,
            store: Script::new(STORE),
            update: Script::new(UPDATE),
            delete: Script::new(DELETE),
            delete_user: Script::new(DELETE_USER),
        })
    }

    fn session_key(&self, key: &str) -> String {
        format!("{}{key}", self.session_prefix)
    }

    /// Runs `call` on a clone of the connection, bounded by the timeout.
    async fn run<T, F>(&self, call: impl FnOnce(ConnectionManager) -> F) -> Result<T>
    where
        F: Future<Output = ::redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.options.timeout, call(self.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(Box::new(e))),
            Err(_) => Err(unavailable(Box::new(TimedOut(self.options.timeout)))),
        }
    }

    async fn store(&self, mode: &str, key: &str, s: &Session, now: DateTime<Utc>) -> Result<bool> {
        let data = s.data.as_str();
        let mut call = self.store.key(self.session_key(key));
        call.arg(mode)
            .arg(s.user_id.map(|u| u.to_string()).unwrap_or_default())
            .arg(micros(s.created_at))
            .arg(micros(s.expires_at))
            .arg(data)
            .arg(ttl_ms(now, s.expires_at))
            .arg(key)
            .arg(&self.user_prefix)
            .arg(micros(now));
        let stored: i64 = self
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        Ok(stored == 1)
    }
}

#[async_trait::async_trait]
impl SessionBackend for RedisSessions {
    async fn insert(&self, key: &str, session: &Session, now: DateTime<Utc>) -> Result<bool> {
        self.store("nx", key, session, now).await
    }

    async fn put(&self, key: &str, session: &Session, now: DateTime<Utc>) -> Result<()> {
        self.store("put", key, session, now).await.map(drop)
    }

    async fn load(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        let name = self.session_key(key);
        let fields: Vec<Option<String>> = self
            .run(|mut conn| async move {
                ::redis::cmd("HMGET")
                    .arg(name)
                    .arg(&["u", "c", "e", "d"])
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(decode(fields)?.filter(|s| s.expires_at > now))
    }

    async fn update(
        &self,
        key: &str,
        data: Option<&Json>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>> {
        let mut call = self.update.key(self.session_key(key));
        call.arg(micros(expires_at))
            .arg(ttl_ms(now, expires_at))
            .arg(if data.is_some() { "1" } else { "0" })
            .arg(data.map_or("", Json::as_str))
            .arg(&self.user_prefix)
            .arg(micros(now));
        let fields: Vec<Option<String>> = self
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        decode(fields)
    }

    async fn delete(&self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut call = self.delete.key(self.session_key(key));
        call.arg(&self.user_prefix).arg(key).arg(micros(now));
        let live: i64 = self
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        Ok(live == 1)
    }

    async fn delete_user(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<u64> {
        let user = user_id.to_string();
        let mut call = self.delete_user.key(format!("{}{user}", &self.user_prefix));
        call.arg(&self.session_prefix).arg(user).arg(micros(now));
        let live: i64 = self
            .run(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        Ok(live.max(0) as u64)
    }

    async fn delete_expired(&self, _now: DateTime<Utc>) -> Result<u64> {
        // Redis removes expired sessions (and user sets) by itself.
        Ok(0)
    }
}
