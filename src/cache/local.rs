//! The process-local tier (feature `local-cache`): users and API key
//! records kept in this process's memory in front of the Redis cache, and
//! emptied by the invalidations Redis pushes.
//!
//! # How it stays honest
//!
//! Every invalidation the Redis cache carries out (the Lua scripts in
//! `client.rs`, from any process, with or without a local tier) publishes
//! the names of the records it dropped on the channel `{prefix}inv`, in the
//! same script as the deletion: a reader that reads Redis after the
//! deletion also comes after the message. Each store with a local tier
//! holds one subscription to that channel and drops the named records as
//! the messages arrive; the store that wrote drops them at once, before it
//! even reaches Redis.
//!
//! Publish/subscribe, not RESP3 `CLIENT TRACKING`: the invalidations the
//! tier needs are exactly the decorator's own, which already run in one
//! place; the message is part of the script that deletes the record, so it
//! cannot be missed by a writer that reached Redis; reads go through Lua
//! scripts and leases whose every write tracking would turn into noise;
//! and it needs no RESP3 connection (any Redis 6.2, any proxy that passes
//! `SUBSCRIBE`).
//!
//! A fill races the messages: a reader that read Redis just before a
//! write's deletion may put the old record in after the message has been
//! handled. Every fill therefore takes a ticket before it reads Redis (the
//! channel's epoch and the count of messages handled), inserts, and then
//! takes its entry out again if a message for that record (or, for a key,
//! its user's deletion) was handled after the ticket, or the channel was
//! lost meanwhile. Messages set, before they remove the entry, the count at
//! which each record was last invalidated (in 4,096 slots, so two records
//! may share one: that only ever refuses a fill).
//!
//! # When the channel is lost
//!
//! The subscription is the tier's licence to serve. When it ends (Redis
//! restarted, the connection was cut or Redis closed it because the
//! subscriber fell behind, which is how Redis drops messages) or a `PING`
//! on it goes unanswered for the Redis timeout (a silent network cut), the
//! tier empties at once and serves nothing, and reads take the Redis path
//! of a store without the tier. It serves again only once a new
//! subscription is confirmed, and only what was read after that. The tier
//! also serves nothing while the Redis cache itself is skipping Redis or has
//! invalidations pending.
//!
//! # What it never holds
//!
//! Only records: the user, and the API key's record (identity, owner,
//! service, status, expiry, permissions, without any hash). Anything a
//! validation must decide atomically across processes (credits, per-key
//! rate limits, usage counters) is not part of those records and is never
//! answered from here: such a rule runs in Redis or PostgreSQL on every
//! validation, after the record has been found. A field that changes on
//! every use must not be added to a cached record.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use moka::sync::Cache;
use uuid::Uuid;

use super::client::Invalidation;
use crate::model::{ApiKey, User};

/// Slots of the per-record invalidation counts.
const SLOTS: usize = 4096;

/// How often the subscription is checked with a `PING`.
const PING_EVERY: Duration = Duration::from_millis(500);

/// The longest wait between two attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The default time a record may stay in the local tier: the backstop if
/// an invalidation were ever missed without the channel noticing.
pub const DEFAULT_LOCAL_CACHE_TTL: Duration = Duration::from_secs(60);

/// The local tier's part of the cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalSettings {
    pub(crate) entries: u64,
    pub(crate) ttl: Duration,
}

/// Counts of the local tier, per store.
#[derive(Debug, Default)]
pub(crate) struct LocalCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) fills_refused: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) messages: AtomicU64,
}

/// What a fill saw before it read Redis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    epoch: u64,
    seen: u64,
}

/// Which slot family a record's id falls in.
#[derive(Clone, Copy)]
enum Kind {
    User,
    Key,
}

fn slot(kind: Kind, id: Uuid) -> usize {
    let v = id.as_u128();
    let folded =
        (v as u64) ^ ((v >> 64) as u64) ^ (kind as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (folded % SLOTS as u64) as usize
}

/// The tier: records, index entries, and what keeps them honest.
pub(crate) struct LocalTier {
    users: Cache<Uuid, Arc<User>>,
    keys: Cache<Uuid, Arc<ApiKey>>,
    /// Redis index names (email, wallet, key hash; never the hash itself)
    /// to the id they lead to. Checked on use, like Redis's.
    ids: Cache<String, Uuid>,
    /// Bumped whenever the tier is emptied (channel lost, found, or a
    /// sweep): fills begun before are taken out again.
    epoch: AtomicU64,
    /// Messages handled (records invalidated), in order.
    seq: AtomicU64,
    /// For each slot, the `seq` of the last record invalidated in it.
    last: Box<[AtomicU64]>,
    /// Whether the subscription is up: the tier's licence to serve.
    live: AtomicBool,
    prefix: String,
    pub(crate) counters: LocalCounters,
}

impl fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTier")
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("users", &self.users.entry_count())
            .field("keys", &self.keys.entry_count())
            .finish_non_exhaustive()
    }
}

impl LocalTier {
    pub(crate) fn new(settings: LocalSettings, prefix: &str) -> Self {
        LocalTier {
            users: Cache::builder()
                .max_capacity(settings.entries)
                .time_to_live(settings.ttl)
                .build(),
            keys: Cache::builder()
                .max_capacity(settings.entries)
                .time_to_live(settings.ttl)
                .build(),
            ids: Cache::builder()
                .max_capacity(settings.entries.saturating_mul(2))
                .time_to_live(settings.ttl)
                .build(),
            epoch: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            last: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            live: AtomicBool::new(false),
            prefix: prefix.to_owned(),
            counters: LocalCounters::default(),
        }
    }

    /// Whether the tier may serve now.
    pub(crate) fn live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// Records and index entries held now (after pending evictions).
    pub(crate) fn entries(&self) -> u64 {
        self.users.run_pending_tasks();
        self.keys.run_pending_tasks();
        self.users.entry_count() + self.keys.entry_count()
    }

    fn hit(&self) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    // ---- reads ----

    pub(crate) fn user(&self, id: Uuid) -> Option<User> {
        if !self.live() {
            return None;
        }
        match self.users.get(&id).filter(|u| u.id == id) {
            Some(user) => {
                self.hit();
                Some(User::clone(&user))
            }
            None => {
                self.miss();
                None
            }
        }
    }

    /// A user through an index entry, if the record still `belongs`.
    pub(crate) fn user_via(&self, index: &str, belongs: impl Fn(&User) -> bool) -> Option<User> {
        if !self.live() {
            return None;
        }
        let found = self
            .ids
            .get(index)
            .and_then(|id| self.users.get(&id).filter(|u| u.id == id))
            .filter(|u| belongs(u));
        match found {
            Some(user) => {
                self.hit();
                Some(User::clone(&user))
            }
            None => {
                self.miss();
                None
            }
        }
    }

    /// A key record through its hash's index entry.
    pub(crate) fn key_via(&self, index: &str) -> Option<ApiKey> {
        if !self.live() {
            return None;
        }
        let found = self
            .ids
            .get(index)
            .and_then(|id| self.keys.get(&id).filter(|k| k.id == id));
        match found {
            Some(key) => {
                self.hit();
                Some(ApiKey::clone(&key))
            }
            None => {
                self.miss();
                None
            }
        }
    }

    // ---- fills ----

    /// Taken before reading Redis; `None` if the tier is not serving (then
    /// nothing is filled).
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        if !self.live() {
            return None;
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let seen = self.seq.load(Ordering::SeqCst);
        // Lost between the two loads: the epoch moved, and the check after
        // the insert refuses the fill.
        Some(Ticket { epoch, seen })
    }

    /// Whether nothing that concerns these slots happened since `t`.
    fn still(&self, t: Ticket, slots: &[usize]) -> bool {
        self.live()
            && self.epoch.load(Ordering::SeqCst) == t.epoch
            && slots
                .iter()
                .all(|&s| self.last[s].load(Ordering::SeqCst) <= t.seen)
    }

    fn refused(&self) {
        self.counters.fills_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fill_user(&self, t: Ticket, user: &User, index: Option<&str>) {
        let id = user.id;
        self.users.insert(id, Arc::new(user.clone()));
        if let Some(index) = index {
            self.ids.insert(index.to_owned(), id);
        }
        if !self.still(t, &[slot(Kind::User, id)]) {
            self.users.invalidate(&id);
            self.refused();
        }
    }

    pub(crate) fn fill_key(&self, t: Ticket, key: &ApiKey, index: &str) {
        let id = key.id;
        self.keys.insert(id, Arc::new(key.clone()));
        self.ids.insert(index.to_owned(), id);
        if !self.still(t, &[slot(Kind::Key, id), slot(Kind::User, key.user_id)]) {
            self.keys.invalidate(&id);
            self.refused();
        }
    }

    // ---- invalidation ----

    fn forget(&self, kind: Kind, id: Uuid) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.last[slot(kind, id)].fetch_max(seq, Ordering::SeqCst);
        match kind {
            Kind::User => self.users.invalidate(&id),
            Kind::Key => self.keys.invalidate(&id),
        }
    }

    /// Empties the tier; fills under way are taken out again.
    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.users.invalidate_all();
        self.keys.invalidate_all();
        self.ids.invalidate_all();
    }

    /// This process's own write: dropped here at once (other processes
    /// learn it from the message the Redis side publishes).
    pub(crate) fn invalidate(&self, what: &Invalidation) {
        match what {
            Invalidation::Record(name) => self.forget_name(name),
            Invalidation::UserDeleted { user, keys } => {
                self.forget(Kind::User, *user);
                for key in keys {
                    self.forget(Kind::Key, *key);
                }
            }
        }
    }

    /// One record name (`{prefix}u:{id}` or `{prefix}kr:{id}`), or `*` for
    /// everything.
    fn forget_name(&self, name: &str) {
        if name == "*" {
            self.clear();
            return;
        }
        let Some(rest) = name.strip_prefix(self.prefix.as_str()) else {
            return;
        };
        let (kind, id) = if let Some(id) = rest.strip_prefix("u:") {
            (Kind::User, id)
        } else if let Some(id) = rest.strip_prefix("kr:") {
            (Kind::Key, id)
        } else {
            return;
        };
        match Uuid::try_parse(id) {
            Ok(id) => self.forget(kind, id),
            // Not a name this crate writes: empty the tier rather than
            // guess.
            Err(_) => self.clear(),
        }
    }

    /// A message from the channel: record names separated by spaces.
    fn handle(&self, payload: &[u8]) {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        match std::str::from_utf8(payload) {
            Ok(text) => text.split(' ').for_each(|name| self.forget_name(name)),
            Err(_) => self.clear(),
        }
    }

    fn lost(&self) {
        let was = self.live.swap(false, Ordering::SeqCst);
        self.clear();
        if was {
            self.counters.resets.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "dreamnet_db::cache",
                "local cache tier emptied: its invalidation channel was lost; reading through Redis until it is back"
            );
        }
    }

    fn found(&self) {
        self.clear();
        self.live.store(true, Ordering::SeqCst);
        tracing::info!(
            target: "dreamnet_db::cache",
            "local cache tier serving: invalidation channel subscribed"
        );
    }
}

/// Holds the subscription while the tier lives: subscribes, handles every
/// message, pings, and on any loss empties the tier and subscribes again.
pub(crate) async fn subscriber(
    tier: Weak<LocalTier>,
    client: ::redis::Client,
    channel: String,
    timeout: Duration,
) {
    let connect_timeout = timeout.max(Duration::from_secs(1));
    let ping_timeout = timeout.max(Duration::from_millis(200));
    let mut backoff = Duration::from_millis(50);
    loop {
        if tier.strong_count() == 0 {
            return;
        }
        let pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub()).await;
        if let Ok(Ok(pubsub)) = pubsub {
            let (mut sink, mut stream) = pubsub.split();
            let subscribed = tokio::time::timeout(connect_timeout, sink.subscribe(&channel)).await;
            if matches!(subscribed, Ok(Ok(()))) {
                let Some(t) = tier.upgrade() else { return };
                t.found();
                drop(t);
                backoff = Duration::from_millis(50);
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let Some(t) = tier.upgrade() else { return };
                            t.handle(msg.get_payload_bytes());
                        }
                        _ = ping.tick() => {
                            if tier.strong_count() == 0 {
                                return;
                            }
                            let pong = tokio::time::timeout(ping_timeout, sink.ping::<::redis::Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
            }
        }
        let Some(t) = tier.upgrade() else { return };
        t.lost();
        drop(t);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
