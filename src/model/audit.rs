//! The audit log's records: who changed what, when, chained by hashes so
//! that a modified or deleted record is detectable.
//!
//! # The chain
//!
//! Records are spread over [`AUDIT_SHARDS`] chains by the entity they are
//! about (`shard = entity id mod AUDIT_SHARDS`), so that writes about
//! different entities do not wait for one another. Within a chain each
//! record has a sequence number one past the previous record's and
//!
//! ```text
//! hash = SHA-256(content digest || previous record's hash)
//! content digest = SHA-256(canonical JSON of id, time, actor, action,
//!                          entity, entity id, subject, changes,
//!                          personal digest)
//! personal digest = SHA-256(salt || canonical JSON of the personal values)
//! ```
//!
//! The personal values (a user's email, wallet address and documents) are
//! hashed through a salted digest, so erasing them (and the salt) leaves
//! every hash checkable.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ApiKey, Cursor, TimeRange, User};
use crate::error::{Error, Field};

/// How many hash chains the audit log is spread over.
///
/// Two writers wait for each other (for the length of a commit) only when
/// the entities they change fall in the same chain: with 256 chains, eight
/// writers at once on different entities meet about one time in ten.
pub const AUDIT_SHARDS: i16 = 256;

/// The longest service or admin name an [`Actor`] takes, in characters.
pub const MAX_ACTOR_LEN: usize = 100;

/// The hash a chain starts from: 32 zero bytes.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// Who made a change, as the caller says: recorded with every audit
/// record. A change made without saying is recorded with
/// [`Actor::Unknown`], never refused.
///
/// ```
/// use dreamnet_db::Actor;
///
/// let billing = Actor::service("billing")?;
/// assert_eq!(billing.to_string(), "service:billing");
/// assert!(Actor::service("").is_err());
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Actor {
    /// Nobody said.
    #[default]
    Unknown,
    /// The system itself (a scheduled job, a migration).
    System,
    /// A user, by id.
    User(Uuid),
    /// A service, by name.
    Service(String),
    /// An administrator, by name.
    Admin(String),
}

impl Actor {
    /// A user acting on their own behalf.
    pub fn user(id: Uuid) -> Actor {
        Actor::User(id)
    }

    /// A service, by name: 1 to [`MAX_ACTOR_LEN`] characters, no control
    /// characters; else `InvalidInput` (field actor).
    pub fn service(name: impl Into<String>) -> Result<Actor, Error> {
        Ok(Actor::Service(check_name(name.into())?))
    }

    /// An administrator, by name (same rules as [`Actor::service`]).
    pub fn admin(name: impl Into<String>) -> Result<Actor, Error> {
        Ok(Actor::Admin(check_name(name.into())?))
    }

    /// The system itself.
    pub fn system() -> Actor {
        Actor::System
    }

    /// The kind as stored: `unknown`, `system`, `user`, `service`, `admin`.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Unknown => "unknown",
            Actor::System => "system",
            Actor::User(_) => "user",
            Actor::Service(_) => "service",
            Actor::Admin(_) => "admin",
        }
    }

    /// The name or id as stored, for the kinds that have one.
    pub fn name(&self) -> Option<String> {
        match self {
            Actor::Unknown | Actor::System => None,
            Actor::User(id) => Some(id.to_string()),
            Actor::Service(n) | Actor::Admin(n) => Some(n.clone()),
        }
    }

    /// The actor a stored `(kind, name)` pair stands for. Pairs this crate
    /// did not write are kept as they are (a service of that name, or
    /// unknown), never refused: the log is read faithfully.
    pub(crate) fn from_stored(kind: &str, name: Option<String>) -> Actor {
        match (kind, name) {
            ("system", _) => Actor::System,
            ("user", Some(n)) => match n.parse() {
                Ok(id) => Actor::User(id),
                Err(_) => Actor::Service(n),
            },
            ("service", Some(n)) => Actor::Service(n),
            ("admin", Some(n)) => Actor::Admin(n),
            _ => Actor::Unknown,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{}:{n}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

fn check_name(name: String) -> Result<String, Error> {
    let len = name.chars().count();
    if len == 0 || len > MAX_ACTOR_LEN {
        return Err(Error::invalid(
            Field::Actor,
            format!("must be 1 to {MAX_ACTOR_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            Field::Actor,
            "must not contain control characters",
        ));
    }
    Ok(name)
}

/// What an audit record says happened. Stored as the string
/// [`as_str`](AuditAction::as_str) gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditAction {
    /// `user.created`
    UserCreated,
    /// `user.updated`: which fields, old and new values.
    UserUpdated,
    /// `user.deleted`
    UserDeleted,
    /// `api_key.issued`
    KeyIssued,
    /// `api_key.revoked`
    KeyRevoked,
    /// `api_key.rotated`: recorded on the old key, naming the new one.
    KeyRotated,
    /// `api_key.disabled`
    KeyDisabled,
    /// `api_key.enabled`
    KeyEnabled,
    /// `api_key.permissions_set`
    KeyPermissionsSet,
    /// `api_key.details_set`: name and metadata.
    KeyDetailsSet,
    /// `api_key.credits_set`
    KeyCreditsSet,
    /// `api_key.rate_limits_set`
    KeyRateLimitsSet,
    /// `sessions.ended`: every session of a user ended ("log out
    /// everywhere"), in PostgreSQL sessions.
    SessionsEnded,
    /// `media.uploaded`: a media file's upload completed.
    MediaUploaded,
    /// `media.deleted`: a complete media file deleted.
    MediaDeleted,
    /// `audit.purged`: a batch of records older than a cut-off deleted.
    AuditPurged,
    /// `audit.personal_erased`: a user's personal values erased from the
    /// log.
    PersonalErased,
}

impl AuditAction {
    /// Every action, in the order above.
    pub const ALL: [AuditAction; 17] = [
        AuditAction::UserCreated,
        AuditAction::UserUpdated,
        AuditAction::UserDeleted,
        AuditAction::KeyIssued,
        AuditAction::KeyRevoked,
        AuditAction::KeyRotated,
        AuditAction::KeyDisabled,
        AuditAction::KeyEnabled,
        AuditAction::KeyPermissionsSet,
        AuditAction::KeyDetailsSet,
        AuditAction::KeyCreditsSet,
        AuditAction::KeyRateLimitsSet,
        AuditAction::SessionsEnded,
        AuditAction::MediaUploaded,
        AuditAction::MediaDeleted,
        AuditAction::AuditPurged,
        AuditAction::PersonalErased,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::UserCreated => "user.created",
            AuditAction::UserUpdated => "user.updated",
            AuditAction::UserDeleted => "user.deleted",
            AuditAction::KeyIssued => "api_key.issued",
            AuditAction::KeyRevoked => "api_key.revoked",
            AuditAction::KeyRotated => "api_key.rotated",
            AuditAction::KeyDisabled => "api_key.disabled",
            AuditAction::KeyEnabled => "api_key.enabled",
            AuditAction::KeyPermissionsSet => "api_key.permissions_set",
            AuditAction::KeyDetailsSet => "api_key.details_set",
            AuditAction::KeyCreditsSet => "api_key.credits_set",
            AuditAction::KeyRateLimitsSet => "api_key.rate_limits_set",
            AuditAction::SessionsEnded => "sessions.ended",
            AuditAction::MediaUploaded => "media.uploaded",
            AuditAction::MediaDeleted => "media.deleted",
            AuditAction::AuditPurged => "audit.purged",
            AuditAction::PersonalErased => "audit.personal_erased",
        }
    }

    fn entity(self) -> AuditEntity {
        match self {
            AuditAction::UserCreated
            | AuditAction::UserUpdated
            | AuditAction::UserDeleted
            | AuditAction::SessionsEnded
            | AuditAction::PersonalErased => AuditEntity::User,
            AuditAction::AuditPurged => AuditEntity::AuditLog,
            AuditAction::MediaUploaded | AuditAction::MediaDeleted => AuditEntity::Media,
            _ => AuditEntity::ApiKey,
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of entity an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditEntity {
    /// `user`
    User,
    /// `api_key`
    ApiKey,
    /// `media`: a media file.
    Media,
    /// `audit_log`: the log itself (purges).
    AuditLog,
}

impl AuditEntity {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEntity::User => "user",
            AuditEntity::ApiKey => "api_key",
            AuditEntity::Media => "media",
            AuditEntity::AuditLog => "audit_log",
        }
    }
}

impl fmt::Display for AuditEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record of the audit log, as stored.
///
/// Never holds an API key (plain or hashed), a session token or a
/// password. A user's email, wallet address and documents are held apart,
/// in [`personal`](AuditRecord::personal), which
/// [`Audit::erase_personal`](crate::Audit::erase_personal) empties.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// The record's id (time-ordered).
    pub id: Uuid,
    /// When the change was made.
    pub created_at: DateTime<Utc>,
    /// Who made it.
    pub actor: Actor,
    /// What was done (an [`AuditAction`]'s name, or whatever another
    /// writer stored).
    pub action: String,
    /// The kind of entity changed (an [`AuditEntity`]'s name).
    pub entity: String,
    /// The entity's id.
    pub entity_id: Option<Uuid>,
    /// The user whose personal values the record holds, if any.
    pub subject: Option<Uuid>,
    /// What changed, without personal values: field names, and old and new
    /// values of the other fields.
    pub changes: Value,
    /// The personal values that changed (`{field: {"old": …, "new": …}}`
    /// for updates, `{field: value}` for creations); `None` if there were
    /// none or they were erased.
    pub personal: Option<Value>,
    /// Which hash chain the record is in (`0..AUDIT_SHARDS`).
    pub shard: i16,
    /// Its place in that chain, from 1.
    pub seq: i64,
    /// The previous record's hash in the chain.
    pub prev_hash: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
    pub(crate) personal_digest: Option<[u8; 32]>,
    pub(crate) personal_salt: Option<[u8; 16]>,
}

impl AuditRecord {
    /// The hash the record's content gives chained to `prev`.
    pub(crate) fn expected_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        chain_hash(&self.content_digest(), prev)
    }

    pub(crate) fn content_digest(&self) -> [u8; 32] {
        content_digest(ContentRef {
            id: self.id,
            created_at: self.created_at,
            actor: &self.actor,
            action: &self.action,
            entity: &self.entity,
            entity_id: self.entity_id,
            subject: self.subject,
            changes: &self.changes,
            personal_digest: self.personal_digest.as_ref(),
        })
    }

    /// Whether the personal values still there match the digest the
    /// chain covers.
    pub(crate) fn personal_intact(&self) -> bool {
        match (&self.personal, &self.personal_salt, &self.personal_digest) {
            (Some(p), Some(salt), Some(d)) => personal_digest(salt, p) == *d,
            (None, None, _) => true,
            _ => false,
        }
    }

    /// The record's position in the `(created_at, id)` order.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, self.id)
    }
}

/// A record about to be written. Its `shard`, `seq` and hashes are given
/// by the chain it joins.
#[derive(Debug, Clone)]
pub(crate) struct AuditEntry {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub actor: Actor,
    pub action: AuditAction,
    pub entity_id: Option<Uuid>,
    pub subject: Option<Uuid>,
    pub changes: Value,
    pub personal: Option<Value>,
    pub personal_salt: Option<[u8; 16]>,
    pub personal_digest: Option<[u8; 32]>,
    pub shard: i16,
    pub digest: [u8; 32],
}

impl AuditEntry {
    /// The entry for `action` on `entity_id`, made by `actor` at `at`.
    pub(crate) fn new(
        id: Uuid,
        at: DateTime<Utc>,
        actor: Actor,
        action: AuditAction,
        entity_id: Option<Uuid>,
        changes: Value,
        personal: Option<(Uuid, Value)>,
    ) -> AuditEntry {
        let created_at = truncate_micros(at);
        let (subject, personal, salt, pdigest) = match personal {
            Some((subject, value)) => {
                let mut salt = [0u8; 16];
                // A salt that failed to be random is still a salt: the
                // digest stays checkable, only less opaque once erased.
                let _ = getrandom::fill(&mut salt);
                let d = personal_digest(&salt, &value);
                (Some(subject), Some(value), Some(salt), Some(d))
            }
            None => (None, None, None, None),
        };
        let entity = action.entity().as_str();
        let digest = content_digest(ContentRef {
            id,
            created_at,
            actor: &actor,
            action: action.as_str(),
            entity,
            entity_id,
            subject,
            changes: &changes,
            personal_digest: pdigest.as_ref(),
        });
        AuditEntry {
            id,
            created_at,
            actor,
            action,
            entity_id,
            subject,
            changes,
            personal,
            personal_salt: salt,
            personal_digest: pdigest,
            shard: shard_of(entity_id),
            digest,
        }
    }

    /// The stored name of the entity kind.
    pub(crate) fn entity(&self) -> &'static str {
        self.action.entity().as_str()
    }

    /// The record this entry becomes after `prev` (seq, hash) in its chain.
    pub(crate) fn into_record(self, shard: i16, prev_seq: i64, prev: [u8; 32]) -> AuditRecord {
        AuditRecord {
            id: self.id,
            created_at: self.created_at,
            actor: self.actor,
            action: self.action.as_str().to_owned(),
            entity: self.action.entity().as_str().to_owned(),
            entity_id: self.entity_id,
            subject: self.subject,
            changes: self.changes,
            personal: self.personal,
            shard,
            seq: prev_seq + 1,
            prev_hash: prev,
            hash: chain_hash(&self.digest, &prev),
            personal_digest: self.personal_digest,
            personal_salt: self.personal_salt,
        }
    }
}

/// The chain an entity's records go to.
pub(crate) fn shard_of(entity_id: Option<Uuid>) -> i16 {
    match entity_id {
        // The id's last bytes: random in v4 and v7 ids.
        Some(id) => (id.as_u128() % AUDIT_SHARDS as u128) as i16,
        None => 0,
    }
}

pub(crate) fn chain_hash(digest: &[u8; 32], prev: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(digest);
    h.update(prev);
    h.finalize().into()
}

fn personal_digest(salt: &[u8; 16], personal: &Value) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(canonical(personal).as_bytes());
    h.finalize().into()
}

struct ContentRef<'a> {
    id: Uuid,
    created_at: DateTime<Utc>,
    actor: &'a Actor,
    action: &'a str,
    entity: &'a str,
    entity_id: Option<Uuid>,
    subject: Option<Uuid>,
    changes: &'a Value,
    personal_digest: Option<&'a [u8; 32]>,
}

fn content_digest(c: ContentRef<'_>) -> [u8; 32] {
    let content = serde_json::json!([
        "dreamnet-audit-v1",
        c.id.to_string(),
        c.created_at.timestamp_micros(),
        c.actor.kind(),
        c.actor.name(),
        c.action,
        c.entity,
        c.entity_id.map(|i| i.to_string()),
        c.subject.map(|i| i.to_string()),
        canonical(c.changes),
        c.personal_digest.map(|d| hex(d)),
    ]);
    Sha256::digest(canonical(&content).as_bytes()).into()
}

/// JSON text with every object's keys sorted, whatever order they were
/// built or stored in (`jsonb` reorders them).
pub(crate) fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    super::push_hex(&mut s, bytes);
    s
}

fn truncate_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

// ---- what each change records ----

fn personal_of(user: &User) -> serde_json::Map<String, Value> {
    let mut p = serde_json::Map::new();
    if let Some(e) = &user.email {
        p.insert("email".into(), Value::String(e.as_str().to_owned()));
    }
    if let Some(w) = &user.wallet_address {
        p.insert(
            "wallet_address".into(),
            Value::String(w.as_str().to_owned()),
        );
    }
    p.insert("metadata".into(), json_value(&user.metadata));
    p.insert("preferences".into(), json_value(&user.preferences));
    p
}

fn json_value(j: &super::Json) -> Value {
    serde_json::from_str(j.as_str()).unwrap_or(Value::Null)
}

/// `user.created`: the tier in the clear, the rest personal.
pub(crate) fn user_created(user: &User) -> (Value, Option<(Uuid, Value)>) {
    let personal = personal_of(user);
    let mut fields: Vec<&str> = personal.keys().map(String::as_str).collect();
    fields.push("passport_tier");
    fields.sort();
    (
        serde_json::json!({"fields": fields, "passport_tier": user.passport_tier.as_str()}),
        Some((user.id, Value::Object(personal))),
    )
}

/// `user.updated`: the names of the fields that changed; the tier's old
/// and new values in the clear, the personal fields' apart.
pub(crate) fn user_updated(old: &User, new: &User) -> (Value, Option<(Uuid, Value)>) {
    let (before, after) = (personal_of(old), personal_of(new));
    let mut fields = Vec::new();
    let mut personal = serde_json::Map::new();
    for name in ["email", "metadata", "preferences", "wallet_address"] {
        let (o, n) = (before.get(name), after.get(name));
        if o != n {
            fields.push(name);
            personal.insert(
                name.into(),
                serde_json::json!({"old": o.cloned().unwrap_or(Value::Null), "new": n.cloned().unwrap_or(Value::Null)}),
            );
        }
    }
    let mut changes = serde_json::Map::new();
    if old.passport_tier != new.passport_tier {
        fields.push("passport_tier");
        changes.insert(
            "passport_tier".into(),
            serde_json::json!({"old": old.passport_tier.as_str(), "new": new.passport_tier.as_str()}),
        );
    }
    fields.sort();
    changes.insert("fields".into(), serde_json::json!(fields));
    let personal = (!personal.is_empty()).then_some((new.id, Value::Object(personal)));
    (Value::Object(changes), personal)
}

/// `api_key.issued`: what the key allows, never its secret, hash or
/// display prefix.
pub(crate) fn key_issued(key: &ApiKey) -> Value {
    serde_json::json!({
        "user_id": key.user_id,
        "service": key.service,
        "expires_at": key.expires_at,
        "policy": key.policy,
    })
}

/// `media.uploaded`: the file's owner, type and size; its name (which may
/// say who the file is about) is personal when it has an owner.
pub(crate) fn media_uploaded(m: &super::Media) -> (Value, Option<(Uuid, Value)>) {
    let mut changes = serde_json::json!({
        "owner_id": m.owner_id,
        "content_type": m.content_type,
        "size_bytes": m.size_bytes,
    });
    match m.owner_id {
        Some(owner) => (
            changes,
            Some((owner, serde_json::json!({"file_name": m.file_name}))),
        ),
        None => {
            changes["file_name"] = Value::String(m.file_name.clone());
            (changes, None)
        }
    }
}

/// A key policy setter's new values.
pub(crate) fn key_change(action: AuditAction, key: &ApiKey) -> Value {
    let p = &key.policy;
    match action {
        AuditAction::KeyRevoked => serde_json::json!({"revoked_at": key.revoked_at}),
        AuditAction::KeyDisabled | AuditAction::KeyEnabled => {
            serde_json::json!({"disabled_at": p.disabled_at})
        }
        AuditAction::KeyPermissionsSet => serde_json::json!({"permissions": p.permissions}),
        AuditAction::KeyDetailsSet => {
            serde_json::json!({"name": p.name, "metadata": p.metadata})
        }
        AuditAction::KeyCreditsSet => serde_json::json!({"credits": p.credits}),
        AuditAction::KeyRateLimitsSet => serde_json::json!({"rate_limits": p.rate_limits}),
        _ => serde_json::json!({}),
    }
}

/// Which records [`Audit::list`](crate::Audit::list) returns: every filter
/// given must hold.
///
/// ```
/// use dreamnet_db::{Actor, AuditAction, AuditEntity, AuditQuery};
///
/// let q = AuditQuery::new()
///     .entity(AuditEntity::ApiKey, uuid::Uuid::nil())
///     .actor(Actor::service("billing")?)
///     .action(AuditAction::KeyRevoked);
/// # let _ = q;
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    /// Records about this entity only.
    pub entity: Option<(AuditEntity, Uuid)>,
    /// Records made by this actor only.
    pub actor: Option<Actor>,
    /// Records of this action only.
    pub action: Option<AuditAction>,
    /// Records made in this range only.
    pub range: TimeRange,
}

impl AuditQuery {
    /// Every record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only records about this entity.
    pub fn entity(mut self, kind: AuditEntity, id: Uuid) -> Self {
        self.entity = Some((kind, id));
        self
    }

    /// Only records made by this actor.
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Only records of this action.
    pub fn action(mut self, action: AuditAction) -> Self {
        self.action = Some(action);
        self
    }

    /// Only records made in `range`.
    pub fn range(mut self, range: TimeRange) -> Self {
        self.range = range;
        self
    }

    /// Whether `r` passes every filter.
    pub(crate) fn matches(&self, r: &AuditRecord) -> bool {
        self.entity
            .is_none_or(|(k, id)| r.entity == k.as_str() && r.entity_id == Some(id))
            && self.actor.as_ref().is_none_or(|a| *a == r.actor)
            && self.action.is_none_or(|a| r.action == a.as_str())
            && self.range.contains(r.created_at)
    }
}

/// What [`Audit::verify`](crate::Audit::verify) found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditVerification {
    /// How many records were checked.
    pub checked: u64,
    /// The first break found, if any: chains are walked in shard order,
    /// each from its oldest record in range.
    pub first_break: Option<AuditBreak>,
}

impl AuditVerification {
    /// `true` if no break was found.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// A place where the audit log's chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditBreak {
    /// The chain.
    pub shard: i16,
    /// The sequence number of the record where it breaks (for a missing
    /// newest record: the sequence number the chain's head says it has).
    pub seq: i64,
    /// The record's id, if there is a record there.
    pub id: Option<Uuid>,
    /// What is wrong.
    pub reason: AuditBreakReason,
}

/// Why a chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditBreakReason {
    /// The record's content does not give its hash: it was modified.
    Modified,
    /// The record's personal values do not match the digest the chain
    /// covers: they were modified.
    PersonalModified,
    /// The record does not follow the previous one (a sequence gap, or its
    /// previous hash is not the previous record's hash): records between
    /// were deleted or replaced.
    Missing,
    /// The chain's newest records are gone: the head is ahead of them.
    Truncated,
}

impl fmt::Display for AuditBreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuditBreakReason::Modified => "the record was modified",
            AuditBreakReason::PersonalModified => "the record's personal values were modified",
            AuditBreakReason::Missing => "records before this one are missing",
            AuditBreakReason::Truncated => "the newest records of the chain are missing",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_keys_at_every_depth() {
        let v = serde_json::json!({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": null}});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":null,"z":[1,{"x":3,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn an_entry_hashes_as_its_record_verifies() {
        let at = Utc::now();
        let e = AuditEntry::new(
            Uuid::now_v7(),
            at,
            Actor::system(),
            AuditAction::UserDeleted,
            Some(Uuid::now_v7()),
            serde_json::json!({"k": 1}),
            Some((Uuid::nil(), serde_json::json!({"email": "a@b.c"}))),
        );
        let r = e.into_record(3, 0, GENESIS);
        assert_eq!(r.expected_hash(&GENESIS), r.hash);
        assert!(r.personal_intact());
        let mut erased = r.clone();
        erased.personal = None;
        erased.personal_salt = None;
        assert_eq!(erased.expected_hash(&GENESIS), r.hash);
        let mut changed = r.clone();
        changed.changes = serde_json::json!({"k": 2});
        assert_ne!(changed.expected_hash(&GENESIS), r.hash);
    }

    #[test]
    fn actor_names_are_checked() {
        assert!(Actor::admin("x".repeat(MAX_ACTOR_LEN)).is_ok());
        assert!(Actor::admin("x".repeat(MAX_ACTOR_LEN + 1)).is_err());
        assert!(Actor::service("a\nb").is_err());
        let id = Uuid::now_v7();
        assert_eq!(
            Actor::from_stored("user", Some(id.to_string())),
            Actor::user(id)
        );
    }
}
