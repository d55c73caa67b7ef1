use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Field};

/// The longest address accepted, in bytes (RFC 5321's path limit, and under
/// the `varchar(255)` column).
pub const MAX_EMAIL_LEN: usize = 254;

/// A validated email address.
///
/// The address is kept as it was given (for display), but compares, hashes
/// and is looked up case-insensitively: `Alice@Example.com` and
/// `alice@example.com` are the same user, and a second user cannot take
/// either.
///
/// Accepted: ASCII `local@domain`, at most 254 bytes, a local part of 1 to 64
/// characters from RFC 5322's unquoted set without leading, trailing or
/// doubled dots, and a domain of at least two dot-separated labels of letters,
/// digits and inner hyphens. Quoted local parts, IP-literal domains and
/// non-ASCII addresses are refused.
///
/// ```
/// use dreamnet_db::Email;
///
/// let a: Email = "Alice@Example.com".parse()?;
/// let b: Email = "alice@example.com".parse()?;
/// assert_eq!(a, b);
/// assert_eq!(a.as_str(), "Alice@Example.com");
/// assert_eq!(a.normalized(), "alice@example.com");
/// assert!("not-an-email".parse::<Email>().is_err());
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Clone)]
pub struct Email(String);

impl Email {
    /// Wraps an address read back from the database without re-checking
    /// it: rows written by older services may not pass today's rules.
    pub(crate) fn from_stored(s: String) -> Self {
        Email(s)
    }

    /// Checks `s` and wraps it.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Err(Error::invalid(Field::Email, reason));
        if s.is_empty() {
            return bad("must not be empty");
        }
        if s.len() > MAX_EMAIL_LEN {
            return bad("longer than 254 bytes");
        }
        if !s.is_ascii() {
            return bad("only ASCII addresses are accepted");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return bad("missing '@'");
        };
        if domain.contains('@') {
            return bad("more than one '@'");
        }
        if local.is_empty() || local.len() > 64 {
            return bad("the part before '@' must be 1 to 64 characters");
        }
        const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~.-";
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
        {
            return bad("the part before '@' has a character that is not allowed");
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return bad("the part before '@' has a misplaced dot");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return bad("the domain needs at least one dot");
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return bad("a domain label must be 1 to 63 characters");
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return bad("a domain label has a character that is not allowed");
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return bad("the top-level domain cannot be numeric");
        }
        Ok(Email(s.to_owned()))
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-case form used for matching and uniqueness.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for Email {}

impl Hash for Email {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Email").field(&self.0).finish()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Email {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Email::parse(s)
    }
}

impl Serialize for Email {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Email::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "x_y-z@xn--bcher-kva.example",
            "O'Brien@example.ie",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn refuses_malformed_addresses_naming_the_field() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            ".a@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b.123",
            "ü@b.com",
            "a@b..com",
            "a\0@b.com",
            long.as_str(),
        ] {
            match Email::parse(bad) {
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, Field::Email),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn compares_case_insensitively_but_keeps_the_given_form() {
        let a = Email::parse("Bob@Example.COM").unwrap();
        assert_eq!(a, Email::parse("bob@example.com").unwrap());
        assert_eq!(a.to_string(), "Bob@Example.COM");
        assert_eq!(a.normalized(), "bob@example.com");
    }
}
