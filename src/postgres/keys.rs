//! Queries on `api_keys`. The hash column is written, and matched, but never
//! read back.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use std::collections::BTreeSet;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, Int8, Nullable, Text, Timestamptz};

use super::audit::append;
use super::errors::classify;
use super::schema::{api_key_policies, api_keys};
use crate::backend::audit::Recorder;
use crate::backend::audit::{entries, rotated};
use crate::backend::{CreditState, NewKeyRow, UsageBatch};
use crate::error::{Entity, Error, Field, Result};
use crate::model::AuditAction;
use crate::model::audit::key_issued;
use crate::model::{
    ApiKey, CreditSpend, Json, KeyCredits, KeyOutcome, KeyPolicy, KeyRateLimit, KeyUsage, Refill,
    RefillInterval, TimeBucket, TimeRange,
};

diesel::define_sql_function! {
    /// `dreamnet_spend_key_credits` (see the migration that creates it).
    fn dreamnet_spend_key_credits(key: diesel::sql_types::Uuid, cost: Int8, now: Timestamptz) -> Nullable<Int8>;
}

diesel::define_sql_function! {
    /// PostgreSQL's `set_config(name, value, is_local)`.
    fn set_config(name: diesel::sql_types::Text, value: diesel::sql_types::Text, is_local: diesel::sql_types::Bool) -> diesel::sql_types::Text;
}

/// What a revoked key's `hashed_key` starts with, so that services matching
/// `hashed_key = sha256(key)` themselves no longer find it.
pub(super) const REVOKED: &str = "revoked:";

/// An `api_keys` row without its hash.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
struct KeyRow {
    id: Uuid,
    user_id: Uuid,
    service: String,
    key_prefix: Option<String>,
    created_at: DateTime<Utc>,
    last_used: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        ApiKey {
            id: r.id,
            user_id: r.user_id,
            service: r.service,
            prefix: r.key_prefix,
            created_at: r.created_at,
            last_used: r.last_used,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            policy: KeyPolicy::default(),
        }
    }
}

/// An `api_key_policies` row, without its key id.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = api_key_policies, check_for_backend(diesel::pg::Pg))]
struct PolicyRow {
    name: Option<String>,
    metadata: Option<Json>,
    permissions: Vec<String>,
    disabled_at: Option<DateTime<Utc>>,
    credits: Option<i64>,
    refill_amount: Option<i64>,
    refill_interval: Option<String>,
    last_refill_at: Option<DateTime<Utc>>,
    rate_limits: Json,
}

fn unreadable(what: &str) -> Error {
    Error::Database {
        source: format!("api_key_policies holds an unreadable {what}").into(),
    }
}

impl PolicyRow {
    fn into_policy(self) -> Result<KeyPolicy> {
        let refill = match (self.refill_amount, self.refill_interval.as_deref()) {
            (Some(amount), Some(interval)) => Some(Refill {
                amount,
                interval: RefillInterval::from_sql(interval)
                    .ok_or_else(|| unreadable("refill interval"))?,
            }),
            _ => None,
        };
        Ok(KeyPolicy {
            name: self.name,
            metadata: self.metadata,
            permissions: self.permissions.into_iter().collect(),
            disabled_at: self.disabled_at,
            credits: self.credits.map(|remaining| KeyCredits {
                remaining,
                refill,
                refilled_at: self.last_refill_at,
            }),
            rate_limits: self
                .rate_limits
                .deserialize()
                .map_err(|_| unreadable("rate limit list"))?,
        })
    }
}

/// A key and its policy row (if it has one) as one record.
fn with_policy((key, policy): (KeyRow, Option<PolicyRow>)) -> Result<ApiKey> {
    let mut key = ApiKey::from(key);
    if let Some(policy) = policy {
        key.policy = policy.into_policy()?;
    }
    Ok(key)
}

/// The full record of every key in `query`.
macro_rules! select_keys {
    ($query:expr) => {
        $query
            .left_join(api_key_policies::table)
            .select((KeyRow::as_select(), Option::<PolicyRow>::as_select()))
    };
}

/// A new `api_keys` row, hash included.
#[derive(Debug, Insertable)]
#[diesel(table_name = api_keys, treat_none_as_default_value = false)]
pub(super) struct KeyInsert<'a> {
    id: Uuid,
    user_id: Uuid,
    service: &'a str,
    hashed_key: &'a str,
    key_prefix: Option<&'a str>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a NewKeyRow> for KeyInsert<'a> {
    fn from(row: &'a NewKeyRow) -> Self {
        KeyInsert {
            id: row.key.id,
            user_id: row.key.user_id,
            service: &row.key.service,
            hashed_key: &row.hash,
            key_prefix: row.key.prefix.as_deref(),
            created_at: row.key.created_at,
            expires_at: row.key.expires_at,
        }
    }
}

/// Inserts the key, and its policy if it has one (in the caller's
/// transaction, or in one of its own).
/// Issues a key: [`insert_key`] and its `api_key.issued` record.
pub(super) async fn issue(
    conn: &mut AsyncPgConnection,
    row: KeyInsert<'_>,
    policy: &KeyPolicy,
) -> Result<ApiKey> {
    audited!(
        conn,
        insert_key(conn, row, policy).await,
        |r: &Recorder, key: &ApiKey| {
            vec![r.entry(AuditAction::KeyIssued, Some(key.id), key_issued(key), None)]
        }
    )
}

pub(super) async fn insert_key(
    conn: &mut AsyncPgConnection,
    row: KeyInsert<'_>,
    policy: &KeyPolicy,
) -> Result<ApiKey> {
    if policy.is_empty() {
        return insert_key_row(conn, &row).await;
    }
    conn.transaction(async |conn| {
        let mut key = insert_key_row(conn, &row).await?;
        write_policy(conn, key.id, policy).await?;
        key.policy = policy.clone();
        Ok(key)
    })
    .await
}

async fn insert_key_row(conn: &mut AsyncPgConnection, row: &KeyInsert<'_>) -> Result<ApiKey> {
    let user = row.user_id;
    diesel::insert_into(api_keys::table)
        .values(row)
        .returning(KeyRow::as_returning())
        .get_result(conn)
        .await
        .map(ApiKey::from)
        .map_err(|e| classify(e, Some(user)))
}

/// The policy row of a new key.
async fn write_policy(conn: &mut AsyncPgConnection, id: Uuid, policy: &KeyPolicy) -> Result<()> {
    let credits = policy.credits.as_ref();
    let refill = credits.and_then(|c| c.refill);
    diesel::insert_into(api_key_policies::table)
        .values((
            api_key_policies::key_id.eq(id),
            api_key_policies::name.eq(policy.name.as_deref()),
            api_key_policies::metadata.eq(policy.metadata.as_ref()),
            api_key_policies::permissions.eq(policy.permissions.iter().collect::<Vec<_>>()),
            api_key_policies::disabled_at.eq(policy.disabled_at),
            api_key_policies::credits.eq(credits.map(|c| c.remaining)),
            api_key_policies::refill_amount.eq(refill.map(|r| r.amount)),
            api_key_policies::refill_interval.eq(refill.map(|r| r.interval.as_sql())),
            api_key_policies::last_refill_at.eq(credits.and_then(|c| c.refilled_at)),
            api_key_policies::rate_limits.eq(limits_json(&policy.rate_limits)?),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

fn limits_json(limits: &[KeyRateLimit]) -> Result<Json> {
    serde_json::to_value(limits)
        .map(Json::from)
        .map_err(|e| Error::Database {
            source: Box::new(e),
        })
}

/// The key stored under `hash`, or, failing that, the revoked key that was
/// (its hash is kept as `revoked:<hash>`). A valid key costs one index
/// probe, the same query a service outside this crate runs.
pub(super) async fn find_by_hash(
    conn: &mut AsyncPgConnection,
    hash: &str,
) -> Result<Option<ApiKey>> {
    if let Some(key) = by_stored_hash(conn, hash).await? {
        return Ok(Some(key));
    }
    by_stored_hash(conn, &format!("{REVOKED}{hash}")).await
}

async fn by_stored_hash(conn: &mut AsyncPgConnection, stored: &str) -> Result<Option<ApiKey>> {
    select_keys!(api_keys::table.filter(api_keys::hashed_key.eq(stored)))
        .get_result(conn)
        .await
        .optional()?
        .map(with_policy)
        .transpose()
}

pub(super) async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<ApiKey>> {
    select_keys!(api_keys::table.filter(api_keys::id.eq(id)))
        .get_result(conn)
        .await
        .optional()?
        .map(with_policy)
        .transpose()
}

/// Revokes the key inside the caller's transaction; `Ok(None)` if it was
/// already revoked.
async fn revoke_in(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<ApiKey>> {
    let revoked = diesel::update(
        api_keys::table
            .find(id)
            .filter(api_keys::revoked_at.is_null()),
    )
    .set((
        api_keys::revoked_at.eq(now),
        api_keys::hashed_key.eq(diesel::dsl::sql::<diesel::sql_types::Varchar>(
            "'revoked:' || hashed_key",
        )),
    ))
    .returning(api_keys::id)
    .get_result::<Uuid>(conn)
    .await
    .optional()?;
    match revoked {
        Some(id) => get(conn, id).await,
        None if get(conn, id).await?.is_some() => Ok(None),
        None => Err(Error::NotFound {
            entity: Entity::ApiKey,
            id,
        }),
    }
}

pub(super) async fn revoke(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    audited_key!(
        conn,
        AuditAction::KeyRevoked,
        async {
            match revoke_in(conn, id, now).await? {
                Some(key) => Ok(key),
                None => get(conn, id).await?.ok_or(Error::NotFound {
                    entity: Entity::ApiKey,
                    id,
                }),
            }
        }
        .await
    )
}

pub(super) async fn list(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<Vec<ApiKey>> {
    select_keys!(
        api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .order((api_keys::created_at.asc(), api_keys::id.asc()))
    )
    .load(conn)
    .await?
    .into_iter()
    .map(with_policy)
    .collect()
}

pub(super) async fn rotate(
    conn: &mut AsyncPgConnection,
    old_id: Uuid,
    new: NewKeyRow,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    conn.transaction(async move |conn| {
        if revoke_in(conn, old_id, now).await?.is_none() {
            return Err(Error::invalid(Field::Id, "the api key is already revoked"));
        }
        let key = insert_key(conn, KeyInsert::from(&new), &new.key.policy).await?;
        append(conn, entries(|r| rotated(r, old_id, &key, now))).await?;
        Ok(key)
    })
    .await
}

// ---- policies ----

/// Makes sure the key has a policy row (an empty one is the same as none),
/// then runs `update` on it and returns the key's record.
async fn change<F>(conn: &mut AsyncPgConnection, id: Uuid, update: F) -> Result<ApiKey>
where
    F: AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<usize>,
{
    let created = diesel::insert_into(api_key_policies::table)
        .values((
            api_key_policies::key_id.eq(id),
            api_key_policies::permissions.eq(Vec::<String>::new()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await;
    match created {
        Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {
            return Err(Error::NotFound {
                entity: Entity::ApiKey,
                id,
            });
        }
        other => {
            other?;
        }
    }
    update(conn).await?;
    get(conn, id).await?.ok_or(Error::NotFound {
        entity: Entity::ApiKey,
        id,
    })
}

fn policy_of(id: Uuid) -> diesel::dsl::Find<api_key_policies::table, Uuid> {
    api_key_policies::table.find(id)
}

pub(super) async fn disable(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    audited_key!(conn, AuditAction::KeyDisabled, {
        change(conn, id, async |conn| {
            diesel::update(policy_of(id).filter(api_key_policies::disabled_at.is_null()))
                .set((
                    api_key_policies::disabled_at.eq(now),
                    api_key_policies::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await
        })
        .await
    })
}

pub(super) async fn enable(conn: &mut AsyncPgConnection, id: Uuid) -> Result<ApiKey> {
    audited_key!(conn, AuditAction::KeyEnabled, {
        change(conn, id, async |conn| {
            diesel::update(policy_of(id))
                .set((
                    api_key_policies::disabled_at.eq(None::<DateTime<Utc>>),
                    api_key_policies::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await
        })
        .await
    })
}

pub(super) async fn set_permissions(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    permissions: &BTreeSet<String>,
) -> Result<ApiKey> {
    let list: Vec<&String> = permissions.iter().collect();
    audited_key!(conn, AuditAction::KeyPermissionsSet, {
        change(conn, id, async |conn| {
            diesel::update(policy_of(id))
                .set((
                    api_key_policies::permissions.eq(list),
                    api_key_policies::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await
        })
        .await
    })
}

pub(super) async fn set_details(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    name: Option<&str>,
    metadata: Option<&Json>,
) -> Result<ApiKey> {
    audited_key!(conn, AuditAction::KeyDetailsSet, {
        change(conn, id, async |conn| {
            diesel::update(policy_of(id))
                .set((
                    api_key_policies::name.eq(name),
                    api_key_policies::metadata.eq(metadata),
                    api_key_policies::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await
        })
        .await
    })
}

pub(super) async fn set_credits(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    credits: Option<&KeyCredits>,
) -> Result<ApiKey> {
    let refill = credits.and_then(|c| c.refill);
    audited_key!(conn, AuditAction::KeyCreditsSet, {
        change(conn, id, async |conn| {
            diesel::update(policy_of(id))
                .set((
                    api_key_policies::credits.eq(credits.map(|c| c.remaining)),
                    api_key_policies::refill_amount.eq(refill.map(|r| r.amount)),
                    api_key_policies::refill_interval.eq(refill.map(|r| r.interval.as_sql())),
                    api_key_policies::last_refill_at.eq(credits.and_then(|c| c.refilled_at)),
                    // A new budget: balances held in Redis for the old one,
                    // and their write-backs, no longer count.
                    api_key_policies::credits_version.eq(api_key_policies::credits_version + 1),
                    api_key_policies::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await
        })
        .await
    })
}

pub(super) async fn set_rate_limits(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    limits: &[KeyRateLimit],
) -> Result<ApiKey> {
    let json = limits_json(limits)?;
    audited_key!(conn, AuditAction::KeyRateLimitsSet, {
        change(conn, id, async |conn| {
            diesel::update(policy_of(id))
                .set((
                    api_key_policies::rate_limits.eq(&json),
                    api_key_policies::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await
        })
        .await
    })
}

/// One call of `dreamnet_spend_key_credits`: one prepared (and cached)
/// statement, one round trip.
///
/// The statement's transaction commits without waiting for its WAL to reach
/// the disk (`synchronous_commit = off` for this transaction only): a spend
/// is a counter moved on every request, and waiting for the flush cost a
/// few milliseconds per verification (5 ms against 1 ms on this project's
/// test machine). Atomicity and isolation are unchanged, so across every
/// process a budget of N still accepts exactly N while the server runs; a
/// crash of the server itself can forget the spends of its last moments
/// (at most three `wal_writer_delay`s, 600 ms by default), which gives
/// those credits back. It never charges a key twice.
pub(super) async fn spend(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    cost: i64,
    now: DateTime<Utc>,
) -> Result<CreditSpend> {
    let (_, left): (String, Option<i64>) = diesel::select((
        set_config("synchronous_commit", "off", true),
        dreamnet_spend_key_credits(id, cost, now),
    ))
    .get_result(conn)
    .await?;
    Ok(match left {
        None => CreditSpend::Unlimited,
        Some(n) if n >= 0 => CreditSpend::Spent(n),
        Some(n) => CreditSpend::Exhausted(-1 - n),
    })
}

/// The key's budget, its version and write-back count (the seed of a
/// balance held in Redis).
pub(super) async fn credit_state(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<CreditState>> {
    type Row = (Option<i64>, Option<DateTime<Utc>>, i64, i64);
    let row: Option<Row> = policy_of(id)
        .select((
            api_key_policies::credits,
            api_key_policies::last_refill_at,
            api_key_policies::credits_version,
            api_key_policies::credits_seq,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(row.and_then(|(credits, refilled_at, version, seq)| {
        credits.map(|remaining| CreditState {
            remaining,
            refilled_at,
            version,
            seq,
        })
    }))
}

/// The balances held in Redis, `last_used` of many keys and the usage
/// counts, in one statement. A balance lands only for the budget version it
/// was spent against and only if it counts more spends than the stored one.
const FLUSH: &str = "\
WITH spent AS (
    UPDATE api_key_policies p
       SET credits = w.n, last_refill_at = w.r, credits_seq = w.s
      FROM unnest($7::uuid[], $8::int8[], $9::int8[], $10::int8[], $11::timestamptz[])
           AS w(id, v, s, n, r)
     WHERE p.key_id = w.id AND p.credits_version = w.v AND p.credits_seq < w.s
       AND p.credits IS NOT NULL
    RETURNING p.key_id
),
touched AS (
    UPDATE api_keys k SET last_used = v.t
      FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, t)
     WHERE k.id = v.id AND (k.last_used IS NULL OR k.last_used < v.t)
    RETURNING k.id
)
INSERT INTO api_key_usage AS u (key_id, hour, outcome, count)
SELECT c.key_id, c.hour, c.outcome, c.n
  FROM unnest($3::uuid[], $4::timestamptz[], $5::text[], $6::int8[]) AS c(key_id, hour, outcome, n)
 WHERE EXISTS (SELECT 1 FROM api_keys a WHERE a.id = c.key_id)
 ORDER BY c.key_id, c.hour, c.outcome
ON CONFLICT (key_id, hour, outcome) DO UPDATE SET count = u.count + EXCLUDED.count";

pub(super) async fn flush_usage(conn: &mut AsyncPgConnection, batch: &UsageBatch) -> Result<()> {
    let mut touched = batch.last_used.clone();
    touched.sort();
    let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = touched.into_iter().unzip();
    let mut counts = batch.counts.clone();
    counts.sort();
    let mut keys = Vec::with_capacity(counts.len());
    let mut hours = Vec::with_capacity(counts.len());
    let mut outcomes = Vec::with_capacity(counts.len());
    let mut ns = Vec::with_capacity(counts.len());
    for (key, hour, outcome, n) in counts {
        keys.push(key);
        hours.push(hour);
        outcomes.push(outcome.as_str());
        ns.push(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let mut credits = batch.credits.clone();
    // One order for every writer, so concurrent flushes lock rows alike.
    credits.sort_by_key(|w| w.key);
    let mut c_keys = Vec::with_capacity(credits.len());
    let mut c_versions = Vec::with_capacity(credits.len());
    let mut c_seqs = Vec::with_capacity(credits.len());
    let mut c_left = Vec::with_capacity(credits.len());
    let mut c_refilled = Vec::with_capacity(credits.len());
    for w in credits {
        c_keys.push(w.key);
        c_versions.push(w.version);
        c_seqs.push(w.seq);
        c_left.push(w.remaining);
        c_refilled.push(w.refilled_at);
    }
    diesel::sql_query(FLUSH)
        .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
        .bind::<Array<Timestamptz>, _>(times)
        .bind::<Array<diesel::sql_types::Uuid>, _>(keys)
        .bind::<Array<Timestamptz>, _>(hours)
        .bind::<Array<Text>, _>(outcomes)
        .bind::<Array<Int8>, _>(ns)
        .bind::<Array<diesel::sql_types::Uuid>, _>(c_keys)
        .bind::<Array<Int8>, _>(c_versions)
        .bind::<Array<Int8>, _>(c_seqs)
        .bind::<Array<Int8>, _>(c_left)
        .bind::<Array<Nullable<Timestamptz>>, _>(c_refilled)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct UsageRow {
    #[diesel(sql_type = Timestamptz)]
    bucket: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Int8)]
    n: i64,
}

pub(super) async fn usage(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    bucket: TimeBucket,
    range: TimeRange,
) -> Result<Vec<KeyUsage>> {
    let rows: Vec<UsageRow> = diesel::sql_query(
        "SELECT date_trunc($2, hour, 'UTC') AS bucket, outcome, sum(count)::int8 AS n \
           FROM api_key_usage \
          WHERE key_id = $1 \
            AND ($3::timestamptz IS NULL OR hour >= $3) \
            AND ($4::timestamptz IS NULL OR hour < $4) \
          GROUP BY 1, 2",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(bucket.as_sql())
    .bind::<Nullable<Timestamptz>, _>(range.since)
    .bind::<Nullable<Timestamptz>, _>(range.until)
    .load(conn)
    .await?;
    let mut out: Vec<KeyUsage> = rows
        .into_iter()
        .filter_map(|r| {
            Some(KeyUsage {
                bucket: r.bucket,
                outcome: KeyOutcome::parse(&r.outcome)?,
                count: u64::try_from(r.n).ok()?,
            })
        })
        .collect();
    out.sort_by_key(|u| (u.bucket, u.outcome));
    Ok(out)
}
