//! The Redis side of the cache: one [`ConnectionManager`] (which reconnects
//! by itself), every call bounded by the store's Redis timeout, the lease
//! protocol's Lua scripts, and the pending set of invalidations that could
//! not reach Redis. The module documentation of `cache` explains the
//! protocol; this file carries it out.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use ::redis::{Cmd, FromRedisValue, RedisResult, Script, cmd};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::keys::{Keys, invalidated, lease};
use super::{CacheSettings, Counters};
use crate::error::Result;
use crate::telemetry::CacheEvent;

/// How long a reader that missed may take to read the database and fill.
/// A slower reader's fill is refused (its lease has expired): expiry only
/// ever makes a fill fail.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(5);

/// How long a deleted user's tombstone, and the marker an invalidation
/// leaves beside a record, live: longer than any lease taken before them,
/// so no fill that read the database before the write can land after it.
const MARKER_TTL: Duration = Duration::from_secs(2 * LEASE_TTL.as_secs());

/// After a failed call, Redis is left alone this long (reads go to the
/// database at once instead of each waiting for the timeout).
const COOLDOWN: Duration = Duration::from_millis(250);

/// How often the background task retries pending invalidations.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Past this many pending invalidations, they are replaced by one sweep of
/// the whole prefix, so the set stays bounded through a long outage.
const MAX_PENDING: usize = 100_000;

/// At most one `warn` per this long while Redis keeps failing.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Records per script call when flushing many invalidations.
const INVALIDATE_BATCH: usize = 256;

/// `GET` an index entry, then the record it names.
const FOLLOW: &str = r"
local id = redis.call('GET', KEYS[1])
if not id then return {} end
local record = redis.call('GET', ARGV[1] .. id)
if not record then return {id} end
return {id, record}
";

/// Writes a record only if the lease still holds this reader's token.
const FILL: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// As [`FILL`], for a key record: also refused if the key's user has just
/// been deleted, and records the key under its user for that deletion.
const FILL_KEY: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return 1
";

/// A miss through an index entry (email, wallet, key hash), leased before
/// the database was read: point the index at the id found, and write the
/// record unless it was invalidated since the lease was taken (its marker,
/// or for a key its user's tombstone, exists). Returns 1 if the record was
/// written, 2 if it was refused, 0 if the lease was lost.
/// KEYS: index, index lease, record, record marker[, user's key set, user's
/// tombstone]. ARGV: token, id, record, TTL in ms.
const FILL_VIA_INDEX: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
if redis.call('EXISTS', KEYS[4]) == 1 then return 2 end
if #KEYS == 6 then
  if redis.call('EXISTS', KEYS[6]) == 1 then return 2 end
  redis.call('SADD', KEYS[5], ARGV[2])
  if redis.call('PTTL', KEYS[5]) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[5], ARGV[4])
  end
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
return 1
";

/// Drops records and their leases, leaves each a marker, and publishes
/// their names (for local tiers, see `local.rs`) in the same step.
/// KEYS: records. ARGV: marker TTL in ms, invalidation channel.
const INVALIDATE: &str = r"
for _, record in ipairs(KEYS) do
  redis.call('DEL', record, record .. ':lease')
  redis.call('SET', record .. ':inv', '1', 'PX', ARGV[1])
end
redis.call('PUBLISH', ARGV[2], table.concat(KEYS, ' '))
return #KEYS
";

/// A user was deleted: tombstone, then drop the user's record (leaving a
/// marker) and every key record cached for them (and those the database
/// listed), with leases.
/// Publishes every record name it dropped, as [`INVALIDATE`] does.
/// KEYS: record, record lease, key set, tombstone, record marker.
/// ARGV: marker TTL in ms, key record prefix, invalidation channel, key
/// ids….
const USER_DELETED: &str = r"
redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
redis.call('SET', KEYS[5], '1', 'PX', ARGV[1])
local ids = redis.call('SMEMBERS', KEYS[3])
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
local names = {KEYS[1]}
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[2] .. id, ARGV[2] .. id .. ':lease')
  names[#names + 1] = ARGV[2] .. id
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[3], table.concat(names, ' '))
return #ids
";

/// What a read found in Redis.
#[derive(Debug)]
pub(crate) enum Lookup<T> {
    /// The entry.
    Hit(T),
    /// No entry.
    Miss,
    /// Redis was not asked (failing, or invalidations pending) or did not
    /// answer in time.
    Down,
}

/// The right to fill one record (or one index entry and its record), won
/// by a reader that missed.
#[derive(Debug)]
pub(crate) struct Lease {
    name: String,
    token: String,
}

/// Something a write made stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Invalidation {
    /// A cached record (by its Redis key), with its lease.
    Record(String),
    /// A deleted user: their record, every key record cached for them, and
    /// these keys (which the database listed before the deletion).
    UserDeleted { user: Uuid, keys: Vec<Uuid> },
}

#[derive(Debug, Default)]
struct Pending {
    items: HashSet<Invalidation>,
    /// Too many to keep: sweep the whole prefix instead.
    sweep: bool,
    /// Bumped whenever `sweep` is set, so a sweep that began earlier does
    /// not clear a later one.
    sweep_epoch: u64,
}

impl Pending {
    fn len(&self) -> u64 {
        self.items.len() as u64 + u64::from(self.sweep)
    }
}

struct Scripts {
    follow: Script,
    fill: Script,
    fill_key: Script,
    fill_via_index: Script,
    invalidate: Script,
    user_deleted: Script,
    verify: Script,
    seed: Script,
}

/// The cache's connection to Redis and everything it keeps about it.
pub(crate) struct RedisCache {
    conn: ConnectionManager,
    keys: Keys,
    ttl_ms: u64,
    timeout: Duration,
    counters: Arc<Counters>,
    scripts: Scripts,
    pending: Mutex<Pending>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
    /// Reference point of `skip_until_ms`.
    started: Instant,
    /// Milliseconds after `started` before which Redis is not asked.
    skip_until_ms: AtomicU64,
    /// Whether the last call failed (to log the recovery once).
    failing: AtomicBool,
    last_warn: Mutex<Option<Instant>>,
    /// Where every invalidation is published.
    channel: String,
    /// The process-local tier, if the store has one.
    #[cfg(feature = "local-cache")]
    local: Option<Arc<super::local::LocalTier>>,
}

/// Never shows the connection (its URL may hold a password).
impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.keys.prefix())
            .field("ttl_ms", &self.ttl_ms)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisCache {
    /// Sets up the connection manager (without waiting for Redis: a store
    /// starts, and reads from the database, while Redis is down), probes
    /// Redis once so a wrong address shows in the logs at start, and starts
    /// the task that retries pending invalidations.
    pub(crate) async fn connect(url: &SecretString, s: &CacheSettings) -> Result<Arc<Self>> {
        let conn = crate::redis_conn::manager(url.expose_secret(), s.timeout)?;
        let cache = Arc::new(RedisCache {
            conn,
            keys: Keys::new(&s.prefix),
            ttl_ms: millis(s.ttl).max(1),
            timeout: s.timeout,
            counters: Arc::default(),
            scripts: Scripts {
                follow: Script::new(FOLLOW),
                fill: Script::new(FILL),
                fill_key: Script::new(FILL_KEY),
                fill_via_index: Script::new(FILL_VIA_INDEX),
                invalidate: Script::new(INVALIDATE),
                user_deleted: Script::new(USER_DELETED),
                verify: Script::new(super::verify::VERIFY),
                seed: Script::new(super::verify::SEED),
            },
            pending: Mutex::default(),
            flushing: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            last_warn: Mutex::new(None),
            channel: invalidation_channel(&s.prefix),
            #[cfg(feature = "local-cache")]
            local: s
                .local()
                .map(|l| Arc::new(super::local::LocalTier::new(l, &s.prefix))),
        });
        #[cfg(feature = "local-cache")]
        if let Some(local) = &cache.local {
            let client = ::redis::Client::open(url.expose_secret()).map_err(|_| {
                crate::error::Error::Config(
                    "the Redis URL is not valid (expected redis://host[:port][/db] or rediss://…)"
                        .into(),
                )
            })?;
            tokio::spawn(super::local::subscriber(
                Arc::downgrade(local),
                client,
                cache.channel.clone(),
                s.timeout,
            ));
        }
        // The first call also connects: give it the connection timeout.
        let mut conn = cache.conn.clone();
        let ping = cmd("PING");
        let first = s.timeout.max(Duration::from_secs(1));
        cache
            .call_within(first, ping.query_async::<String>(&mut conn))
            .await;
        tokio::spawn(flusher(Arc::downgrade(&cache)));
        Ok(cache)
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The local tier, when it may serve: the store has one, Redis is not
    /// being skipped and no invalidation of this process is pending.
    #[cfg(feature = "local-cache")]
    pub(crate) fn local(&self) -> Option<&super::local::LocalTier> {
        let tier = self.local.as_deref()?;
        (tier.live() && !self.skipping() && self.counters.pending.load(Ordering::Relaxed) == 0)
            .then_some(tier)
    }

    /// The local tier, whether or not it may serve now.
    #[cfg(feature = "local-cache")]
    pub(crate) fn local_tier(&self) -> Option<&Arc<super::local::LocalTier>> {
        self.local.as_ref()
    }

    pub(crate) fn count(&self, event: CacheEvent) {
        self.counters.add(event, 1);
    }

    // ---- calls ----

    /// Runs one Redis call under the timeout. `None` if it failed or timed
    /// out (counted, logged, and Redis is then skipped for a moment).
    async fn call<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> Option<T> {
        self.call_within(self.timeout, fut).await
    }

    async fn call_within<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => {
                self.answered();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(&e);
                None
            }
            Err(_) => {
                self.failed(&format_args!("no answer within {limit:?}"));
                None
            }
        }
    }

    async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Option<T> {
        let mut conn = self.conn.clone();
        self.call(command.query_async(&mut conn)).await
    }

    fn now_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }

    fn skipping(&self) -> bool {
        self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed)
    }

    fn answered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                target: "dreamnet_db::cache",
                "Redis cache reachable again"
            );
        }
    }

    fn failed(&self, why: &dyn fmt::Display) {
        self.count(CacheEvent::Error);
        self.skip_until_ms
            .store(self.now_ms() + millis(COOLDOWN), Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = lock(&self.last_warn);
        if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(
                target: "dreamnet_db::cache",
                error = %why,
                "Redis cache call failed; reading from the database until Redis answers"
            );
        } else {
            tracing::debug!(target: "dreamnet_db::cache", error = %why, "Redis cache call failed");
        }
    }

    /// Whether the cache may be used now: Redis is not being skipped and
    /// nothing is pending (flushing it first if it can).
    async fn ready(&self) -> bool {
        if self.skipping() {
            return false;
        }
        if self.counters.pending.load(Ordering::Relaxed) == 0 {
            return true;
        }
        match self.flushing.try_lock() {
            Ok(_guard) => self.flush_locked().await,
            Err(_) => false,
        }
    }

    // ---- reads and fills ----

    /// `GET key`.
    pub(crate) async fn get(&self, key: &str) -> Lookup<String> {
        if !self.ready().await {
            return Lookup::Down;
        }
        let mut get = cmd("GET");
        get.arg(key);
        match self.query::<Option<String>>(&get).await {
            Some(Some(v)) => Lookup::Hit(v),
            Some(None) => Lookup::Miss,
            None => Lookup::Down,
        }
    }

    /// The id an index entry holds, and the record (under `record_prefix`
    /// and that id) if it is cached, in one round trip.
    pub(crate) async fn follow(
        &self,
        index: &str,
        record_prefix: &str,
    ) -> Lookup<(Uuid, Option<String>)> {
        if !self.ready().await {
            return Lookup::Down;
        }
        let mut invocation = self.scripts.follow.prepare_invoke();
        invocation.key(index).arg(record_prefix);
        let mut conn = self.conn.clone();
        match self
            .call(invocation.invoke_async::<Vec<String>>(&mut conn))
            .await
        {
            None => Lookup::Down,
            Some(found) => {
                let mut found = found.into_iter();
                match found.next().map(|id| Uuid::try_parse(&id)) {
                    Some(Ok(id)) => Lookup::Hit((id, found.next())),
                    _ => Lookup::Miss,
                }
            }
        }
    }

    /// Takes the lease on `name` (a record, or an index entry) before its
    /// value is read from the database. `None` if another reader holds it
    /// or Redis is unusable: then the reader reads without filling.
    pub(crate) async fn lease(&self, name: &str) -> Option<Lease> {
        if !self.ready().await {
            return None;
        }
        let token = Uuid::new_v4().simple().to_string();
        let mut set = cmd("SET");
        set.arg(lease(name))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(millis(LEASE_TTL));
        match self.query::<Option<String>>(&set).await {
            Some(Some(_)) => Some(Lease {
                name: name.to_owned(),
                token,
            }),
            _ => None,
        }
    }

    /// Writes the record `lease` was taken for, unless an invalidation came
    /// in between. Returns whether it was written.
    pub(crate) async fn fill(&self, lease: Lease, value: &str) -> bool {
        if !self.ready().await {
            return false;
        }
        let mut invocation = self.scripts.fill.prepare_invoke();
        invocation
            .key(&lease.name)
            .key(self::lease(&lease.name))
            .arg(&lease.token)
            .arg(value)
            .arg(self.ttl_ms);
        self.filled(&invocation).await
    }

    /// As [`fill`](Self::fill), for the record of key `key_id` of `user`.
    pub(crate) async fn fill_key(
        &self,
        lease: Lease,
        value: &str,
        key_id: Uuid,
        user: Uuid,
    ) -> bool {
        if !self.ready().await {
            return false;
        }
        let mut invocation = self.scripts.fill_key.prepare_invoke();
        invocation
            .key(&lease.name)
            .key(self::lease(&lease.name))
            .key(self.keys.user_keys(user))
            .key(self.keys.user_deleted(user))
            .arg(&lease.token)
            .arg(value)
            .arg(self.ttl_ms)
            .arg(key_id.simple().to_string());
        self.filled(&invocation).await
    }

    /// Points the index entry `lease` was taken for at `id` and writes the
    /// record `record` (of a key of `key_owner`, if given), unless the
    /// record was invalidated since the lease was taken.
    pub(crate) async fn fill_via_index(
        &self,
        lease: Lease,
        id: Uuid,
        record: &str,
        value: &str,
        key_owner: Option<Uuid>,
    ) -> bool {
        if !self.ready().await {
            return false;
        }
        let mut invocation = self.scripts.fill_via_index.prepare_invoke();
        invocation
            .key(&lease.name)
            .key(self::lease(&lease.name))
            .key(record)
            .key(invalidated(record));
        if let Some(user) = key_owner {
            invocation
                .key(self.keys.user_keys(user))
                .key(self.keys.user_deleted(user));
        }
        invocation
            .arg(&lease.token)
            .arg(id.simple().to_string())
            .arg(value)
            .arg(self.ttl_ms);
        self.filled(&invocation).await
    }

    async fn filled(&self, invocation: &::redis::ScriptInvocation<'_>) -> bool {
        let mut conn = self.conn.clone();
        match self.call(invocation.invoke_async::<i64>(&mut conn)).await {
            Some(1) => {
                self.count(CacheEvent::Fill);
                true
            }
            Some(_) => {
                self.count(CacheEvent::StaleFillRefused);
                false
            }
            None => false,
        }
    }

    /// Points an index entry at `id`. Index entries are checked on use, so
    /// they need no lease.
    pub(crate) async fn set_index(&self, index: &str, id: Uuid) {
        if !self.ready().await {
            return;
        }
        let mut set = cmd("SET");
        set.arg(index)
            .arg(id.simple().to_string())
            .arg("PX")
            .arg(self.ttl_ms);
        self.query::<()>(&set).await;
    }

    /// Deletes an index entry that leads nowhere any more.
    pub(crate) async fn drop_index(&self, index: &str) {
        if !self.ready().await {
            return;
        }
        let mut del = cmd("DEL");
        del.arg(index);
        self.query::<i64>(&del).await;
    }

    // ---- one-script key verification ----

    /// The key verification script (see `verify.rs`).
    pub(crate) fn scripts_verify(&self) -> &Script {
        &self.scripts.verify
    }

    /// Runs a script invocation under the timeout. `Down` if Redis is
    /// unusable or the call failed.
    pub(crate) async fn invoke(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Lookup<Vec<::redis::Value>> {
        if !self.ready().await {
            return Lookup::Down;
        }
        let mut conn = self.conn.clone();
        match self.call(invocation.invoke_async(&mut conn)).await {
            Some(v) => Lookup::Hit(v),
            None => Lookup::Down,
        }
    }

    /// Writes a credit balance `lease` was taken for, unless an
    /// invalidation came in between or a balance is already there.
    pub(crate) async fn seed_balance(&self, lease: Lease, value: &str, ttl: Duration) -> bool {
        if !self.ready().await {
            return false;
        }
        let mut invocation = self.scripts.seed.prepare_invoke();
        invocation
            .key(&lease.name)
            .key(self::lease(&lease.name))
            .arg(&lease.token)
            .arg(value)
            .arg(millis(ttl));
        let mut conn = self.conn.clone();
        matches!(
            self.call(invocation.invoke_async::<i64>(&mut conn)).await,
            Some(1)
        )
    }

    // ---- invalidation ----

    /// Carries out `what` in Redis now, or keeps it pending until Redis
    /// answers. Call it after the write has committed.
    pub(crate) async fn invalidate(&self, what: Invalidation) {
        // This process's local tier forgets at once; the others learn it
        // from the message the Redis side publishes.
        #[cfg(feature = "local-cache")]
        if let Some(tier) = &self.local {
            tier.invalidate(&what);
        }
        if !self.skipping() && self.apply(std::slice::from_ref(&what)).await {
            self.count(CacheEvent::Invalidation);
            return;
        }
        self.count(CacheEvent::InvalidationDeferred);
        let mut pending = lock(&self.pending);
        if pending.items.len() >= MAX_PENDING {
            pending.items.clear();
            pending.sweep = true;
            pending.sweep_epoch += 1;
        }
        pending.items.insert(what);
        self.counters.set_pending(pending.len());
    }

    /// Carries out `items` in Redis; `false` if any call failed.
    async fn apply(&self, items: &[Invalidation]) -> bool {
        let mut records = Vec::new();
        for item in items {
            match item {
                Invalidation::Record(record) => records.push(record),
                Invalidation::UserDeleted { user, keys } => {
                    let mut invocation = self.scripts.user_deleted.prepare_invoke();
                    invocation
                        .key(self.keys.user(*user))
                        .key(lease(&self.keys.user(*user)))
                        .key(self.keys.user_keys(*user))
                        .key(self.keys.user_deleted(*user))
                        .key(invalidated(&self.keys.user(*user)))
                        .arg(millis(MARKER_TTL))
                        .arg(self.keys.key_record_prefix())
                        .arg(&self.channel);
                    for key in keys {
                        invocation.arg(key.simple().to_string());
                    }
                    let mut conn = self.conn.clone();
                    if self
                        .call(invocation.invoke_async::<i64>(&mut conn))
                        .await
                        .is_none()
                    {
                        return false;
                    }
                }
            }
        }
        for batch in records.chunks(INVALIDATE_BATCH) {
            let mut invocation = self.scripts.invalidate.prepare_invoke();
            for record in batch {
                invocation.key(*record);
            }
            invocation.arg(millis(MARKER_TTL)).arg(&self.channel);
            let mut conn = self.conn.clone();
            if self
                .call(invocation.invoke_async::<i64>(&mut conn))
                .await
                .is_none()
            {
                return false;
            }
        }
        true
    }

    /// Flushes the pending set (waiting for a flush under way). Returns
    /// whether nothing is pending afterwards.
    pub(crate) async fn flush(&self) -> bool {
        let _guard = self.flushing.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> bool {
        let (sweep, epoch, items): (bool, u64, Vec<Invalidation>) = {
            let pending = lock(&self.pending);
            if pending.len() == 0 {
                return true;
            }
            (
                pending.sweep,
                pending.sweep_epoch,
                pending.items.iter().cloned().collect(),
            )
        };
        if sweep && !self.sweep().await {
            return false;
        }
        if !self.apply(&items).await {
            return false;
        }
        let mut pending = lock(&self.pending);
        if sweep && pending.sweep_epoch == epoch {
            pending.sweep = false;
        }
        for item in &items {
            pending.items.remove(item);
        }
        self.counters.add(
            CacheEvent::Invalidation,
            items.len() as u64 + u64::from(sweep),
        );
        self.counters.set_pending(pending.len());
        pending.len() == 0
    }

    /// Deletes every entry under the prefix except tombstones and markers
    /// (which must outlive the leases taken before them).
    async fn sweep(&self) -> bool {
        let pattern = format!("{}*", glob_escape(self.keys.prefix()));
        let tombstones = format!("{}ud:", self.keys.prefix());
        let mut cursor: u64 = 0;
        loop {
            let mut scan = cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let Some((next, found)) = self.query::<(u64, Vec<String>)>(&scan).await else {
                return false;
            };
            let doomed: Vec<&String> = found
                .iter()
                .filter(|k| !k.starts_with(&tombstones) && !k.ends_with(":inv"))
                .collect();
            if !doomed.is_empty() {
                let mut unlink = cmd("UNLINK");
                unlink.arg(doomed);
                if self.query::<i64>(&unlink).await.is_none() {
                    return false;
                }
            }
            if next == 0 {
                // Every local tier empties too.
                let mut publish = cmd("PUBLISH");
                publish.arg(&self.channel).arg("*");
                return self.query::<i64>(&publish).await.is_some();
            }
            cursor = next;
        }
    }
}

/// The channel every invalidation under `prefix` is published on.
pub(crate) fn invalidation_channel(prefix: &str) -> String {
    format!("{prefix}inv")
}

/// `prefix` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Retries pending invalidations until the cache is dropped.
async fn flusher(cache: Weak<RedisCache>) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        if cache.counters.pending.load(Ordering::Relaxed) > 0 {
            cache.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("dreamnet:v1:"), "dreamnet:v1:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
