use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest, Keccak256};

use crate::error::{Error, Field};

/// A validated Ethereum address: `0x` followed by 40 hex digits.
///
/// All-lower-case and all-upper-case hex are accepted as they are; a
/// mixed-case address must carry a correct EIP-55 checksum, so a mistyped
/// checksummed address is caught. The canonical form, stored and compared,
/// is lower case; [`WalletAddress::to_checksum`] gives the EIP-55 form for
/// display.
///
/// ```
/// use dreamnet_db::WalletAddress;
///
/// let w: WalletAddress = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".parse()?;
/// assert_eq!(w.as_str(), "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed");
/// assert_eq!(w.to_checksum(), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
/// // One letter's case flipped: the checksum no longer matches.
/// assert!("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".parse::<WalletAddress>().is_err());
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalletAddress(String);

impl WalletAddress {
    /// Wraps an address read back from the database without re-checking
    /// it, in its canonical (lower-case) form.
    pub(crate) fn from_stored(s: String) -> Self {
        WalletAddress(s.to_ascii_lowercase())
    }

    /// Checks `s` and wraps its canonical (lower-case) form.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Err(Error::invalid(Field::WalletAddress, reason));
        let Some(hex) = s.strip_prefix("0x") else {
            return bad("must start with 0x");
        };
        if hex.len() != 40 {
            return bad("must have exactly 40 hex digits after 0x");
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("must contain only hex digits after 0x");
        }
        let lower = hex.to_ascii_lowercase();
        let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper && checksummed(&lower) != hex {
            return bad("mixed-case address with an invalid EIP-55 checksum");
        }
        Ok(WalletAddress(format!("0x{lower}")))
    }

    /// The canonical lower-case form, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The EIP-55 mixed-case checksum form.
    ///
    /// An address another service stored in some other form (not `0x` and
    /// 40 hex digits) has no checksum form: it is returned as stored.
    pub fn to_checksum(&self) -> String {
        match self.0.strip_prefix("0x") {
            Some(hex) if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                format!("0x{}", checksummed(hex))
            }
            _ => self.0.clone(),
        }
    }
}

/// EIP-55: upper-case each hex letter whose nibble in keccak256 of the
/// lower-case hex string is 8 or more.
fn checksummed(lower_hex: &str) -> String {
    let hash = Keccak256::digest(lower_hex.as_bytes());
    lower_hex
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let byte = hash[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

impl fmt::Debug for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WalletAddress").field(&self.0).finish()
    }
}

impl fmt::Display for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WalletAddress {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        WalletAddress::parse(s)
    }
}

impl Serialize for WalletAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WalletAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WalletAddress::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_addresses_of_other_forms_never_panic() {
        for stored in ["", "0", "0x", "é", "0é", "0xé", "not-a-wallet", "0x12"] {
            let w = super::WalletAddress::from_stored(stored.to_owned());
            assert_eq!(w.to_checksum(), stored.to_ascii_lowercase());
        }
    }

    use super::*;

    // The test vectors of EIP-55 itself.
    const EIP55: [&str; 4] = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn eip55_vectors_round_trip() {
        for v in EIP55 {
            let w = WalletAddress::parse(v).unwrap();
            assert_eq!(w.as_str(), v.to_ascii_lowercase());
            assert_eq!(w.to_checksum(), v);
        }
    }

    #[test]
    fn single_case_addresses_need_no_checksum() {
        let lower = "0x52908400098527886e0f7030069857d2e4169ee7";
        let upper = "0x52908400098527886E0F7030069857D2E4169EE7";
        assert_eq!(
            WalletAddress::parse(lower).unwrap(),
            WalletAddress::parse(upper).unwrap()
        );
    }

    #[test]
    fn refuses_bad_addresses_naming_the_field() {
        for bad in [
            "",
            "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "0X5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed0",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg",
            "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        ] {
            match WalletAddress::parse(bad) {
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, Field::WalletAddress),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
