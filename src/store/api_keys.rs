//! [`ApiKeys`]: the API keys repository's facade.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, new_id, not_found};
use crate::backend::{NewKeyRow, OneStepCheck};
use crate::error::{Entity, Error, Field, KeyRejection, Result};
use crate::model::{
    ApiKey, ApiKeySecret, CreditSpend, IssuedKey, Json, KeyCheck, KeyCredits, KeyOutcome,
    KeyPolicy, KeyRateLimit, KeyUsage, KeyVerdict, TimeBucket, TimeRange, check_metadata,
    check_name, check_permissions, check_rate_limits, check_service, check_timestamp,
};
use crate::rate_limit::key_limit_name;
use crate::telemetry::{site, traced};

/// Hashed API keys: issue, validate, revoke, list and rotate; and keys
/// that carry their own policy: permissions, a disabled switch, a name and
/// metadata, credits with a refill, and rate limits, checked by
/// [`verify`](Self::verify). Get one from [`Store::api_keys`].
///
/// Keys are `dnk_` and 64 hex digits (256 bits from the operating system's
/// random source). Only their SHA-256, as lower-case hex, is stored, in
/// `api_keys.hashed_key`, so keys issued by other services the same way
/// (any string, no prefix) validate too. Policies live in a table of their
/// own (`api_key_policies`), so a key without one (every key other services
/// issue) validates exactly as it always has.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dreamnet_db::Result<()> {
/// use dreamnet_db::{KeyCheck, KeyPolicy, KeyRejection, NewUser, Store};
///
/// let store = Store::in_memory();
/// let user = store.users().create(NewUser::with_email("ada@example.com".parse()?)).await?;
/// let policy = KeyPolicy::new().permissions(["billing.read"]).credits(2);
/// let issued = store.api_keys().issue_with(user.id, "billing", None, policy).await?;
/// let secret = issued.secret.expose_secret();
///
/// let check = KeyCheck::new().service("billing").require_all(["billing.read"]);
/// let verdict = store.api_keys().verify(secret, &check).await?;
/// assert!(verdict.is_valid());
/// assert_eq!(verdict.credits_remaining, Some(1));
///
/// let write = KeyCheck::new().require_all(["billing.write"]);
/// let verdict = store.api_keys().verify(secret, &write).await?;
/// assert_eq!(verdict.rejection, Some(KeyRejection::InsufficientPermissions));
///
/// store.api_keys().disable(issued.key.id).await?;
/// let verdict = store.api_keys().verify(secret, &check).await?;
/// assert_eq!(verdict.rejection, Some(KeyRejection::Disabled));
/// # store.shutdown().await?;
/// # Ok(()) }
/// # #[cfg(not(feature = "memory"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ApiKeys<'a> {
    pub(super) store: &'a Store,
}

impl ApiKeys<'_> {
    pub(super) fn new_row(
        &self,
        user_id: Uuid,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        policy: KeyPolicy,
    ) -> Result<(NewKeyRow, ApiKeySecret)> {
        check_service(service)?;
        policy.check()?;
        let policy = start_refills(policy, now);
        // Stored to the microsecond, like every timestamp: compare it so.
        let expires_at = expires_at.map(|t| chrono::SubsecRound::trunc_subsecs(t, 6));
        if let Some(at) = expires_at {
            check_timestamp(Field::ExpiresAt, at)?;
        }
        if expires_at.is_some_and(|at| at <= now) {
            return Err(Error::invalid(Field::ExpiresAt, "must be in the future"));
        }
        let secret = ApiKeySecret::generate()?;
        let key = ApiKey {
            id: new_id(now),
            user_id,
            service: service.to_owned(),
            prefix: secret.display_prefix(),
            created_at: now,
            last_used: None,
            expires_at,
            revoked_at: None,
            policy,
        };
        let hash = secret.hash();
        Ok((NewKeyRow { key, hash }, secret))
    }

    /// Issues a key for `user_id` and `service`, valid until `expires_at`
    /// (or until revoked). The plain text is in the returned
    /// [`IssuedKey::secret`], this once. `NotFound` if the user does not
    /// exist.
    pub async fn issue(
        &self,
        user_id: Uuid,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey> {
        let s = self.store;
        traced(site!("issue", "api_keys"), async {
            let (row, secret) =
                self.new_row(user_id, service, expires_at, s.now(), KeyPolicy::default())?;
            let key = s.audited(s.backend.insert_key(row)).await?;
            Ok(IssuedKey { key, secret })
        })
        .await
    }

    /// Issues a key, as [`issue`](Self::issue) does, carrying `policy`
    /// (checked first: `InvalidInput` naming the bad part, and nothing is
    /// written). A refill's first period is the one holding the issue
    /// time: the first refill comes at the next period's start.
    pub async fn issue_with(
        &self,
        user_id: Uuid,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
        policy: KeyPolicy,
    ) -> Result<IssuedKey> {
        let s = self.store;
        traced(site!("issue", "api_keys"), async {
            let (row, secret) = self.new_row(user_id, service, expires_at, s.now(), policy)?;
            let key = s.audited(s.backend.insert_key(row)).await?;
            Ok(IssuedKey { key, secret })
        })
        .await
    }

    /// Validates a presented key for any service. See
    /// [`validate_for`](Self::validate_for).
    pub async fn validate(&self, presented: &str) -> Result<ApiKey> {
        traced(site!("validate", "api_keys"), self.check(presented, None)).await
    }

    /// Validates a presented key, which must have been issued for
    /// `service`. Returns the key's record, or `Unauthorized` with why:
    /// malformed, unknown, revoked, expired, for another service, or
    /// disabled. Permissions, credits and rate limits are not looked at:
    /// [`verify`](Self::verify) checks those.
    ///
    /// `last_used` moves at most once per `last_used_resolution` (a minute
    /// by default) per key, and is never written on this call's path: it is
    /// buffered and written with the usage counts (see
    /// [`usage`](Self::usage)), one statement for many keys.
    pub async fn validate_for(&self, presented: &str, service: &str) -> Result<ApiKey> {
        traced(
            site!("validate", "api_keys"),
            self.check(presented, Some(service)),
        )
        .await
    }

    async fn check(&self, presented: &str, service: Option<&str>) -> Result<ApiKey> {
        let s = self.store;
        let secret = ApiKeySecret::parse(presented)?;
        let mut key = s
            .backend
            .find_key_by_hash(&secret.hash())
            .await?
            .ok_or(Error::Unauthorized(KeyRejection::Unknown))?;
        let now = s.now();
        let why = key
            .rejection(now, service)
            .or(key.policy.disabled_at.map(|_| KeyRejection::Disabled));
        self.count(&key, why, now);
        if let Some(why) = why {
            return Err(Error::Unauthorized(why));
        }
        key.last_used = s.keys.usage.touch(&key, now);
        Ok(key)
    }

    /// Counts a verification of `key` in its usage.
    fn count(&self, key: &ApiKey, rejection: Option<KeyRejection>, now: DateTime<Utc>) {
        if let Some(outcome) = KeyOutcome::of(rejection) {
            self.store.keys.usage.count(key.id, outcome, now);
        }
    }

    /// Verifies a presented key against its policy and `check`, and says
    /// what was decided. In order: the key must be well formed and known,
    /// not revoked, not expired, for the check's service (if it names one),
    /// not disabled, and hold the permissions the check requires; then each
    /// of its rate limits is applied (through the store's
    /// [`key_rate_limiter`](crate::StoreBuilder::key_rate_limiter), one
    /// cell each), then the check's cost in credits is spent. The first
    /// that fails is the [`KeyVerdict::rejection`]; a refusal by a rate
    /// limit spends no credit, and a refusal for credits has taken its
    /// rate-limit cells.
    ///
    /// `Err` only for bad input (the check's permissions, a negative cost:
    /// `InvalidInput`) and for storage failures; a refused key is
    /// `Ok` with a rejection (use [`KeyVerdict::into_key`] for an `Err`).
    ///
    /// The record itself may come from the Redis cache, which every change
    /// of the key (revoke, disable, enable, permissions, details, credits,
    /// rate limits) invalidates before the change returns, so the next
    /// verification anywhere sees it. Without the cache, credits are spent
    /// with one atomic statement in the database. Behind the Redis cache,
    /// the whole verification is one Lua script (one round trip): it reads
    /// the cached record, refuses before taking anything, applies the rate
    /// limits (when the key limiter is a Redis limiter on the cache's
    /// Redis) and spends credits held in Redis, seeded from the database on
    /// first use and written back in the usage flush. Either way, across
    /// every process, a budget of N accepts exactly N; behind the cache, a
    /// Redis that loses a balance can overspend it by the spends not yet
    /// written back (see the README's key policy section). Rate limits are
    /// as shared as the limiter (Redis: every process). Usage counts and
    /// `last_used` are buffered (see [`usage`](Self::usage)).
    ///
    /// Keys without a policy pass every check but permissions (they hold
    /// none).
    pub async fn verify(&self, presented: &str, check: &KeyCheck) -> Result<KeyVerdict> {
        traced(site!("verify", "api_keys"), async {
            check.check()?;
            let s = self.store;
            let secret = match ApiKeySecret::parse(presented) {
                Ok(secret) => secret,
                Err(Error::Unauthorized(why)) => return Ok(KeyVerdict::refused(why, None)),
                Err(e) => return Err(e),
            };
            let hash = secret.hash();
            let now = s.now();
            let one_step = OneStepCheck {
                hash: &hash,
                check,
                now,
                limiter: s.keys.limiter.as_ref(),
                limits_in_script: s.keys.limits_in_script.as_deref(),
            };
            let mut verdict = match s.backend.verify_one_step(&one_step).await? {
                Some(done) => {
                    if let Some(write) = done.write {
                        s.keys.usage.credits(write);
                    }
                    done.verdict
                }
                None => {
                    let Some(key) = s.backend.find_key_by_hash(&hash).await? else {
                        return Ok(KeyVerdict::refused(KeyRejection::Unknown, None));
                    };
                    self.decide(key, check, now).await?
                }
            };
            if let Some(key) = &mut verdict.key {
                self.count(key, verdict.rejection, now);
                if verdict.rejection.is_none() {
                    key.last_used = s.keys.usage.touch(key, now);
                }
            }
            Ok(verdict)
        })
        .await
    }

    async fn decide(
        &self,
        key: ApiKey,
        check: &KeyCheck,
        now: DateTime<Utc>,
    ) -> Result<KeyVerdict> {
        let s = self.store;
        if let Some(why) = key.rejection(now, check.service.as_deref()) {
            return Ok(KeyVerdict::refused(why, Some(key)));
        }
        if key.policy.disabled_at.is_some() {
            return Ok(KeyVerdict::refused(KeyRejection::Disabled, Some(key)));
        }
        if !check.permitted(&key.policy.permissions) {
            return Ok(KeyVerdict::refused(
                KeyRejection::InsufficientPermissions,
                Some(key),
            ));
        }
        let mut rate_limits = Vec::with_capacity(key.policy.rate_limits.len());
        if !key.policy.rate_limits.is_empty() {
            let limiter = s.keys.limiter.as_ref().ok_or_else(|| {
                Error::Config("this key has rate limits: set StoreBuilder::key_rate_limiter".into())
            })?;
            for limit in &key.policy.rate_limits {
                let name = key_limit_name(key.id, &limit.name);
                let decision = limiter.check_with(&limit.policy, &name, 1).await?;
                rate_limits.push((limit.name.clone(), decision));
                if !decision.allowed {
                    let retry_after = decision.retry_after.unwrap_or_default();
                    return Ok(KeyVerdict {
                        rejection: Some(KeyRejection::RateLimited { retry_after }),
                        key: Some(key),
                        credits_remaining: None,
                        rate_limits,
                    });
                }
            }
        }
        let mut credits_remaining = None;
        let mut rejection = None;
        if key.policy.credits.is_some() {
            match s.backend.spend_key_credits(key.id, check.cost, now).await? {
                CreditSpend::Unlimited => {}
                CreditSpend::Spent(left) => credits_remaining = Some(left),
                CreditSpend::Exhausted(left) => {
                    credits_remaining = Some(left);
                    rejection = Some(KeyRejection::UsageExceeded);
                }
            }
        }
        Ok(KeyVerdict {
            rejection,
            key: Some(key),
            credits_remaining,
            rate_limits,
        })
    }

    /// Writes this store's balances held in Redis back to the database now
    /// if one of `key` (any key, for `None`) is waiting, so that what this
    /// store reads next holds its own spends. A failure leaves them for the
    /// background flush (the read then shows the database's balance).
    async fn write_back(&self, key: Option<Uuid>) {
        let usage = &self.store.keys.usage;
        if usage.credits_pending(key) {
            if let Err(e) = usage.flush().await {
                tracing::debug!(error = %e, "balances held in Redis not written back before a read");
            }
        }
    }

    /// Disables the key: refused as `Disabled` from the next verification
    /// on (here, in every store sharing the database, and through the Redis
    /// cache), until [`enable`](Self::enable)d. Disabling a disabled key
    /// keeps its first `disabled_at`. `NotFound` if there is no such key.
    pub async fn disable(&self, id: Uuid) -> Result<ApiKey> {
        let s = self.store;
        traced(site!("disable", "api_keys"), async {
            Ok(s.keys
                .usage
                .overlay(s.audited(s.backend.disable_key(id, s.now())).await?))
        })
        .await
    }

    /// Enables a disabled key again (a revoked key stays revoked).
    /// `NotFound` if there is no such key.
    pub async fn enable(&self, id: Uuid) -> Result<ApiKey> {
        let s = self.store;
        traced(site!("enable", "api_keys"), async {
            Ok(s.keys
                .usage
                .overlay(s.audited(s.backend.enable_key(id)).await?))
        })
        .await
    }

    /// Replaces the key's permissions; verifications see the new set from
    /// the next one on. `InvalidInput` (field permission) for an empty or
    /// malformed permission, and nothing is written.
    pub async fn set_permissions<S: Into<String>>(
        &self,
        id: Uuid,
        permissions: impl IntoIterator<Item = S>,
    ) -> Result<ApiKey> {
        let s = self.store;
        let permissions: BTreeSet<String> = permissions.into_iter().map(Into::into).collect();
        traced(site!("set_permissions", "api_keys"), async {
            check_permissions(&permissions)?;
            Ok(s.keys.usage.overlay(
                s.audited(s.backend.set_key_permissions(id, &permissions))
                    .await?,
            ))
        })
        .await
    }

    /// Replaces the key's display name and metadata (a JSON object; `None`
    /// clears). Never used for lookup.
    pub async fn set_details(
        &self,
        id: Uuid,
        name: Option<&str>,
        metadata: Option<Json>,
    ) -> Result<ApiKey> {
        let s = self.store;
        traced(site!("set_details", "api_keys"), async {
            if let Some(name) = name {
                check_name(name)?;
            }
            if let Some(metadata) = &metadata {
                check_metadata(metadata)?;
            }
            Ok(s.keys.usage.overlay(
                s.audited(s.backend.set_key_details(id, name, metadata.as_ref()))
                    .await?,
            ))
        })
        .await
    }

    /// Replaces the key's budget (`None`: unlimited). `InvalidInput` for
    /// credits below zero or a refill of zero, and nothing is written.
    pub async fn set_credits(&self, id: Uuid, credits: Option<KeyCredits>) -> Result<ApiKey> {
        let s = self.store;
        traced(site!("set_credits", "api_keys"), async {
            if let Some(c) = &credits {
                c.check()?;
            }
            let now = s.now();
            let credits = credits.map(|c| start_refill(c, now));
            s.keys.usage.forget_credits(id);
            Ok(s.keys.usage.overlay(
                s.audited(s.backend.set_key_credits(id, credits.as_ref()))
                    .await?,
            ))
        })
        .await
    }

    /// Replaces the key's named rate limits.
    pub async fn set_rate_limits(&self, id: Uuid, limits: Vec<KeyRateLimit>) -> Result<ApiKey> {
        let s = self.store;
        traced(site!("set_rate_limits", "api_keys"), async {
            check_rate_limits(&limits)?;
            Ok(s.keys.usage.overlay(
                s.audited(s.backend.set_key_rate_limits(id, &limits))
                    .await?,
            ))
        })
        .await
    }

    /// The key's verification counts in `range`, per UTC hour or day and
    /// outcome, ordered by bucket then outcome (in [`KeyOutcome::ALL`]'s
    /// order). Counted for every verification (`verify`, `validate`,
    /// `validate_for`) that found the key; malformed and unknown keys count
    /// for none. Counts are buffered and written every
    /// [`USAGE_FLUSH_EVERY`](crate::USAGE_FLUSH_EVERY), so they lag by up to
    /// that (call [`flush_usage`](Self::flush_usage) first for this
    /// process's latest). A crash loses at most what was buffered.
    pub async fn usage(
        &self,
        id: Uuid,
        bucket: TimeBucket,
        range: TimeRange,
    ) -> Result<Vec<KeyUsage>> {
        traced(
            site!("usage", "api_key_usage"),
            self.store.backend.key_usage(id, bucket, range),
        )
        .await
    }

    /// Writes this store's buffered usage counts and `last_used` times now
    /// (one statement). On failure they stay buffered for the next try.
    pub async fn flush_usage(&self) -> Result<()> {
        traced(
            site!("flush_usage", "api_key_usage"),
            self.store.keys.usage.flush(),
        )
        .await
    }

    /// How many usage counts (and `last_used` times) were dropped because
    /// the buffer was full (the database unreachable for long).
    pub fn usage_dropped(&self) -> u64 {
        self.store.keys.usage.dropped()
    }

    /// The key with this id (revoked or not); `NotFound` if there is none.
    pub async fn get(&self, id: Uuid) -> Result<ApiKey> {
        traced(site!("get", "api_keys"), async {
            self.write_back(Some(id)).await;
            let key = self
                .store
                .backend
                .get_key(id)
                .await?
                .ok_or(not_found(Entity::ApiKey, id))?;
            Ok(self.store.keys.usage.overlay(key))
        })
        .await
    }

    /// Revokes the key: it is refused from the next validation on, here and
    /// in services that look keys up by hash themselves. Revoking a revoked
    /// key changes nothing. `NotFound` if there is no such key.
    pub async fn revoke(&self, id: Uuid) -> Result<ApiKey> {
        let s = self.store;
        traced(
            site!("revoke", "api_keys"),
            s.audited(s.backend.revoke_key(id, s.now())),
        )
        .await
    }

    /// A user's keys, revoked ones included, oldest first. Hashes are never
    /// returned.
    pub async fn list_for_user(&self, user_id: Uuid) -> Result<Vec<ApiKey>> {
        traced(site!("list_for_user", "api_keys"), async {
            self.write_back(None).await;
            let keys = self.store.backend.list_keys(user_id).await?;
            Ok(keys
                .into_iter()
                .map(|k| self.store.keys.usage.overlay(k))
                .collect())
        })
        .await
    }

    /// Issues a replacement for key `id` (same user and service, expiring
    /// at `expires_at`) and revokes the old one, in one transaction.
    /// `NotFound` if there is no such key; `InvalidInput` (field `id`) if it
    /// is already revoked.
    pub async fn rotate(&self, id: Uuid, expires_at: Option<DateTime<Utc>>) -> Result<IssuedKey> {
        let s = self.store;
        traced(site!("rotate", "api_keys"), async {
            self.write_back(Some(id)).await;
            let old = s
                .backend
                .get_key(id)
                .await?
                .ok_or(not_found(Entity::ApiKey, id))?;
            let now = s.now();
            // The replacement carries the old key's policy (its credits as
            // the database holds them now).
            let mut policy = old.policy.clone();
            policy.disabled_at = None;
            let (row, secret) = self.new_row(old.user_id, &old.service, expires_at, now, policy)?;
            let key = s.audited(s.backend.rotate_key(id, row, now)).await?;
            Ok(IssuedKey { key, secret })
        })
        .await
    }
}

/// A refill's first period is the one holding `now`.
fn start_refill(mut credits: KeyCredits, now: DateTime<Utc>) -> KeyCredits {
    if let Some(r) = credits.refill {
        credits
            .refilled_at
            .get_or_insert(r.interval.period_start(now));
    }
    credits
}

fn start_refills(mut policy: KeyPolicy, now: DateTime<Utc>) -> KeyPolicy {
    policy.credits = policy.credits.map(|c| start_refill(c, now));
    policy
}
