//! Users and their API keys, with the indexes their lookups need.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Pos, user_not_found};
use crate::backend::NewKeyRow;
use crate::backend::Settings;
use crate::backend::{CreditState, UsageBatch};
use crate::error::{Entity, Error, Field, Result};
use crate::model::{
    ApiKey, CreditSpend, Cursor, Email, KeyOutcome, KeyPolicy, KeyUsage, TimeBucket, TimeRange,
    User, UserUpdate, WalletAddress,
};

/// A stored key: its record and the hash it is found by.
#[derive(Debug)]
struct KeyEntry {
    key: ApiKey,
    hash: String,
    /// The budget's version (moved by each replacement) and the spends
    /// written back from Redis, as `api_key_policies` keeps them.
    credits_version: i64,
    credits_seq: i64,
}

/// The `users` and `api_keys` tables.
#[derive(Debug, Default)]
pub(super) struct Accounts {
    users: HashMap<Uuid, User>,
    /// `Email` hashes and compares case-insensitively: this is the unique
    /// index on `lower(email)`.
    by_email: HashMap<Email, Uuid>,
    /// Wallet addresses are canonical (lower case) once parsed.
    by_wallet: HashMap<WalletAddress, Uuid>,
    /// Users in list order.
    user_order: BTreeSet<Pos>,
    keys: HashMap<Uuid, KeyEntry>,
    /// The unique index on `hashed_key`. Revoked keys stay in it: lookups
    /// find them, and validation refuses them as revoked.
    by_hash: HashMap<String, Uuid>,
    /// Each user's keys in `(created_at, id)` order.
    keys_of: HashMap<Uuid, BTreeSet<Pos>>,
    /// `api_key_usage`: counts per (key, hour, outcome).
    usage: BTreeMap<(Uuid, DateTime<Utc>, KeyOutcome), u64>,
}

impl Accounts {
    pub(super) fn user_count(&self) -> usize {
        self.users.len()
    }

    pub(super) fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn user(&self, id: Uuid) -> Option<&User> {
        self.users.get(&id)
    }

    pub(super) fn user_by_email(&self, email: &Email) -> Option<&User> {
        self.by_email.get(email).and_then(|id| self.users.get(id))
    }

    pub(super) fn user_by_wallet(&self, wallet: &WalletAddress) -> Option<&User> {
        self.by_wallet.get(wallet).and_then(|id| self.users.get(id))
    }

    /// `Conflict` if another user than `me` has `email` or `wallet`; email
    /// is checked first.
    fn check_unique(
        &self,
        email: Option<&Email>,
        wallet: Option<&WalletAddress>,
        me: Option<Uuid>,
    ) -> Result<()> {
        let taken = |owner: Option<&Uuid>| owner.is_some_and(|&o| Some(o) != me);
        if email.is_some_and(|e| taken(self.by_email.get(e))) {
            return Err(Error::Conflict {
                field: Field::Email,
            });
        }
        if wallet.is_some_and(|w| taken(self.by_wallet.get(w))) {
            return Err(Error::Conflict {
                field: Field::WalletAddress,
            });
        }
        Ok(())
    }

    /// Checks that `row` can be inserted for a user who exists (or is
    /// `new_user`, being inserted with it).
    fn check_new_key(&self, row: &NewKeyRow, new_user: Option<Uuid>) -> Result<()> {
        let user_id = row.key.user_id;
        if new_user != Some(user_id) && !self.users.contains_key(&user_id) {
            return Err(user_not_found(user_id));
        }
        if self.keys.contains_key(&row.key.id) {
            return Err(Error::Conflict { field: Field::Id });
        }
        if self.by_hash.contains_key(&row.hash) {
            // Two keys from 256 random bits never share a hash; only a
            // duplicated legacy key could.
            return Err(Error::Database {
                source: "another api key already has this hash".into(),
            });
        }
        Ok(())
    }

    /// Inserts `user`, and `key` for them if given, or nothing at all.
    pub(super) fn insert_user(&mut self, user: User, key: Option<NewKeyRow>) -> Result<()> {
        self.check_unique(user.email.as_ref(), user.wallet_address.as_ref(), None)?;
        if self.users.contains_key(&user.id) {
            return Err(Error::Conflict { field: Field::Id });
        }
        if let Some(row) = &key {
            self.check_new_key(row, Some(user.id))?;
        }
        // Everything is checked: from here on nothing fails.
        self.index_user(&user);
        self.users.insert(user.id, user);
        if let Some(row) = key {
            self.put_key(row);
        }
        Ok(())
    }

    fn index_user(&mut self, user: &User) {
        if let Some(e) = &user.email {
            self.by_email.insert(e.clone(), user.id);
        }
        if let Some(w) = &user.wallet_address {
            self.by_wallet.insert(w.clone(), user.id);
        }
        self.user_order.insert((user.created_at, user.id));
    }

    fn unindex_user(&mut self, user: &User) {
        if let Some(e) = &user.email {
            self.by_email.remove(e);
        }
        if let Some(w) = &user.wallet_address {
            self.by_wallet.remove(w);
        }
        self.user_order.remove(&(user.created_at, user.id));
    }

    /// Applies `update` to the current row, reading the clock now, while
    /// the caller holds the write lock.
    pub(super) fn update_user(
        &mut self,
        id: Uuid,
        update: &UserUpdate,
        settings: &Settings,
    ) -> Result<User> {
        let current = self.users.get(&id).ok_or_else(|| user_not_found(id))?;
        let next = update.apply(current, settings.now(), settings.max_payload_bytes)?;
        self.check_unique(next.email.as_ref(), next.wallet_address.as_ref(), Some(id))?;
        if let Some(old) = self.users.insert(id, next.clone()) {
            self.unindex_user(&old);
        }
        self.index_user(&next);
        Ok(next)
    }

    /// Removes the user and their keys. The caller checked that they exist.
    pub(super) fn remove_user(&mut self, id: Uuid) {
        if let Some(user) = self.users.remove(&id) {
            self.unindex_user(&user);
        }
        for (_, key_id) in self.keys_of.remove(&id).unwrap_or_default() {
            if let Some(entry) = self.keys.remove(&key_id) {
                self.by_hash.remove(&entry.hash);
            }
            let from = (key_id, DateTime::<Utc>::MIN_UTC, KeyOutcome::Valid);
            let gone: Vec<_> = self
                .usage
                .range(from..)
                .take_while(|((k, _, _), _)| *k == key_id)
                .map(|(k, _)| *k)
                .collect();
            for k in gone {
                self.usage.remove(&k);
            }
        }
    }

    /// Up to `limit` users after `after` in `(created_at, id)` order.
    /// Users in `(created_at, id)` order, strictly after `after`.
    pub(super) fn users_after(&self, after: Option<Cursor>) -> impl Iterator<Item = &User> + '_ {
        let start = match after {
            Some(c) => Bound::Excluded((c.created_at, c.id)),
            None => Bound::Unbounded,
        };
        self.user_order
            .range((start, Bound::Unbounded))
            .filter_map(|(_, id)| self.users.get(id))
    }

    pub(super) fn list_users(&self, after: Option<Cursor>, limit: usize) -> Vec<User> {
        let start = match after {
            Some(c) => Bound::Excluded((c.created_at, c.id)),
            None => Bound::Unbounded,
        };
        self.user_order
            .range((start, Bound::Unbounded))
            .filter_map(|(_, id)| self.users.get(id))
            .take(limit)
            .cloned()
            .collect()
    }

    pub(super) fn key(&self, id: Uuid) -> Option<&ApiKey> {
        self.keys.get(&id).map(|e| &e.key)
    }

    pub(super) fn key_by_hash(&self, hash: &str) -> Option<&ApiKey> {
        self.by_hash.get(hash).and_then(|id| self.key(*id))
    }

    pub(super) fn keys_of(&self, user_id: Uuid) -> Vec<ApiKey> {
        self.keys_of
            .get(&user_id)
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| self.key(*id))
            .cloned()
            .collect()
    }

    fn put_key(&mut self, row: NewKeyRow) {
        let key = row.key;
        self.by_hash.insert(row.hash.clone(), key.id);
        self.keys_of
            .entry(key.user_id)
            .or_default()
            .insert((key.created_at, key.id));
        self.keys.insert(
            key.id,
            KeyEntry {
                key,
                hash: row.hash,
                credits_version: 0,
                credits_seq: 0,
            },
        );
    }

    pub(super) fn insert_key(&mut self, row: NewKeyRow) -> Result<()> {
        self.check_new_key(&row, None)?;
        self.put_key(row);
        Ok(())
    }

    pub(super) fn revoke_key(&mut self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        let entry = self.keys.get_mut(&id).ok_or(Error::NotFound {
            entity: Entity::ApiKey,
            id,
        })?;
        entry.key.revoked_at.get_or_insert(now);
        Ok(entry.key.clone())
    }

    pub(super) fn rotate_key(
        &mut self,
        old_id: Uuid,
        new: NewKeyRow,
        now: DateTime<Utc>,
    ) -> Result<ApiKey> {
        let old = self.key(old_id).ok_or(Error::NotFound {
            entity: Entity::ApiKey,
            id: old_id,
        })?;
        if old.revoked_at.is_some() {
            return Err(Error::invalid(Field::Id, "the key is already revoked"));
        }
        self.check_new_key(&new, None)?;
        let key = new.key.clone();
        self.revoke_key(old_id, now)?;
        self.put_key(new);
        Ok(key)
    }

    /// Changes the key's policy with `change`, returning the new record.
    pub(super) fn change_policy(
        &mut self,
        id: Uuid,
        change: impl FnOnce(&mut KeyPolicy),
    ) -> Result<ApiKey> {
        let entry = self.keys.get_mut(&id).ok_or(Error::NotFound {
            entity: Entity::ApiKey,
            id,
        })?;
        change(&mut entry.key.policy);
        Ok(entry.key.clone())
    }

    pub(super) fn spend_credits(
        &mut self,
        id: Uuid,
        cost: i64,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend> {
        let entry = self.keys.get_mut(&id).ok_or(Error::NotFound {
            entity: Entity::ApiKey,
            id,
        })?;
        let Some(credits) = entry.key.policy.credits.as_mut() else {
            return Ok(CreditSpend::Unlimited);
        };
        let (available, refilled) = credits.available(now);
        if available < cost.max(1) {
            return Ok(CreditSpend::Exhausted(available));
        }
        credits.remaining = available - cost;
        if refilled.is_some() {
            credits.refilled_at = refilled;
        }
        Ok(CreditSpend::Spent(credits.remaining))
    }

    /// A new budget for the key: balances held elsewhere for the old one
    /// no longer count.
    pub(super) fn new_credit_version(&mut self, id: Uuid) {
        if let Some(entry) = self.keys.get_mut(&id) {
            entry.credits_version += 1;
        }
    }

    pub(super) fn credit_state(&self, id: Uuid) -> Option<CreditState> {
        let entry = self.keys.get(&id)?;
        let credits = entry.key.policy.credits?;
        Some(CreditState {
            remaining: credits.remaining,
            refilled_at: credits.refilled_at,
            version: entry.credits_version,
            seq: entry.credits_seq,
        })
    }

    pub(super) fn flush_usage(&mut self, batch: &UsageBatch) {
        for w in &batch.credits {
            if let Some(entry) = self.keys.get_mut(&w.key) {
                if entry.credits_version != w.version || entry.credits_seq >= w.seq {
                    continue;
                }
                if let Some(credits) = entry.key.policy.credits.as_mut() {
                    credits.remaining = w.remaining;
                    credits.refilled_at = w.refilled_at;
                    entry.credits_seq = w.seq;
                }
            }
        }
        for &(id, at) in &batch.last_used {
            if let Some(entry) = self.keys.get_mut(&id) {
                if entry.key.last_used.is_none_or(|t| t < at) {
                    entry.key.last_used = Some(at);
                }
            }
        }
        for &(id, hour, outcome, n) in &batch.counts {
            if self.keys.contains_key(&id) {
                *self.usage.entry((id, hour, outcome)).or_default() += n;
            }
        }
    }

    pub(super) fn usage_of(&self, id: Uuid, bucket: TimeBucket, range: TimeRange) -> Vec<KeyUsage> {
        let mut sums: BTreeMap<(DateTime<Utc>, KeyOutcome), u64> = BTreeMap::new();
        let from = (id, DateTime::<Utc>::MIN_UTC, KeyOutcome::Valid);
        for (&(k, hour, outcome), &n) in self.usage.range(from..) {
            if k != id {
                break;
            }
            if range.since.is_some_and(|s| hour < s) || range.until.is_some_and(|u| hour >= u) {
                continue;
            }
            *sums.entry((bucket.start_of(hour), outcome)).or_default() += n;
        }
        sums.into_iter()
            .map(|((bucket, outcome), count)| KeyUsage {
                bucket,
                outcome,
                count,
            })
            .collect()
    }
}
