use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::KeyPolicy;
use crate::error::{Error, Field, KeyRejection};

/// The prefix of every key this crate issues, so that secret scanners can
/// recognise a leaked DreamNet key.
pub const KEY_PREFIX: &str = "dnk_";

/// Random bytes in an issued key: 256 bits from the operating system.
const KEY_RANDOM_BYTES: usize = 32;

/// The longest string [`ApiKeySecret::parse`] accepts, in bytes.
pub const MAX_PRESENTED_KEY_LEN: usize = 512;

/// How many characters of an issued key are kept, in the clear, for display
/// (`dnk_` and the first 8 hex digits).
const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

/// The longest service name, in characters (the column is `varchar(100)`).
pub const MAX_SERVICE_LEN: usize = 100;

/// An API key in plain text. It is shown to its owner once, when issued, and
/// never stored: only its SHA-256 hash is.
///
/// `Debug` and `Display` never print the key; call
/// [`expose_secret`](ApiKeySecret::expose_secret) to hand it to the user.
///
/// ```
/// use dreamnet_db::ApiKeySecret;
///
/// let key = ApiKeySecret::parse("dnk_0000000000000000000000000000000000000000000000000000000000000000")?;
/// assert_eq!(format!("{key:?}"), "ApiKeySecret(dnk_00000000…)");
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Clone)]
pub struct ApiKeySecret(SecretString);

impl ApiKeySecret {
    /// A new key: `dnk_` followed by 64 lower-case hex digits of 256 bits
    /// from the operating system's secure random source.
    pub(crate) fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; KEY_RANDOM_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::Database {
            source: Box::new(std::io::Error::other(format!(
                "the operating system's random source failed: {e}"
            ))),
        })?;
        let mut s = String::with_capacity(KEY_PREFIX.len() + 2 * KEY_RANDOM_BYTES);
        s.push_str(KEY_PREFIX);
        push_hex(&mut s, &bytes);
        Ok(ApiKeySecret(SecretString::from(s)))
    }

    /// Wraps a key presented by a client, refusing strings that cannot be a
    /// key: empty, over 512 bytes, containing white space or control
    /// characters, or starting with `dnk_` without 64 lower-case hex digits
    /// after it. Any other string is accepted, so that keys issued before
    /// this crate (no prefix) keep working.
    pub fn parse(presented: &str) -> Result<Self, Error> {
        let malformed = Err(Error::Unauthorized(KeyRejection::Malformed));
        if presented.is_empty()
            || presented.len() > MAX_PRESENTED_KEY_LEN
            || presented
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return malformed;
        }
        if let Some(rest) = presented.strip_prefix(KEY_PREFIX) {
            if rest.len() != 2 * KEY_RANDOM_BYTES
                || !rest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return malformed;
            }
        }
        Ok(ApiKeySecret(SecretString::from(presented.to_owned())))
    }

    /// The key itself. Show it to its owner once; never log it.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The lower-case hex SHA-256 of the key: what `api_keys.hashed_key`
    /// holds.
    pub fn hash(&self) -> String {
        hash_key(self.0.expose_secret())
    }

    /// The part of an issued key kept for display (`dnk_1a2b3c4d`); `None`
    /// for keys without this crate's prefix.
    pub fn display_prefix(&self) -> Option<String> {
        let s = self.0.expose_secret();
        (s.starts_with(KEY_PREFIX) && s.len() >= DISPLAY_PREFIX_LEN)
            .then(|| s[..DISPLAY_PREFIX_LEN].to_owned())
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.display_prefix() {
            Some(p) => write!(f, "ApiKeySecret({p}…)"),
            None => f.write_str("ApiKeySecret([REDACTED])"),
        }
    }
}

impl fmt::Display for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.display_prefix() {
            Some(p) => write!(f, "{p}…"),
            None => f.write_str("[REDACTED]"),
        }
    }
}

/// SHA-256 of `key` as lower-case hex.
pub(crate) fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut s = String::with_capacity(64);
    push_hex(&mut s, &digest);
    s
}

pub(crate) fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0x0f) as usize] as char);
    }
}

/// Checks a service name: 1 to 100 characters, no control characters, no
/// surrounding white space.
pub(crate) fn check_service(service: &str) -> Result<(), Error> {
    if service.is_empty() || service.chars().count() > MAX_SERVICE_LEN {
        return Err(Error::invalid(
            Field::Service,
            "must be 1 to 100 characters",
        ));
    }
    if service.chars().any(char::is_control) || service.trim() != service {
        return Err(Error::invalid(
            Field::Service,
            "must not contain control characters or surrounding white space",
        ));
    }
    Ok(())
}

/// A row of `api_keys`, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The key's id.
    pub id: Uuid,
    /// The user it belongs to.
    pub user_id: Uuid,
    /// The service it was issued for.
    pub service: String,
    /// The start of the key, for display (`dnk_1a2b3c4d`); `None` for keys
    /// issued before this crate.
    pub prefix: Option<String>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was last validated, to within the store's
    /// `last_used_resolution` (a minute by default); in the database, a
    /// usage flush (a second) later.
    pub last_used: Option<DateTime<Utc>>,
    /// When it stops being valid, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Its name, metadata, permissions, disabled switch, credits and rate
    /// limits; empty for keys without a policy (every key issued before
    /// policies existed), which validate exactly as before.
    pub policy: KeyPolicy,
}

impl ApiKey {
    /// Why this key would be refused at `now`, if it would.
    pub(crate) fn rejection(
        &self,
        now: DateTime<Utc>,
        service: Option<&str>,
    ) -> Option<KeyRejection> {
        if self.revoked_at.is_some() {
            Some(KeyRejection::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some(KeyRejection::Expired)
        } else if service.is_some_and(|s| s != self.service) {
            Some(KeyRejection::WrongService)
        } else {
            None
        }
    }

    /// `true` if the key is neither revoked nor expired at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.rejection(now, None).is_none()
    }
}

/// A key just issued: its record, and its plain text, shown this once.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The stored record.
    pub key: ApiKey,
    /// The plain-text key to hand to the user. It cannot be recovered later.
    pub secret: ApiKeySecret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_unique_and_parse_back() {
        let a = ApiKeySecret::generate().unwrap();
        let b = ApiKeySecret::generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().starts_with("dnk_"));
        assert_eq!(a.expose_secret().len(), 68);
        let again = ApiKeySecret::parse(a.expose_secret()).unwrap();
        assert_eq!(again.hash(), a.hash());
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        // sha256("abc")
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = ApiKeySecret::generate().unwrap();
        let plain = key.expose_secret().to_owned();
        for shown in [format!("{key:?}"), format!("{key}")] {
            assert!(!shown.contains(&plain[12..]), "{shown}");
        }
        let legacy = ApiKeySecret::parse("legacy-secret-value").unwrap();
        assert!(!format!("{legacy:?}{legacy}").contains("legacy-secret"));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let long = "x".repeat(513);
        for bad in [
            "",
            "has space",
            "tab\there",
            "dnk_short",
            "dnk_0000000000000000000000000000000000000000000000000000000000000000F",
            "dnk_000000000000000000000000000000000000000000000000000000000000000G",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    ApiKeySecret::parse(bad),
                    Err(Error::Unauthorized(KeyRejection::Malformed))
                ),
                "{bad:?}"
            );
        }
        assert!(ApiKeySecret::parse("sk_legacy_Abc123").is_ok());
    }
}
