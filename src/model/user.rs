use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::json::{check_document, check_object, merge};
use super::{Email, Json, WalletAddress};
use crate::error::{Error, Field};

/// A user's passport tier: 1 to 50 characters, no control characters and no
/// surrounding white space. New users start at [`PassportTier::visitor`].
///
/// ```
/// use dreamnet_db::PassportTier;
/// assert_eq!(PassportTier::visitor().as_str(), "visitor");
/// assert!(PassportTier::parse("citizen").is_ok());
/// assert!(PassportTier::parse("").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PassportTier(String);

impl PassportTier {
    /// Wraps a tier read back from the database without re-checking it.
    pub(crate) fn from_stored(s: String) -> Self {
        PassportTier(s)
    }

    /// The default tier, `visitor` (the column's default).
    pub fn visitor() -> Self {
        PassportTier("visitor".to_owned())
    }

    /// Checks `s` and wraps it.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.chars().count() > 50 {
            return Err(Error::invalid(
                Field::PassportTier,
                "must be 1 to 50 characters",
            ));
        }
        if s.chars().any(char::is_control) || s.trim() != s {
            return Err(Error::invalid(
                Field::PassportTier,
                "must not contain control characters or surrounding white space",
            ));
        }
        Ok(PassportTier(s.to_owned()))
    }

    /// The tier's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PassportTier {
    fn default() -> Self {
        Self::visitor()
    }
}

impl fmt::Display for PassportTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PassportTier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        PassportTier::parse(s)
    }
}

impl Serialize for PassportTier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PassportTier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PassportTier::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A row of `users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: Uuid,
    /// The email address, if the user has one.
    pub email: Option<Email>,
    /// The wallet address (canonical lower case), if the user has one.
    pub wallet_address: Option<WalletAddress>,
    /// The passport tier.
    pub passport_tier: PassportTier,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed; strictly later after every update.
    pub updated_at: DateTime<Utc>,
    /// Free-form metadata (a JSON object), exactly as stored.
    pub metadata: Json,
    /// The user's preferences (a JSON object), exactly as stored.
    pub preferences: Json,
}

/// What a new user is made of. A user needs an email, a wallet address, or
/// both.
///
/// ```
/// use dreamnet_db::{NewUser, PassportTier};
/// use serde_json::json;
///
/// let new = NewUser::with_email("ada@example.com".parse()?)
///     .wallet_address("0x52908400098527886e0f7030069857d2e4169ee7".parse()?)
///     .passport_tier(PassportTier::parse("citizen")?)
///     .metadata(json!({"source": "signup"}));
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewUser {
    /// The email address.
    pub email: Option<Email>,
    /// The wallet address.
    pub wallet_address: Option<WalletAddress>,
    /// The tier; `visitor` when `None`.
    pub passport_tier: Option<PassportTier>,
    /// Metadata, a JSON object; `{}` when `None`.
    pub metadata: Option<Json>,
    /// Preferences, a JSON object; `{}` when `None`.
    pub preferences: Option<Json>,
}

impl NewUser {
    /// A user who signs in by email.
    pub fn with_email(email: Email) -> Self {
        NewUser {
            email: Some(email),
            ..Self::default()
        }
    }

    /// A user who signs in with a wallet.
    pub fn with_wallet(wallet_address: WalletAddress) -> Self {
        NewUser {
            wallet_address: Some(wallet_address),
            ..Self::default()
        }
    }

    /// Sets the email address.
    pub fn email(mut self, email: Email) -> Self {
        self.email = Some(email);
        self
    }

    /// Sets the wallet address.
    pub fn wallet_address(mut self, wallet_address: WalletAddress) -> Self {
        self.wallet_address = Some(wallet_address);
        self
    }

    /// Sets the passport tier.
    pub fn passport_tier(mut self, tier: PassportTier) -> Self {
        self.passport_tier = Some(tier);
        self
    }

    /// Sets the metadata object.
    pub fn metadata(mut self, metadata: impl Into<Json>) -> Self {
        self.metadata = Some(metadata.into());
        self
    }

    /// Sets the preferences object.
    pub fn preferences(mut self, preferences: impl Into<Json>) -> Self {
        self.preferences = Some(preferences.into());
        self
    }

    /// Checks the new user and builds the row to insert.
    pub(crate) fn into_user(
        self,
        id: Uuid,
        now: DateTime<Utc>,
        max_json: usize,
    ) -> Result<User, Error> {
        if self.email.is_none() && self.wallet_address.is_none() {
            return Err(Error::invalid(
                Field::Email,
                "a user needs an email, a wallet address, or both",
            ));
        }
        let empty = Json::empty_object();
        let metadata = check_user_document(
            Field::Metadata,
            self.metadata.as_ref().unwrap_or(&empty),
            max_json,
        )?;
        let preferences = check_user_document(
            Field::Preferences,
            self.preferences.as_ref().unwrap_or(&empty),
            max_json,
        )?;
        Ok(User {
            id,
            email: self.email,
            wallet_address: self.wallet_address,
            passport_tier: self.passport_tier.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            metadata,
            preferences,
        })
    }
}

/// Checks a user's document (an object within the limits) and returns it
/// as it is stored.
fn check_user_document(field: Field, doc: &Json, max_json: usize) -> Result<Json, Error> {
    check_object(field, doc)?;
    check_document(field, doc, max_json)
}

/// How to change a JSON document of a user.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonChange {
    /// Replace the whole object.
    Replace(Json),
    /// Apply an RFC 7386 JSON merge patch: keys in the patch are set, keys
    /// set to `null` are removed, nested objects merge. Values the patch
    /// does not reach keep their exact text.
    Merge(Json),
}

/// A change to a user. Fields left `None` stay as they are; `updated_at`
/// moves on every update.
///
/// ```
/// use dreamnet_db::{PassportTier, UserUpdate};
/// use serde_json::json;
///
/// let update = UserUpdate::new()
///     .passport_tier(PassportTier::parse("citizen")?)
///     .merge_preferences(json!({"theme": "dark", "beta": null}))
///     .remove_email();
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserUpdate {
    /// `Some(Some(e))` sets the email, `Some(None)` removes it.
    pub email: Option<Option<Email>>,
    /// `Some(Some(w))` sets the wallet address, `Some(None)` removes it.
    pub wallet_address: Option<Option<WalletAddress>>,
    /// A new passport tier.
    pub passport_tier: Option<PassportTier>,
    /// A change to the metadata.
    pub metadata: Option<JsonChange>,
    /// A change to the preferences.
    pub preferences: Option<JsonChange>,
}

impl UserUpdate {
    /// An update that changes nothing but `updated_at`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the email address.
    pub fn email(mut self, email: Email) -> Self {
        self.email = Some(Some(email));
        self
    }

    /// Removes the email address (the user must keep a wallet address).
    pub fn remove_email(mut self) -> Self {
        self.email = Some(None);
        self
    }

    /// Sets the wallet address.
    pub fn wallet_address(mut self, wallet_address: WalletAddress) -> Self {
        self.wallet_address = Some(Some(wallet_address));
        self
    }

    /// Removes the wallet address (the user must keep an email address).
    pub fn remove_wallet_address(mut self) -> Self {
        self.wallet_address = Some(None);
        self
    }

    /// Sets the passport tier.
    pub fn passport_tier(mut self, tier: PassportTier) -> Self {
        self.passport_tier = Some(tier);
        self
    }

    /// Replaces the metadata object.
    pub fn replace_metadata(mut self, metadata: impl Into<Json>) -> Self {
        self.metadata = Some(JsonChange::Replace(metadata.into()));
        self
    }

    /// Merges a JSON merge patch into the metadata.
    pub fn merge_metadata(mut self, patch: impl Into<Json>) -> Self {
        self.metadata = Some(JsonChange::Merge(patch.into()));
        self
    }

    /// Replaces the preferences object.
    pub fn replace_preferences(mut self, preferences: impl Into<Json>) -> Self {
        self.preferences = Some(JsonChange::Replace(preferences.into()));
        self
    }

    /// Merges a JSON merge patch into the preferences.
    pub fn merge_preferences(mut self, patch: impl Into<Json>) -> Self {
        self.preferences = Some(JsonChange::Merge(patch.into()));
        self
    }

    /// Checks what can be checked without the current row.
    pub(crate) fn check(&self, max_json: usize) -> Result<(), Error> {
        for (field, change) in [
            (Field::Metadata, &self.metadata),
            (Field::Preferences, &self.preferences),
        ] {
            if let Some(JsonChange::Replace(v) | JsonChange::Merge(v)) = change {
                check_user_document(field, v, max_json)?;
            }
        }
        if matches!(self.email, Some(None)) && matches!(self.wallet_address, Some(None)) {
            return Err(Error::invalid(
                Field::Email,
                "a user needs an email, a wallet address, or both",
            ));
        }
        Ok(())
    }

    /// The user as it is after this update, read at `now`. `updated_at`
    /// becomes `now`, or one microsecond past the previous `updated_at` if
    /// the clock has not moved past it, so it always moves forward.
    pub(crate) fn apply(
        &self,
        current: &User,
        now: DateTime<Utc>,
        max_json: usize,
    ) -> Result<User, Error> {
        self.check(max_json)?;
        let mut next = current.clone();
        if let Some(email) = &self.email {
            next.email = email.clone();
        }
        if let Some(wallet) = &self.wallet_address {
            next.wallet_address = wallet.clone();
        }
        if next.email.is_none() && next.wallet_address.is_none() {
            return Err(Error::invalid(
                Field::Email,
                "a user needs an email, a wallet address, or both",
            ));
        }
        if let Some(tier) = &self.passport_tier {
            next.passport_tier = tier.clone();
        }
        for (field, change, doc) in [
            (Field::Metadata, &self.metadata, &mut next.metadata),
            (Field::Preferences, &self.preferences, &mut next.preferences),
        ] {
            match change {
                None => {}
                Some(JsonChange::Replace(v)) => *doc = check_user_document(field, v, max_json)?,
                Some(JsonChange::Merge(patch)) => {
                    // The merged object is checked whole, as it is stored:
                    // the parts the patch did not reach are kept exactly.
                    let merged = merge(doc, patch);
                    *doc = check_user_document(field, &merged, max_json)?;
                }
            }
        }
        next.updated_at = now.max(current.updated_at + Duration::microseconds(1));
        Ok(next)
    }
}
