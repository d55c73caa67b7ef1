//! One-script key verification behind the Redis cache: one `EVALSHA` reads
//! the key's cached record, checks it, applies the key's rate limits and
//! spends credits held in Redis.
//!
//! # The record and its gate
//!
//! A key record is cached as the key's JSON with one more member first,
//! `g` (the gate): what the script needs to decide without parsing dates
//! or hashing: revoked, expiry in µs, service, disabled, permissions, each
//! rate limit as (limiter key digest, emission µs, tolerance µs), and
//! whether the key has credits (with its refill). Readers that know
//! nothing of `g` read the record as before.
//!
//! The script refuses, in the store's order, a revoked, expired,
//! wrong-service, disabled or under-permitted key *before* touching any
//! state, so a refused key never takes a rate-limit cell or a credit, and
//! no concurrent verification of a valid request can be refused for
//! credits another one took and gave back: nothing is ever taken
//! optimistically.
//!
//! # Rate limits
//!
//! When the store's key rate limiter is a Redis limiter on the cache's own
//! Redis, the script applies the limits with the limiter's GCRA, on the
//! limiter's keys (`{limiter prefix}{sha256("api-key:{id}:{name}")}`) and
//! the Redis server's clock, so verifications through the script and
//! checks through the limiter share their counts. Otherwise the script
//! stops before the limits, the store applies them through its limiter,
//! and a second call (skipping the limits) spends the credits.
//!
//! # Credits held in Redis
//!
//! `{prefix}kc:{id}` holds `remaining:refilled_µs:seq:version`. It is
//! seeded from the database on first use (the script answers "seed": the
//! store takes the balance's fill lease, reads the database's balance,
//! version and write-back count, writes the balance only if it still holds
//! the lease and no balance exists, and runs the script again), so every
//! process spends from one balance, atomically. Replacing a key's budget
//! moves its version in the database and then invalidates the balance the
//! way records are invalidated (which also revokes a seed's lease), so a
//! seed read before the change cannot land after it. Refills happen in the
//! script, from the period start the store computes from its clock, as the
//! database's spend does. Each spend's result is written back in the
//! store's batched usage flush (see `store::key_usage`).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use redis::Value;
use serde::Serialize;

use super::client::Lookup;
use crate::backend::{CreditState, CreditWrite, OneStepCheck};
use crate::error::{Error, KeyRejection, Result};
use crate::model::{ApiKey, KeyVerdict, RefillInterval};
use crate::rate_limit::{RateLimitDecision, key_limit_name, redis_key_digest, remaining};

/// How long a balance held in Redis lives without being spent. Far longer
/// than a usage flush, so a balance that expires has long been written
/// back, and the seed that replaces it is current.
pub(crate) const BALANCE_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a verification waits for another process to seed a balance
/// (the seed's lease lasts `LEASE_TTL`: a seeder that died frees it by
/// then) before it verifies step by step.
const SEED_WAIT: Duration = Duration::from_secs(11);

/// The verification script. KEYS[1]: the key's hash index entry.
/// ARGV: 1 limits mode (0: stop before limits, 1: apply them, 2: skip
/// them), 2 cache prefix, 3 limiter prefix, 4 now (µs, store's clock),
/// 5 start of the day (µs), 6 start of the month (µs), 7 "1" if a service
/// is required, 8 the service, 9 cost, 10 balance TTL (ms), 11 the record
/// (empty: read it through the index), 12 number of required permissions,
/// then them, then the number of alternatives, then them.
///
/// Answers {0}: no usable record; {1, record, code}: refused (1 revoked,
/// 2 expired, 3 wrong service, 4 disabled, 5 permissions), nothing taken;
/// {2, record}: has limits, stopped before them; {3, record}: balance to
/// seed; {4, record, decisions…}: rate limited; {5, record, credits
/// (0 none, 1 spent, 2 not enough), remaining, refilled µs, seq, version,
/// decisions…}. Decisions are (allowed, retry after µs, reset after µs) per
/// limit applied.
pub(crate) const VERIFY: &str = r"
local pre = ARGV[2]
local json = ARGV[11]
if json == '' then
  local id = redis.call('GET', KEYS[1])
  if not id then return {0} end
  json = redis.call('GET', pre .. 'kr:' .. id)
  if not json then return {0} end
end
local ok, rec = pcall(cjson.decode, json)
if not ok or type(rec) ~= 'table' or type(rec.g) ~= 'table' then return {0} end
local g = rec.g
local now = tonumber(ARGV[4])
if g.r then return {1, json, 1} end
if g.x and g.x <= now then return {1, json, 2} end
if ARGV[7] == '1' and ARGV[8] ~= g.s then return {1, json, 3} end
if g.d then return {1, json, 4} end
local held = {}
for _, p in ipairs(g.p) do held[p] = true end
local n_all = tonumber(ARGV[12])
for j = 1, n_all do
  if not held[ARGV[12 + j]] then return {1, json, 5} end
end
local at = 13 + n_all
local n_any = tonumber(ARGV[at])
if n_any > 0 then
  local found = false
  for j = 1, n_any do
    if held[ARGV[at + j]] then found = true break end
  end
  if not found then return {1, json, 5} end
end
local bal, n, r, s, v
if g.c then
  bal = pre .. 'kc:' .. g.i
  local cur = redis.call('GET', bal)
  if not cur then return {3, json} end
  local a, b, c, d = string.match(cur, '^(%d+):(-?%d+):(%d+):(%d+)$')
  if not a then
    redis.call('DEL', bal)
    return {3, json}
  end
  n, r, s, v = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
end
local mode = tonumber(ARGV[1])
local out = {5, json, 0, 0, 0, 0, 0}
if #g.l > 0 and mode ~= 2 then
  if mode == 0 then return {2, json} end
  local t = redis.call('TIME')
  local tnow = tonumber(t[1]) * 1000000 + tonumber(t[2])
  for _, l in ipairs(g.l) do
    local key = ARGV[3] .. l[1]
    local emission = l[2]
    local tat = tonumber(redis.call('GET', key) or tnow)
    if tat < tnow then tat = tnow end
    local new_tat = tat + emission
    local allow_at = new_tat - l[3]
    if tnow < allow_at then
      out[1] = 4
      out[#out + 1] = 0
      out[#out + 1] = allow_at - tnow
      out[#out + 1] = tat - tnow
      return out
    end
    redis.call('SET', key, string.format('%d', new_tat), 'PX', math.max(1, math.ceil((new_tat - tnow) / 1000)))
    out[#out + 1] = 1
    out[#out + 1] = 0
    out[#out + 1] = new_tat - tnow
  end
end
if not g.c then return out end
if g.ra then
  local start = tonumber(ARGV[5])
  if g.ri == 'month' then start = tonumber(ARGV[6]) end
  if r < start then
    n = g.ra
    r = start
  end
end
local cost = tonumber(ARGV[9])
local need = cost
if need < 1 then need = 1 end
if n < need then
  out[3] = 2
  out[4] = n
  return out
end
n = n - cost
s = s + 1
redis.call('SET', bal, string.format('%d:%d:%d:%d', n, r, s, v), 'PX', ARGV[10])
out[3] = 1
out[4] = n
out[5] = r
out[6] = s
out[7] = v
return out
";

/// Writes a balance if its seeder still holds the fill lease and none is
/// there. KEYS: balance, its lease. ARGV: token, balance, TTL (ms).
pub(crate) const SEED: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// What the script reads of a key record (see the module docs).
#[derive(Serialize)]
struct Gate<'a> {
    /// The key's id (simple form, as in Redis names).
    i: String,
    #[serde(skip_serializing_if = "is_false")]
    r: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<i64>,
    s: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    d: bool,
    p: Vec<&'a str>,
    l: Vec<(String, i64, i64)>,
    #[serde(skip_serializing_if = "is_false")]
    c: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ra: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ri: Option<&'static str>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A key record as cached: the gate first, then the key's own members.
#[derive(Serialize)]
struct CachedKey<'a> {
    g: Gate<'a>,
    #[serde(flatten)]
    key: &'a ApiKey,
}

/// The JSON a key record is cached as.
pub(crate) fn key_record_json(key: &ApiKey) -> Option<String> {
    let policy = &key.policy;
    let gate = Gate {
        i: key.id.simple().to_string(),
        r: key.revoked_at.is_some(),
        x: key.expires_at.map(|t| t.timestamp_micros()),
        s: &key.service,
        d: policy.disabled_at.is_some(),
        p: policy.permissions.iter().map(String::as_str).collect(),
        l: policy
            .rate_limits
            .iter()
            .map(|l| {
                let emission = l.policy.emission_interval().as_micros() as i64;
                (
                    redis_key_digest(&key_limit_name(key.id, &l.name)),
                    emission,
                    emission * i64::from(l.policy.burst()),
                )
            })
            .collect(),
        c: policy.credits.is_some(),
        ra: policy.credits.and_then(|c| c.refill).map(|r| r.amount),
        ri: policy
            .credits
            .and_then(|c| c.refill)
            .map(|r| r.interval.as_sql()),
    };
    serde_json::to_string(&CachedKey { g: gate, key }).ok()
}

/// What one run of the script answered.
enum Answer {
    NoRecord,
    Refused(String, KeyRejection),
    LimitsFirst(String),
    Seed(String),
    Limited(String, Vec<(bool, i64, i64)>),
    Done {
        record: String,
        credits: Credits,
        decisions: Vec<(bool, i64, i64)>,
    },
}

enum Credits {
    None,
    Spent(CreditWrite),
    Short(i64),
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn decisions(vals: &[Value]) -> Option<Vec<(bool, i64, i64)>> {
    if vals.len() % 3 != 0 {
        return None;
    }
    vals.chunks(3)
        .map(|c| Some((int(&c[0])? == 1, int(&c[1])?, int(&c[2])?)))
        .collect()
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    (us >= 0)
        .then(|| Utc.timestamp_micros(us).single())
        .flatten()
}

fn parse(vals: &[Value]) -> Option<Answer> {
    let status = int(vals.first()?)?;
    if status == 0 {
        return Some(Answer::NoRecord);
    }
    let record = text(vals.get(1)?)?;
    Some(match status {
        1 => {
            let why = match int(vals.get(2)?)? {
                1 => KeyRejection::Revoked,
                2 => KeyRejection::Expired,
                3 => KeyRejection::WrongService,
                4 => KeyRejection::Disabled,
                _ => KeyRejection::InsufficientPermissions,
            };
            Answer::Refused(record, why)
        }
        2 => Answer::LimitsFirst(record),
        3 => Answer::Seed(record),
        4 => Answer::Limited(record, decisions(vals.get(7..)?)?),
        5 => {
            let kind = int(vals.get(2)?)?;
            let left = int(vals.get(3)?)?;
            let credits = match kind {
                0 => Credits::None,
                1 => Credits::Spent(CreditWrite {
                    // Set from the decoded record.
                    key: uuid::Uuid::nil(),
                    remaining: left,
                    refilled_at: from_micros(int(vals.get(4)?)?),
                    seq: int(vals.get(5)?)?,
                    version: int(vals.get(6)?)?,
                }),
                _ => Credits::Short(left),
            };
            Answer::Done {
                record,
                credits,
                decisions: decisions(vals.get(7..)?)?,
            }
        }
        _ => return None,
    })
}

/// A rate-limit decision from the script's numbers, as the Redis limiter
/// makes it.
fn decision(limit: &crate::model::KeyRateLimit, d: (bool, i64, i64)) -> RateLimitDecision {
    let (allowed, retry, reset) = d;
    let emission = limit.policy.emission_interval().as_micros() as i64;
    let tau = emission * i64::from(limit.policy.burst());
    crate::telemetry::rate_limit_decision(crate::telemetry::Storage::Redis, allowed, false);
    RateLimitDecision {
        allowed,
        limit: limit.policy.burst(),
        remaining: remaining(tau, reset, emission),
        retry_after: (!allowed).then(|| Duration::from_micros(retry.max(0) as u64)),
        reset_after: Duration::from_micros(reset.max(0) as u64),
        degraded: false,
    }
}

fn start_of(interval: RefillInterval, now: DateTime<Utc>) -> i64 {
    micros(interval.period_start(now))
}

/// The balance to seed from the database's state.
fn balance(state: &CreditState) -> String {
    format!(
        "{}:{}:{}:{}",
        state.remaining.max(0),
        state.refilled_at.map(micros).unwrap_or(-1),
        state.seq.max(0),
        state.version.max(0)
    )
}

/// A verification decided in one step, with the balance to write back; or
/// `None`: not here, not now (the store verifies step by step).
type Decided = Option<(KeyVerdict, Option<CreditWrite>)>;

impl super::backend::CachedBackend {
    /// See [`crate::backend::Backend::verify_one_step`].
    pub(crate) async fn verify_in_script(&self, req: &OneStepCheck<'_>) -> Result<Decided> {
        let cache = self.cache();
        let index = cache.keys().key_by_hash(req.hash);
        // The record to hand the script when Redis has none.
        let mut given: Option<String> = None;
        // Decisions of limits the store's own limiter applied.
        let mut applied: Option<Vec<(String, RateLimitDecision)>> = None;
        let mut waited: Option<Instant> = None;
        let mut first = true;
        loop {
            let mode = match (&applied, req.limits_in_script) {
                (Some(_), _) => 2,
                (None, Some(_)) => 1,
                (None, None) => 0,
            };
            let vals = match self.run(req, &index, mode, given.as_deref()).await {
                Lookup::Hit(vals) => vals,
                Lookup::Miss | Lookup::Down => return Ok(None),
            };
            let Some(answer) = parse(&vals) else {
                tracing::warn!(
                    target: "dreamnet_db::cache",
                    "the key verification script answered in an unexpected shape"
                );
                return Ok(None);
            };
            let decode = |json: &str| serde_json::from_str::<ApiKey>(json).ok();
            if first && given.is_none() && !matches!(answer, Answer::NoRecord) {
                self.count_hit();
            }
            first = false;
            match answer {
                Answer::NoRecord => {
                    if given.is_some() {
                        // A record the script cannot read: step by step.
                        return Ok(None);
                    }
                    // Read it (which fills the cache for the next one),
                    // and hand it to the script.
                    match crate::backend::Backend::find_key_by_hash(self, req.hash).await? {
                        None => {
                            return Ok(Some((
                                KeyVerdict::refused(KeyRejection::Unknown, None),
                                None,
                            )));
                        }
                        Some(key) => match key_record_json(&key) {
                            Some(json) => given = Some(json),
                            None => return Ok(None),
                        },
                    }
                }
                Answer::Refused(json, why) => {
                    let Some(key) = decode(&json) else {
                        return Ok(None);
                    };
                    return Ok(Some((KeyVerdict::refused(why, Some(key)), None)));
                }
                Answer::LimitsFirst(json) => {
                    let Some(key) = decode(&json) else {
                        return Ok(None);
                    };
                    let limiter = req.limiter.ok_or_else(|| {
                        Error::Config(
                            "this key has rate limits: set StoreBuilder::key_rate_limiter".into(),
                        )
                    })?;
                    let mut decisions = Vec::with_capacity(key.policy.rate_limits.len());
                    for limit in &key.policy.rate_limits {
                        let name = key_limit_name(key.id, &limit.name);
                        let decision = limiter.check_with(&limit.policy, &name, 1).await?;
                        decisions.push((limit.name.clone(), decision));
                        if !decision.allowed {
                            let retry_after = decision.retry_after.unwrap_or_default();
                            return Ok(Some((
                                KeyVerdict {
                                    rejection: Some(KeyRejection::RateLimited { retry_after }),
                                    key: Some(key),
                                    credits_remaining: None,
                                    rate_limits: decisions,
                                },
                                None,
                            )));
                        }
                    }
                    applied = Some(decisions);
                }
                Answer::Seed(json) => {
                    let Some(key) = decode(&json) else {
                        return Ok(None);
                    };
                    let started = *waited.get_or_insert_with(Instant::now);
                    if started.elapsed() > SEED_WAIT {
                        return Ok(None);
                    }
                    match self.seed(&key).await? {
                        Seed::Done => {}
                        Seed::Busy => tokio::time::sleep(Duration::from_millis(2)).await,
                        // The record is older than a change of the budget
                        // (its invalidation is on its way): step by step.
                        Seed::NoBudget => return Ok(None),
                    }
                }
                Answer::Limited(json, raw) => {
                    let Some(key) = decode(&json) else {
                        return Ok(None);
                    };
                    let rate_limits = named(&key, &raw);
                    let retry_after = rate_limits
                        .last()
                        .and_then(|(_, d)| d.retry_after)
                        .unwrap_or_default();
                    return Ok(Some((
                        KeyVerdict {
                            rejection: Some(KeyRejection::RateLimited { retry_after }),
                            key: Some(key),
                            credits_remaining: None,
                            rate_limits,
                        },
                        None,
                    )));
                }
                Answer::Done {
                    record,
                    credits,
                    decisions,
                } => {
                    let Some(key) = decode(&record) else {
                        return Ok(None);
                    };
                    let rate_limits = match applied.take() {
                        Some(by_limiter) => by_limiter,
                        None => named(&key, &decisions),
                    };
                    let (rejection, credits_remaining, write) = match credits {
                        Credits::None => (None, None, None),
                        Credits::Spent(w) => (
                            None,
                            Some(w.remaining),
                            Some(CreditWrite { key: key.id, ..w }),
                        ),
                        Credits::Short(left) => {
                            (Some(KeyRejection::UsageExceeded), Some(left), None)
                        }
                    };
                    return Ok(Some((
                        KeyVerdict {
                            rejection,
                            key: Some(key),
                            credits_remaining,
                            rate_limits,
                        },
                        write,
                    )));
                }
            }
        }
    }

    /// One run of the script.
    async fn run(
        &self,
        req: &OneStepCheck<'_>,
        index: &str,
        mode: u8,
        given: Option<&str>,
    ) -> Lookup<Vec<Value>> {
        let cache = self.cache();
        let check = req.check;
        let mut invocation = cache.scripts_verify().prepare_invoke();
        invocation
            .key(index)
            .arg(mode)
            .arg(cache.keys().prefix())
            .arg(req.limits_in_script.unwrap_or(""))
            .arg(micros(req.now))
            .arg(start_of(RefillInterval::Day, req.now))
            .arg(start_of(RefillInterval::Month, req.now))
            .arg(if check.service.is_some() { "1" } else { "0" })
            .arg(check.service.as_deref().unwrap_or(""))
            .arg(check.cost)
            .arg(BALANCE_TTL.as_millis() as u64)
            .arg(given.unwrap_or(""))
            .arg(check.all.len());
        for p in &check.all {
            invocation.arg(p);
        }
        invocation.arg(check.any.len());
        for p in &check.any {
            invocation.arg(p);
        }
        cache.invoke(&invocation).await
    }

    /// Seeds `key`'s balance from the database under the balance's fill
    /// lease.
    async fn seed(&self, key: &ApiKey) -> Result<Seed> {
        let cache = self.cache();
        let name = cache.keys().key_credits(key.id);
        let Some(lease) = cache.lease(&name).await else {
            return Ok(Seed::Busy);
        };
        let Some(state) = self.inner().key_credit_state(key.id).await? else {
            return Ok(Seed::NoBudget);
        };
        cache
            .seed_balance(lease, &balance(&state), BALANCE_TTL)
            .await;
        Ok(Seed::Done)
    }
}

/// What seeding a balance came to.
enum Seed {
    /// Written (or found written, or refused by an invalidation): run the
    /// script again.
    Done,
    /// Another process holds the lease: it is seeding.
    Busy,
    /// The database has no budget for the key.
    NoBudget,
}

/// The script's decisions, named after the key's limits in order.
fn named(key: &ApiKey, raw: &[(bool, i64, i64)]) -> Vec<(String, RateLimitDecision)> {
    key.policy
        .rate_limits
        .iter()
        .zip(raw)
        .map(|(limit, d)| (limit.name.clone(), decision(limit, *d)))
        .collect()
}

/// The start of the day of `now` and of its month, for tests.
#[cfg(test)]
fn starts(now: DateTime<Utc>) -> (i64, i64) {
    use chrono::Datelike;
    let day = start_of(RefillInterval::Day, now);
    let month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .map(micros)
        .unwrap_or_default();
    (day, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_comes_first_and_the_record_still_reads_as_a_key() {
        let now = Utc.with_ymd_and_hms(2026, 3, 14, 15, 9, 26).unwrap();
        let key = ApiKey {
            id: uuid::Uuid::nil(),
            user_id: uuid::Uuid::nil(),
            service: "billing".into(),
            prefix: None,
            created_at: now,
            last_used: None,
            expires_at: Some(now),
            revoked_at: None,
            policy: crate::model::KeyPolicy::new()
                .permissions(["a.b"])
                .credits(3)
                .refill(crate::model::Refill::daily(3)),
        };
        let json = key_record_json(&key).unwrap();
        assert!(json.starts_with(r#"{"g":{"i":"00000000000000000000000000000000","x":"#));
        assert!(json.contains(r#""c":true,"ra":3,"ri":"day""#));
        assert_eq!(serde_json::from_str::<ApiKey>(&json).unwrap(), key);
        assert_eq!(
            starts(now).0,
            micros(now) - (15 * 3600 + 9 * 60 + 26) * 1_000_000
        );
        assert_eq!(
            starts(now).1,
            micros(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap())
        );
    }
}
