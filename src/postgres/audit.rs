//! The audit log in `audit_log`, chained through `audit_chain_heads`.
//!
//! A record is appended by one statement that moves its chain's head (which
//! locks the head row until the transaction ends, so records of one chain
//! are appended one after the other) and inserts the record with the head's
//! new `seq` and `hash`, the hash computed by PostgreSQL
//! (`sha256(digest || previous hash)`) from the content digest computed
//! here. Always inside the transaction of the change it records.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::PgBackend;
use crate::backend::AuditBackend;
use crate::backend::audit::{ChainHead, entries};
use crate::error::{Error, Result};
use crate::model::audit::{canonical, hex};
use crate::model::{Actor, AuditAction, AuditEntry, AuditQuery, AuditRecord, Cursor, TimeRange};

type SqlUuid = diesel::sql_types::Uuid;

const APPEND: &str = "\
WITH head AS (
    UPDATE audit_chain_heads
       SET seq = seq + 1,
           prev_hash = hash,
           hash = encode(sha256(decode($1, 'hex') || decode(hash, 'hex')), 'hex')
     WHERE shard = $2
 RETURNING seq, prev_hash, hash
)
INSERT INTO audit_log (id, created_at, actor_kind, actor_name, action, entity, entity_id,
                       subject, changes, personal, personal_salt, personal_digest, shard, seq,
                       prev_hash, hash)
SELECT $3, $4, $5, $6, $7, $8, $9, $10, CAST($11 AS jsonb), CAST($12 AS jsonb), $13, $14, $2,
       head.seq, head.prev_hash, head.hash
  FROM head";

const COLUMNS: &str = "id, created_at, actor_kind, actor_name, action, entity, entity_id, \
     subject, changes::text AS changes, personal::text AS personal, personal_salt, \
     personal_digest, shard, seq, prev_hash, hash";

/// Appends `entries` (all of one chain, see `backend::audit::entries`) in
/// the caller's transaction.
pub(super) async fn append(conn: &mut AsyncPgConnection, entries: Vec<AuditEntry>) -> Result<()> {
    for e in entries {
        let inserted = diesel::sql_query(APPEND)
            .bind::<Text, _>(hex(&e.digest))
            .bind::<SmallInt, _>(e.shard)
            .bind::<SqlUuid, _>(e.id)
            .bind::<Timestamptz, _>(e.created_at)
            .bind::<Text, _>(e.actor.kind())
            .bind::<Nullable<Text>, _>(e.actor.name())
            .bind::<Text, _>(e.action.as_str())
            .bind::<Text, _>(e.entity())
            .bind::<Nullable<SqlUuid>, _>(e.entity_id)
            .bind::<Nullable<SqlUuid>, _>(e.subject)
            .bind::<Text, _>(canonical(&e.changes))
            .bind::<Nullable<Text>, _>(e.personal.as_ref().map(canonical))
            .bind::<Nullable<Text>, _>(e.personal_salt.as_ref().map(|s| hex(s)))
            .bind::<Nullable<Text>, _>(e.personal_digest.as_ref().map(|d| hex(d)))
            .execute(conn)
            .await?;
        if inserted != 1 {
            return Err(Error::Database {
                source: format!("the audit log's chain head {} is missing", e.shard).into(),
            });
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct RecordRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    actor_kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    actor_name: Option<String>,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Text)]
    entity: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    entity_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    subject: Option<Uuid>,
    #[diesel(sql_type = Text)]
    changes: String,
    #[diesel(sql_type = Nullable<Text>)]
    personal: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    personal_salt: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    personal_digest: Option<String>,
    #[diesel(sql_type = SmallInt)]
    shard: i16,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    prev_hash: String,
    #[diesel(sql_type = Text)]
    hash: String,
}

/// Bytes from hex; what is not `N` bytes of hex (a value written by hand)
/// reads as all ones, which no hash checks against.
fn unhex<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0xffu8; N];
    if s.len() != 2 * N {
        return out;
    }
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        match std::str::from_utf8(chunk)
            .ok()
            .and_then(|c| u8::from_str_radix(c, 16).ok())
        {
            Some(b) => out[i] = b,
            None => return [0xff; N],
        }
    }
    out
}

/// JSON text as stored; what does not parse (it always does, from
/// `jsonb`) reads as the text itself.
fn value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

impl From<RecordRow> for AuditRecord {
    fn from(r: RecordRow) -> Self {
        AuditRecord {
            id: r.id,
            created_at: r.created_at,
            actor: Actor::from_stored(&r.actor_kind, r.actor_name),
            action: r.action,
            entity: r.entity,
            entity_id: r.entity_id,
            subject: r.subject,
            changes: value(&r.changes),
            personal: r.personal.as_deref().map(value),
            shard: r.shard,
            seq: r.seq,
            prev_hash: unhex(&r.prev_hash),
            hash: unhex(&r.hash),
            personal_digest: r.personal_digest.as_deref().map(unhex),
            personal_salt: r.personal_salt.as_deref().map(unhex),
        }
    }
}

/// The audit log over a PostgreSQL backend's pool.
#[derive(Debug)]
pub(crate) struct PgAudit {
    backend: Arc<PgBackend>,
}

impl PgAudit {
    pub(super) fn new(backend: Arc<PgBackend>) -> Self {
        PgAudit { backend }
    }
}

async fn list(
    conn: &mut AsyncPgConnection,
    query: &AuditQuery,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Vec<AuditRecord>> {
    let mut q =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM audit_log WHERE true")).into_boxed::<Pg>();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if let Some((kind, id)) = query.entity {
        q = q
            .sql(format!(" AND entity_id = {}", next()))
            .bind::<SqlUuid, _>(id)
            .sql(format!(" AND entity = {}", next()))
            .bind::<Text, _>(kind.as_str());
    }
    if let Some(actor) = &query.actor {
        q = q
            .sql(format!(" AND actor_kind = {}", next()))
            .bind::<Text, _>(actor.kind());
        q = match actor.name() {
            Some(name) => q
                .sql(format!(" AND actor_name = {}", next()))
                .bind::<Text, _>(name),
            None => q.sql(" AND actor_name IS NULL"),
        };
    }
    if let Some(action) = query.action {
        q = q
            .sql(format!(" AND action = {}", next()))
            .bind::<Text, _>(action.as_str());
    }
    let TimeRange { since, until } = query.range;
    if let Some(since) = since {
        q = q
            .sql(format!(" AND created_at >= {}", next()))
            .bind::<Timestamptz, _>(since);
    }
    if let Some(until) = until {
        q = q
            .sql(format!(" AND created_at < {}", next()))
            .bind::<Timestamptz, _>(until);
    }
    if let Some(c) = after {
        q = q
            .sql(format!(" AND (created_at, id) < ({}", next()))
            .bind::<Timestamptz, _>(c.created_at)
            .sql(format!(", {})", next()))
            .bind::<SqlUuid, _>(c.id);
    }
    let rows: Vec<RecordRow> = q
        .sql(format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            next()
        ))
        .bind::<BigInt, _>(limit as i64)
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(AuditRecord::from).collect())
}

async fn chain(
    conn: &mut AsyncPgConnection,
    shard: i16,
    since: Option<DateTime<Utc>>,
    after_seq: Option<i64>,
    limit: usize,
) -> Result<Vec<AuditRecord>> {
    let rows: Vec<RecordRow> = match (after_seq, since) {
        (Some(seq), _) => {
            diesel::sql_query(format!(
                "SELECT {COLUMNS} FROM audit_log WHERE shard = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3"
            ))
            .bind::<SmallInt, _>(shard)
            .bind::<BigInt, _>(seq)
            .bind::<BigInt, _>(limit as i64)
            .load(conn)
            .await?
        }
        (None, Some(since)) => {
            diesel::sql_query(format!(
                "SELECT {COLUMNS} FROM audit_log WHERE shard = $1 AND seq >= \
                 (SELECT min(seq) FROM audit_log WHERE shard = $1 AND created_at >= $2) \
                 ORDER BY seq LIMIT $3"
            ))
            .bind::<SmallInt, _>(shard)
            .bind::<Timestamptz, _>(since)
            .bind::<BigInt, _>(limit as i64)
            .load(conn)
            .await?
        }
        (None, None) => {
            diesel::sql_query(format!(
                "SELECT {COLUMNS} FROM audit_log WHERE shard = $1 ORDER BY seq LIMIT $2"
            ))
            .bind::<SmallInt, _>(shard)
            .bind::<BigInt, _>(limit as i64)
            .load(conn)
            .await?
        }
    };
    Ok(rows.into_iter().map(AuditRecord::from).collect())
}

#[derive(QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = SmallInt)]
    shard: i16,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    hash: String,
    #[diesel(sql_type = BigInt)]
    purged_seq: i64,
}

async fn heads(conn: &mut AsyncPgConnection) -> Result<Vec<ChainHead>> {
    let rows: Vec<HeadRow> = diesel::sql_query(
        "SELECT shard, seq, hash, purged_seq FROM audit_chain_heads ORDER BY shard",
    )
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|h| ChainHead {
            shard: h.shard,
            seq: h.seq,
            hash: unhex(&h.hash),
            purged_seq: h.purged_seq,
        })
        .collect())
}

#[derive(QueryableByName)]
struct ShardRow {
    #[diesel(sql_type = SmallInt)]
    shard: i16,
}

#[derive(QueryableByName)]
struct SeqRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// One batch: per chain in shard order (so that two purges lock heads in
/// the same order), the oldest records up to the first made at or after
/// `before`, within what is left of `limit`.
async fn purge(conn: &mut AsyncPgConnection, before: DateTime<Utc>, limit: usize) -> Result<u64> {
    conn.transaction(async move |conn| {
        let mut gone = 0u64;
        let mut first_shard = None;
        // Only chains that still hold records.
        let shards: Vec<ShardRow> = diesel::sql_query(
            "SELECT shard FROM audit_chain_heads WHERE seq > purged_seq ORDER BY shard",
        )
        .load(conn)
        .await?;
        for ShardRow { shard } in shards {
            let left = limit as u64 - gone;
            if left == 0 {
                break;
            }
            let rows: Vec<SeqRow> = diesel::sql_query(
                "SELECT seq, created_at FROM audit_log WHERE shard = $1 ORDER BY seq LIMIT $2",
            )
            .bind::<SmallInt, _>(shard)
            .bind::<BigInt, _>(left as i64)
            .load(conn)
            .await?;
            let Some(last) = rows
                .iter()
                .take_while(|r| r.created_at < before)
                .map(|r| r.seq)
                .last()
            else {
                continue;
            };
            let n = diesel::sql_query("DELETE FROM audit_log WHERE shard = $1 AND seq <= $2")
                .bind::<SmallInt, _>(shard)
                .bind::<BigInt, _>(last)
                .execute(conn)
                .await?;
            diesel::sql_query(
                "UPDATE audit_chain_heads SET purged_seq = greatest(purged_seq, $2) \
                 WHERE shard = $1",
            )
            .bind::<SmallInt, _>(shard)
            .bind::<BigInt, _>(last)
            .execute(conn)
            .await?;
            gone += n as u64;
            first_shard.get_or_insert(shard);
        }
        if let Some(shard) = first_shard {
            // In a chain this transaction already holds, so no purge waits
            // for another's head.
            let mut records = entries(|r| {
                vec![r.entry(
                    AuditAction::AuditPurged,
                    None,
                    serde_json::json!({"count": gone, "before": before}),
                    None,
                )]
            });
            for e in &mut records {
                e.shard = shard;
            }
            append(conn, records).await?;
        }
        Ok(gone)
    })
    .await
}

async fn erase_personal(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<u64> {
    conn.transaction(async move |conn| {
        let n = diesel::sql_query(
            "UPDATE audit_log SET personal = NULL, personal_salt = NULL \
             WHERE subject = $1 AND (personal IS NOT NULL OR personal_salt IS NOT NULL)",
        )
        .bind::<SqlUuid, _>(user_id)
        .execute(conn)
        .await? as u64;
        let records = entries(|r| {
            vec![r.entry(
                AuditAction::PersonalErased,
                Some(user_id),
                serde_json::json!({"records": n}),
                None,
            )]
        });
        append(conn, records).await?;
        Ok(n)
    })
    .await
}

#[async_trait::async_trait]
impl AuditBackend for PgAudit {
    async fn list(
        &self,
        query: &AuditQuery,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let b = &*self.backend;
        on_conn!(b, list, query, after, limit)
    }

    async fn chain(
        &self,
        shard: i16,
        since: Option<DateTime<Utc>>,
        after_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let b = &*self.backend;
        on_conn!(b, chain, shard, since, after_seq, limit)
    }

    async fn heads(&self) -> Result<Vec<ChainHead>> {
        let b = &*self.backend;
        on_conn!(b, heads,)
    }

    async fn purge(&self, before: DateTime<Utc>, limit: usize) -> Result<u64> {
        let b = &*self.backend;
        on_write!(b, purge, before, limit)
    }

    async fn erase_personal(&self, user_id: Uuid) -> Result<u64> {
        let b = &*self.backend;
        on_write!(b, erase_personal, user_id)
    }
}
