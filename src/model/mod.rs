//! The records and validated inputs every backend shares.

pub(crate) mod analytics;
mod api_key;
pub(crate) mod audit;
mod email;
mod event;
pub(crate) mod json;
mod key_policy;
mod media;
mod page;
mod roles;
mod session;
mod time;
mod user;
mod wallet;

pub use analytics::{
    ActiveUsers, Breakdown, Cohort, DEFAULT_SEARCH_CANDIDATES, EventSearch, Funnel, FunnelStep,
    MAX_ACTIVITY_BUCKETS, MAX_COHORTS, MAX_FUNNEL_STEPS, MAX_FUNNEL_WINDOW, MAX_PAYLOAD_KEY_LEN,
    MAX_SEARCH_CANDIDATES, MAX_SEARCH_LEN, MAX_SEARCH_WORDS, MAX_TOP, MIN_USER_SEARCH_LEN, Period,
    ROLLUP_GRACE, Retention, SearchCursor, SearchHit, SearchOrder, SearchPage, TypeCount,
    ValueCount,
};
pub use api_key::{
    ApiKey, ApiKeySecret, IssuedKey, KEY_PREFIX, MAX_PRESENTED_KEY_LEN, MAX_SERVICE_LEN,
};
pub(crate) use api_key::{check_service, hash_key, push_hex};
pub(crate) use audit::AuditEntry;
pub use audit::{
    AUDIT_SHARDS, Actor, AuditAction, AuditBreak, AuditBreakReason, AuditEntity, AuditQuery,
    AuditRecord, AuditVerification, MAX_ACTOR_LEN,
};
pub use email::{Email, MAX_EMAIL_LEN};
pub use event::{BucketCount, Event, EventFilter, EventType, NewEvent, TimeBucket, TimeRange};
pub use json::{Json, MAX_JSON_DEPTH};
pub(crate) use key_policy::{
    CreditSpend, check_metadata, check_name, check_permissions, check_rate_limits,
};
pub use key_policy::{
    KeyCheck, KeyCredits, KeyOutcome, KeyPolicy, KeyRateLimit, KeyUsage, KeyVerdict,
    MAX_KEY_METADATA_BYTES, MAX_KEY_NAME_LEN, MAX_KEY_RATE_LIMITS, MAX_PERMISSION_LEN,
    MAX_PERMISSIONS, MAX_RATE_LIMIT_NAME_LEN, Refill, RefillInterval,
};
pub use media::{
    DEFAULT_ALLOWED_TYPES, DEFAULT_MAX_MEDIA_BYTES, MAX_FILE_NAME_BYTES, Media, NewMedia,
};
pub(crate) use media::{MediaFacts, MediaRow, SNIFF_BYTES, sniff};
pub use page::{Cursor, MAX_PAGE_SIZE, Page};
pub(crate) use page::{check_page, page_from};
pub use roles::{APPEND_ONLY_TABLES, RoleNames};
pub use session::Session;
pub(crate) use time::check_timestamp;
pub use time::earliest_timestamp;
pub use user::{JsonChange, NewUser, PassportTier, User, UserUpdate};
pub use wallet::WalletAddress;

/// A fresh time-ordered id (UUIDv7) stamped with `at`. Ids made within
/// one millisecond still increase (a shared counter orders them), so the
/// events of one batch list in the order they were given.
pub(crate) fn new_id(at: chrono::DateTime<chrono::Utc>) -> uuid::Uuid {
    static CONTEXT: std::sync::Mutex<uuid::ContextV7> =
        std::sync::Mutex::new(uuid::ContextV7::new());
    let context = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let ts = uuid::Timestamp::from_unix(
        &*context,
        at.timestamp().max(0) as u64,
        at.timestamp_subsec_nanos(),
    );
    uuid::Uuid::new_v7(ts)
}
