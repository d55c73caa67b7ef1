//! The names of everything the cache keeps in Redis.
//!
//! Every name starts with the store's prefix (`dreamnet:v1:` by default), so
//! two applications can share one Redis, and a change of layout can move to
//! `v2` without reading old entries. Under the prefix:
//!
//! | name | holds | written by |
//! | --- | --- | --- |
//! | `u:{user id}` | the user, as JSON | a lease-checked fill |
//! | `ue:{h(email)}` | the id of the user with this email | any reader |
//! | `uw:{h(wallet)}` | the id of the user with this wallet | any reader |
//! | `k:{h(key hash)}` | the id of the API key with this hash | any reader |
//! | `kr:{key id}` | the API key's record (no hash), as JSON | a lease-checked fill |
//! | `{record or index}:lease` | the token of the one reader allowed to fill it | a reader that missed |
//! | `{record}:inv` | a marker: the record was invalidated in the last 10 s | an invalidation |
//! | `uk:{user id}` | the ids of this user's cached key records (a set) | a key fill |
//! | `ud:{user id}` | a tombstone: the user was deleted in the last 10 s | a user deletion |
//!
//! `h(x)` is the lower-case hex SHA-256 of a domain tag and `x`, so Redis
//! never holds an API key, nor the `hashed_key` the database matches
//! presented keys against, and its key names hold no email or wallet
//! address.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::{Email, WalletAddress};

/// The default prefix of every Redis key the cache writes.
pub const DEFAULT_CACHE_PREFIX: &str = "dreamnet:v1:";

/// Builds the Redis key names of one store's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The namespace itself (for `SCAN MATCH`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cached user with this id.
    pub(crate) fn user(&self, id: Uuid) -> String {
        format!("{}u:{}", self.prefix, id.simple())
    }

    /// What [`user`](Self::user) names, minus the id: the Lua scripts append
    /// an id read from an index entry.
    pub(crate) fn user_record_prefix(&self) -> String {
        format!("{}u:", self.prefix)
    }

    /// The email index entry: email (compared case-insensitively) to id.
    pub(crate) fn email(&self, email: &Email) -> String {
        format!(
            "{}ue:{}",
            self.prefix,
            digest("dreamnet-db/cache/email\0", &email.normalized())
        )
    }

    /// The wallet index entry: canonical wallet address to id.
    pub(crate) fn wallet(&self, wallet: &WalletAddress) -> String {
        format!(
            "{}uw:{}",
            self.prefix,
            digest("dreamnet-db/cache/wallet\0", wallet.as_str())
        )
    }

    /// The key index entry: the hash of a presented key to the key's id.
    /// `hash` is the value of `api_keys.hashed_key`; it is hashed again under
    /// a domain tag, so the name is useless for matching keys in the
    /// database.
    pub(crate) fn key_by_hash(&self, hash: &str) -> String {
        format!(
            "{}k:{}",
            self.prefix,
            digest("dreamnet-db/cache/api-key\0", hash)
        )
    }

    /// The cached API key record with this id.
    pub(crate) fn key(&self, id: Uuid) -> String {
        format!("{}kr:{}", self.prefix, id.simple())
    }

    /// What [`key`](Self::key) names, minus the id.
    /// A key's credit balance (credits held in Redis).
    pub(crate) fn key_credits(&self, id: Uuid) -> String {
        format!("{}kc:{}", self.prefix, id.simple())
    }

    pub(crate) fn key_record_prefix(&self) -> String {
        format!("{}kr:", self.prefix)
    }

    /// The ids of a user's cached key records.
    pub(crate) fn user_keys(&self, user: Uuid) -> String {
        format!("{}uk:{}", self.prefix, user.simple())
    }

    /// The tombstone of a deleted user.
    pub(crate) fn user_deleted(&self, user: Uuid) -> String {
        format!("{}ud:{}", self.prefix, user.simple())
    }
}

/// The fill lease of a cached record or index entry.
pub(crate) fn lease(entry: &str) -> String {
    format!("{entry}:lease")
}

/// The marker an invalidation leaves beside a record, which refuses fills
/// through an index entry leased before it.
pub(crate) fn invalidated(record: &str) -> String {
    format!("{record}:inv")
}

/// Lower-case hex SHA-256 of `tag` followed by `value`.
fn digest(tag: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update(value.as_bytes());
    let out = h.finalize();
    let mut s = String::with_capacity(64);
    for b in out.iter() {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_hide_what_they_index() {
        let keys = Keys::new("app:");
        let id = Uuid::nil();
        assert_eq!(keys.user(id), format!("app:u:{}", id.simple()));
        assert_eq!(
            lease(&keys.key(id)),
            format!("app:kr:{}:lease", id.simple())
        );
        let hash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let name = keys.key_by_hash(hash);
        assert!(name.starts_with("app:k:"));
        assert!(!name.contains(hash));
        assert_eq!(name.len(), "app:k:".len() + 64);
        let email: Email = "Ada@Example.com".parse().unwrap();
        let same: Email = "ada@example.com".parse().unwrap();
        assert_eq!(keys.email(&email), keys.email(&same));
        assert!(!keys.email(&email).to_lowercase().contains("example"));
        // Different domains never collide, even on equal input.
        let wallet: WalletAddress = "0x52908400098527886e0f7030069857d2e4169ee7"
            .parse()
            .unwrap();
        assert_ne!(
            digest("dreamnet-db/cache/wallet\0", wallet.as_str()),
            digest("dreamnet-db/cache/email\0", wallet.as_str())
        );
    }
}
