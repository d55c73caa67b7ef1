//! Property tests for every parser a caller feeds with untrusted text:
//! `Email`, `WalletAddress`, `EventType`, `PassportTier`, `ApiKeySecret`
//! (and API key validation), `SessionId` and `Cursor`'s string form.
//!
//! For each: no input panics (arbitrary Unicode, NUL and control
//! characters, very long strings, near misses of valid values); every
//! display and serialized form parses back to the same value; what is
//! refused is refused with the error that names the right field. Values
//! expected to be refused are invalid by construction, never by chance, so
//! no property can fail on an unlucky draw.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;

use chrono::DateTime;
use dreamnet_db::{
    ApiKeySecret, Cursor, Email, Error, EventType, Field, KEY_PREFIX, KeyRejection, MAX_EMAIL_LEN,
    MAX_PRESENTED_KEY_LEN, PassportTier, SessionId, WalletAddress,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use sha2::Digest as _;
use sha2::Sha256;
use sha3::Keccak256;
use uuid::Uuid;

// ---- inputs ----

/// Characters the parsers treat specially, and some that tend to break
/// hand-written parsers (NUL, DEL, NEL, NBSP, zero-width space, line
/// separator, BOM, multi-byte letters).
const AWKWARD: &[char] = &[
    '\0', '\t', '\n', '\r', ' ', '\u{7f}', '\u{85}', '\u{a0}', '\u{200b}', '\u{2028}', '\u{feff}',
    'é', '𝄞', '@', '.', '-', '_', ':', '/', '+', '0', '9', 'a', 'f', 'g', 'x', 'A', 'F', 'X', 'Z',
    '"', '\\', ';', '=', '!', '~',
];

fn awkward_char() -> impl Strategy<Value = char> {
    prop_oneof![any::<char>(), prop::sample::select(AWKWARD)]
}

/// Any character for which `keep` holds: any character, with those for
/// which it does not replaced by `instead` (so nothing is rejected and
/// retried, however rare the characters kept).
fn char_where(keep: fn(char) -> bool, instead: char) -> impl Strategy<Value = char> {
    assert!(keep(instead));
    any::<char>().prop_map(move |c| if keep(c) { c } else { instead })
}

/// Every control character (Unicode category Cc).
fn control_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::char::range('\0', '\u{1f}'),
        prop::char::range('\u{7f}', '\u{9f}')
    ]
}

/// Every white-space character (Unicode property White_Space).
fn space_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::char::range('\t', '\r'),
        prop::char::range('\u{2000}', '\u{200a}'),
        prop::sample::select(vec![
            ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}',
            '\u{3000}',
        ]),
    ]
}

/// Any string at all: arbitrary Unicode with control characters, strings
/// of the characters above, and very long strings.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(any::<char>(), 0..64).prop_map(String::from_iter),
        3 => prop::collection::vec(awkward_char(), 0..96).prop_map(String::from_iter),
        1 => prop::collection::vec(any::<char>(), 0..3_000).prop_map(String::from_iter),
        1 => (0usize..20_000, prop::collection::vec(awkward_char(), 0..8))
            .prop_map(|(n, tail)| "a".repeat(n) + &String::from_iter(tail)),
    ]
}

/// `valid` with one to three characters inserted, replaced or removed.
fn near(valid: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let edit = (0u8..3, any::<Index>(), awkward_char());
    (valid, prop::collection::vec(edit, 1..4)).prop_map(|(s, edits)| {
        let mut chars: Vec<char> = s.chars().collect();
        for (op, at, c) in edits {
            match op {
                0 => chars.insert(at.index(chars.len() + 1), c),
                1 if !chars.is_empty() => {
                    let i = at.index(chars.len());
                    chars[i] = c;
                }
                _ if !chars.is_empty() => {
                    chars.remove(at.index(chars.len()));
                }
                _ => {}
            }
        }
        chars.into_iter().collect()
    })
}

/// Any input for a parser whose valid values `valid` draws: hostile
/// strings, near misses, and valid values.
fn inputs(valid: impl Strategy<Value = String> + 'static) -> impl Strategy<Value = String> {
    let valid = valid.boxed();
    prop_oneof![hostile(), near(valid.clone()), valid]
}

/// `s` with `c` inserted at a position `at` chooses (in characters).
fn insert(s: &str, at: Index, c: char) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars.insert(at.index(chars.len() + 1), c);
    chars.into_iter().collect()
}

// ---- checks ----

/// `result` is `InvalidInput` naming `field`.
fn refused_naming<T: std::fmt::Debug>(
    result: dreamnet_db::Result<T>,
    field: Field,
) -> Result<(), TestCaseError> {
    match result {
        Err(Error::InvalidInput { field: f, .. }) if f == field => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "expected InvalidInput naming {field}, got {other:?}"
        ))),
    }
}

fn hash_of<T: Hash>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// A validated type with a string form and a JSON form.
trait Parsed:
    FromStr<Err = Error>
    + std::fmt::Display
    + std::fmt::Debug
    + PartialEq
    + serde::Serialize
    + serde::de::DeserializeOwned
{
}

impl<T> Parsed for T where
    T: FromStr<Err = Error>
        + std::fmt::Display
        + std::fmt::Debug
        + PartialEq
        + serde::Serialize
        + serde::de::DeserializeOwned
{
}

/// Display, `FromStr` and JSON agree: the value's display form and its
/// serialized form both parse back to it.
fn round_trips<T: Parsed>(value: &T) -> Result<(), TestCaseError> {
    let shown = value.to_string();
    let back = T::from_str(&shown).map_err(|e| TestCaseError::fail(format!("{shown:?}: {e}")))?;
    prop_assert_eq!(&back, value);
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone())
        .map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

/// Deserializing `s` from JSON accepts exactly what parsing accepts, to
/// the same value.
fn json_agrees<T>(s: &str, parsed: &dreamnet_db::Result<T>) -> Result<(), TestCaseError>
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let from_json = serde_json::from_value::<T>(Value::String(s.to_owned()));
    match (parsed, from_json) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, &b),
        (Err(_), Err(_)) => {}
        (a, b) => prop_assert!(false, "parse gave {:?}, JSON gave {:?}", a, b),
    }
    Ok(())
}

/// What a validated type's parser owes any input: a value whose display
/// and JSON forms parse back to it, or `InvalidInput` naming `field`; and
/// deserializing the input from JSON agrees. Returns the value, if any.
fn parses_or_refuses<T: Parsed>(s: &str, field: Field) -> Result<Option<T>, TestCaseError> {
    let parsed = T::from_str(s);
    json_agrees(s, &parsed)?;
    match parsed {
        Ok(value) => {
            round_trips(&value)?;
            Ok(Some(value))
        }
        Err(e) => {
            refused_naming::<T>(Err(e), field)?;
            Ok(None)
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---- Email ----

const LOCAL_CHARS: &str = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";
const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";

/// Valid addresses: dot-separated atoms before the `@` (at most 54
/// characters), two to four labels after it, an alphabetic top-level
/// domain, in any case.
fn valid_email() -> impl Strategy<Value = String> {
    let local = format!("{LOCAL_CHARS}{{1,10}}(\\.{LOCAL_CHARS}{{1,10}}){{0,4}}");
    let label = "[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?";
    let domain = format!("({label}\\.){{1,3}}[A-Za-z]{{2,10}}");
    (
        proptest::string::string_regex(&local).unwrap(),
        proptest::string::string_regex(&domain).unwrap(),
    )
        .prop_map(|(l, d)| format!("{l}@{d}"))
}

/// A valid domain of exactly `len` bytes (at least 5): labels of up to 63
/// letters and `.com`.
fn domain_of_len(len: usize) -> String {
    let mut labels = Vec::new();
    let mut left = len - ".com".len();
    while left > 63 {
        let take = 63.min(left - 2);
        labels.push("d".repeat(take));
        left -= take + 1;
    }
    labels.push("d".repeat(left));
    labels.push("com".to_owned());
    let domain = labels.join(".");
    assert_eq!(domain.len(), len);
    domain
}

/// Addresses that are invalid whatever else is drawn.
fn invalid_email() -> impl Strategy<Value = String> {
    let not_local = char_where(
        |c| !(c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c) || c == '.' || c == '@'),
        ' ',
    );
    prop_oneof![
        // A character that may not appear before the '@'.
        (valid_email(), any::<Index>(), not_local).prop_map(|(e, at, c)| {
            let (local, domain) = e.split_once('@').unwrap();
            format!("{}@{domain}", insert(local, at, c))
        }),
        // No '@', or two.
        valid_email().prop_map(|e| e.replace('@', "")),
        (valid_email(), valid_email()).prop_map(|(a, b)| format!("{a}@{b}")),
        // Dots misplaced before the '@'.
        valid_email().prop_map(|e| format!(".{e}")),
        valid_email().prop_map(|e| e.replacen('@', ".@", 1)),
        valid_email().prop_map(|e| e.replacen('@', "..x@", 1)),
        // An empty label, a label with an outer hyphen, a numeric TLD.
        valid_email().prop_map(|e| e.replacen('@', "@.", 1)),
        valid_email().prop_map(|e| e.replacen('@', "@-", 1)),
        valid_email().prop_map(|e| format!("{e}.")),
        (valid_email(), 0u32..1000).prop_map(|(e, n)| format!("{e}.{n}")),
        // Too long: the part before '@', a label, the whole address.
        (65usize..200).prop_map(|n| format!("{}@example.com", "a".repeat(n))),
        (64usize..200).prop_map(|n| format!("a@{}.com", "d".repeat(n))),
        (255usize..400).prop_map(|n| format!("{}@{}", "l".repeat(64), domain_of_len(n - 65))),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn email_never_panics_and_refuses_naming_the_field(s in inputs(valid_email())) {
        if let Some(e) = parses_or_refuses::<Email>(&s, Field::Email)? {
            prop_assert_eq!(e.as_str(), s.as_str(), "kept as given");
        }
    }

    #[test]
    fn valid_emails_parse_and_match_in_any_case(s in valid_email(), upper in any::<bool>()) {
        let e = Email::parse(&s).unwrap();
        round_trips(&e)?;
        let normalized = Email::parse(&e.normalized()).unwrap();
        let other_case = if upper { s.to_ascii_uppercase() } else { s.to_ascii_lowercase() };
        let other = Email::parse(&other_case).unwrap();
        prop_assert_eq!(&other, &e);
        prop_assert_eq!(&normalized, &e);
        prop_assert_eq!(hash_of(&other), hash_of(&e), "equal addresses hash alike");
        prop_assert_eq!(other.normalized(), e.normalized());
    }

    #[test]
    fn invalid_emails_are_refused(s in invalid_email()) {
        refused_naming(Email::parse(&s), Field::Email)?;
        prop_assert!(serde_json::from_value::<Email>(Value::String(s)).is_err());
    }

    #[test]
    fn emails_are_accepted_up_to_254_bytes(len in 70usize..=300) {
        let address = format!("{}@{}", "l".repeat(64), domain_of_len(len - 65));
        prop_assert_eq!(address.len(), len);
        if len <= 254 {
            let parsed = Email::parse(&address).unwrap();
            prop_assert_eq!(parsed.as_str(), address.as_str());
        } else {
            refused_naming(Email::parse(&address), Field::Email)?;
        }
    }
}

// ---- WalletAddress ----

fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// EIP-55 computed here, independently of the crate: upper-case each hex
/// letter whose nibble of keccak256(lower-case hex) is 8 or more.
fn eip55(bytes: &[u8; 20]) -> String {
    let lower = lower_hex(bytes);
    let hash = Keccak256::digest(lower.as_bytes());
    let mixed: String = lower
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
            if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    format!("0x{mixed}")
}

fn flip_case(c: char) -> char {
    if c.is_ascii_uppercase() {
        c.to_ascii_lowercase()
    } else {
        c.to_ascii_uppercase()
    }
}

/// Whether the hex letters of `s` are of both cases.
fn mixed_case(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_lowercase()) && s.bytes().any(|b| b.is_ascii_uppercase())
}

fn valid_wallet() -> impl Strategy<Value = String> {
    (any::<[u8; 20]>(), 0u8..3).prop_map(|(bytes, form)| match form {
        0 => format!("0x{}", lower_hex(&bytes)),
        1 => format!("0x{}", lower_hex(&bytes).to_ascii_uppercase()),
        _ => eip55(&bytes),
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn wallet_never_panics_and_refuses_naming_the_field(s in inputs(valid_wallet())) {
        if let Some(w) = parses_or_refuses::<WalletAddress>(&s, Field::WalletAddress)? {
            prop_assert_eq!(w.as_str(), s.to_ascii_lowercase(), "stored lower case");
            prop_assert_eq!(WalletAddress::parse(&w.to_checksum()).unwrap(), w);
        }
    }

    #[test]
    fn eip55_round_trip(bytes in any::<[u8; 20]>()) {
        let lower = format!("0x{}", lower_hex(&bytes));
        let upper = format!("0x{}", lower_hex(&bytes).to_ascii_uppercase());
        let checksummed = eip55(&bytes);
        let w = WalletAddress::parse(&checksummed).unwrap();
        prop_assert_eq!(w.to_checksum(), checksummed.clone());
        prop_assert_eq!(w.as_str(), lower.as_str());
        prop_assert_eq!(&WalletAddress::parse(&lower).unwrap(), &w);
        prop_assert_eq!(&WalletAddress::parse(&upper).unwrap(), &w);
        prop_assert_eq!(&WalletAddress::parse(&w.to_checksum()).unwrap(), &w);
        round_trips(&w)?;
    }

    #[test]
    fn a_checksummed_address_with_one_letter_flipped_is_refused(
        bytes in any::<[u8; 20]>(),
        pick in any::<Index>(),
    ) {
        let checksummed = eip55(&bytes);
        // The letters whose flip leaves the address mixed-case (single-case
        // addresses carry no checksum and are accepted as they are).
        let candidates: Vec<usize> = (2..42)
            .filter(|&i| checksummed.as_bytes()[i].is_ascii_alphabetic())
            .filter(|&i| {
                let mut b = checksummed.clone().into_bytes();
                b[i] = flip_case(b[i] as char) as u8;
                mixed_case(std::str::from_utf8(&b[2..]).unwrap())
            })
            .collect();
        if !candidates.is_empty() {
            let i = candidates[pick.index(candidates.len())];
            let mut b = checksummed.into_bytes();
            b[i] = flip_case(b[i] as char) as u8;
            let flipped = String::from_utf8(b).unwrap();
            refused_naming(WalletAddress::parse(&flipped), Field::WalletAddress)?;
        }
    }

    /// Any mix of cases: accepted exactly when it is single-case or the
    /// EIP-55 form, and then it is the same address.
    #[test]
    fn any_case_pattern_is_accepted_only_when_single_case_or_checksummed(
        bytes in any::<[u8; 20]>(),
        uppers in prop::collection::vec(any::<bool>(), 40),
    ) {
        let hex: String = lower_hex(&bytes)
            .chars()
            .zip(&uppers)
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let s = format!("0x{hex}");
        let expected_ok = !mixed_case(&hex) || s == eip55(&bytes);
        match WalletAddress::parse(&s) {
            Ok(w) => {
                prop_assert!(expected_ok, "{} accepted", s);
                prop_assert_eq!(w.as_str(), format!("0x{}", lower_hex(&bytes)));
            }
            Err(e) => {
                prop_assert!(!expected_ok, "{} refused: {}", s, e);
                refused_naming(WalletAddress::parse(&s), Field::WalletAddress)?;
            }
        }
    }

    #[test]
    fn malformed_wallets_are_refused(
        digits in "[0-9a-f]{0,80}",
        bytes in any::<[u8; 20]>(),
        at in 0usize..40,
        bad in char_where(|c| !c.is_ascii_hexdigit(), 'g'),
        prefix in prop::sample::select(vec!["", "0X", "x0", " 0x", "0x ", "00x", "0"]),
    ) {
        if digits.len() != 40 {
            refused_naming(WalletAddress::parse(&format!("0x{digits}")), Field::WalletAddress)?;
        }
        let hex = lower_hex(&bytes);
        refused_naming(WalletAddress::parse(&format!("{prefix}{hex}")), Field::WalletAddress)?;
        let mut chars: Vec<char> = hex.chars().collect();
        chars[at] = bad;
        let replaced = format!("0x{}", String::from_iter(chars));
        refused_naming(WalletAddress::parse(&replaced), Field::WalletAddress)?;
    }
}

// ---- EventType ----

const EVENT_TYPE_CHARS: &str = "[A-Za-z0-9_.:/-]";

fn valid_event_type() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{EVENT_TYPE_CHARS}{{1,100}}")).unwrap()
}

/// The rule, written out: 1 to 100 bytes of ASCII letters, digits and
/// `_ . : / -`.
fn is_event_type(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn event_type_accepts_exactly_its_rule(s in inputs(valid_event_type())) {
        let parsed = parses_or_refuses::<EventType>(&s, Field::EventType)?;
        prop_assert_eq!(parsed.is_some(), is_event_type(&s), "{:?}", s);
        if let Some(t) = parsed {
            prop_assert_eq!(t.as_str(), s.as_str());
        }
    }

    #[test]
    fn invalid_event_types_are_refused(
        valid in valid_event_type(),
        at in any::<Index>(),
        bad in char_where(|c| !is_event_type(&c.to_string()), ' '),
        long in 101usize..300,
    ) {
        refused_naming(EventType::parse(&insert(&valid, at, bad)), Field::EventType)?;
        refused_naming(EventType::parse(&cycled(&valid, long)), Field::EventType)?;
        refused_naming(EventType::parse(""), Field::EventType)?;
    }
}

// ---- PassportTier ----

/// Valid tiers: 1 to 50 characters, none a control character, none white
/// space at either end.
fn valid_tier() -> impl Strategy<Value = String> {
    let printable = char_where(|c| !c.is_control(), 'p');
    prop::collection::vec(printable, 1..=50).prop_map(|mut chars| {
        let last = chars.len() - 1;
        for i in [0, last] {
            if chars[i].is_whitespace() {
                chars[i] = 'v';
            }
        }
        chars.into_iter().collect()
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn passport_tier_never_panics_and_refuses_naming_the_field(s in inputs(valid_tier())) {
        if let Some(t) = parses_or_refuses::<PassportTier>(&s, Field::PassportTier)? {
            prop_assert_eq!(t.as_str(), s.as_str());
        }
    }

    #[test]
    fn valid_tiers_parse(s in valid_tier()) {
        let t = PassportTier::parse(&s).unwrap();
        prop_assert_eq!(t.as_str(), s.as_str());
        round_trips(&t)?;
    }

    #[test]
    fn invalid_tiers_are_refused(
        valid in valid_tier(),
        at in any::<Index>(),
        control in control_char(),
        space in space_char(),
        extra in 1usize..40,
    ) {
        let field = Field::PassportTier;
        refused_naming(PassportTier::parse(&insert(&valid, at, control)), field)?;
        refused_naming(PassportTier::parse(&format!("{space}{valid}")), field)?;
        refused_naming(PassportTier::parse(&format!("{valid}{space}")), field)?;
        let too_long = format!("{valid}{}", "t".repeat(51 - valid.chars().count() + extra - 1));
        prop_assert!(too_long.chars().count() > 50);
        refused_naming(PassportTier::parse(&too_long), field)?;
        refused_naming(PassportTier::parse(""), field)?;
    }
}

// ---- ApiKeySecret ----

fn issued_shape() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}".prop_map(|hex| format!("{KEY_PREFIX}{hex}"))
}

/// Keys other services issued: any characters but white space and control
/// characters, not starting with `dnk_`.
fn legacy_key() -> impl Strategy<Value = String> {
    let visible = char_where(|c| !c.is_whitespace() && !c.is_control(), 'k');
    prop::collection::vec(visible, 1..120).prop_map(|chars| {
        let s = String::from_iter(chars);
        if s.starts_with(KEY_PREFIX) {
            format!("k{s}")
        } else {
            s
        }
    })
}

fn sha256_hex(s: &str) -> String {
    lower_hex(&Sha256::digest(s.as_bytes()))
}

/// Strings that cannot be a key, whatever else is drawn.
fn malformed_key() -> impl Strategy<Value = String> {
    let blank = prop_oneof![control_char(), space_char()];
    let not_digit = char_where(|c| !(c.is_ascii_digit() || ('a'..='f').contains(&c)), 'G');
    let hex_digit = prop::sample::select(b"0123456789abcdef".map(char::from).to_vec());
    prop_oneof![
        Just(String::new()),
        (
            prop_oneof![issued_shape(), legacy_key()],
            any::<Index>(),
            blank
        )
            .prop_map(|(k, at, c)| insert(&k, at, c)),
        // Any number of digits but 64.
        (0usize..130)
            .prop_flat_map(move |n| {
                let n = if n >= 64 { n + 1 } else { n };
                prop::collection::vec(hex_digit.clone(), n)
            })
            .prop_map(|d| format!("{KEY_PREFIX}{}", String::from_iter(d))),
        (issued_shape(), 0usize..64, not_digit).prop_map(|(k, at, c)| {
            let mut chars: Vec<char> = k.chars().collect();
            chars[KEY_PREFIX.len() + at] = c;
            String::from_iter(chars)
        }),
        (legacy_key(), MAX_PRESENTED_KEY_LEN + 1..2_000).prop_map(|(k, len)| {
            let mut s = k.repeat(len / k.len() + 1);
            while s.len() > len {
                s.pop();
            }
            while s.len() <= MAX_PRESENTED_KEY_LEN {
                s.push('k');
            }
            s
        }),
    ]
}

/// The key parsed, shown only as the crate's fixed redacted forms.
fn shown_redacted(key: &ApiKeySecret, presented: &str) -> Result<(), TestCaseError> {
    let (debug, display) = (format!("{key:?}"), key.to_string());
    if presented.starts_with(KEY_PREFIX) {
        let prefix = &presented[..KEY_PREFIX.len() + 8];
        prop_assert_eq!(display, format!("{prefix}…"));
        prop_assert_eq!(debug, format!("ApiKeySecret({prefix}…)"));
    } else {
        prop_assert_eq!(display, "[REDACTED]");
        prop_assert_eq!(debug, "ApiKeySecret([REDACTED])");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Refused keys are `Unauthorized(Malformed)`, as validation reports
    /// them (an unusable key is a 401, not a 422).
    #[test]
    fn api_key_never_panics_and_refuses_as_malformed(
        s in inputs(prop_oneof![issued_shape(), legacy_key()]),
    ) {
        match ApiKeySecret::parse(&s) {
            Ok(key) => {
                prop_assert_eq!(key.expose_secret(), s.as_str());
                prop_assert_eq!(key.hash(), sha256_hex(&s));
                shown_redacted(&key, &s)?;
                let again = ApiKeySecret::parse(key.expose_secret()).unwrap();
                prop_assert_eq!(again.hash(), key.hash());
            }
            Err(Error::Unauthorized(KeyRejection::Malformed)) => {}
            Err(e) => prop_assert!(false, "{:?} gave {:?}", s, e),
        }
    }

    #[test]
    fn issued_and_legacy_keys_parse(issued in issued_shape(), legacy in legacy_key()) {
        for s in [&issued, &legacy] {
            let key = ApiKeySecret::parse(s).unwrap();
            prop_assert_eq!(key.expose_secret(), s.as_str());
            prop_assert_eq!(key.hash(), sha256_hex(s));
            shown_redacted(&key, s)?;
        }
        prop_assert_eq!(
            ApiKeySecret::parse(&issued).unwrap().display_prefix(),
            Some(issued[..12].to_owned())
        );
        prop_assert_eq!(ApiKeySecret::parse(&legacy).unwrap().display_prefix(), None);
    }

    #[test]
    fn malformed_keys_are_refused(s in malformed_key()) {
        prop_assert!(
            matches!(ApiKeySecret::parse(&s), Err(Error::Unauthorized(KeyRejection::Malformed))),
            "{:?} accepted", s
        );
    }
}

// ---- SessionId ----

fn valid_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{22,128}"
}

/// The rule, written out: 22 to 128 of `A–Z a–z 0–9 - _`.
fn is_token(s: &str) -> bool {
    (22..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The reason every refused token gets.
fn token_reason() -> String {
    match SessionId::parse("") {
        Err(Error::InvalidInput { reason, .. }) => reason,
        other => panic!("the empty token gave {other:?}"),
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Refused tokens all get one fixed reason, so no error ever quotes a
    /// token.
    #[test]
    fn session_id_accepts_exactly_its_rule(s in inputs(valid_token())) {
        match SessionId::parse(&s) {
            Ok(id) => {
                prop_assert!(is_token(&s), "{:?} accepted", s);
                prop_assert_eq!(id.expose_secret(), s.as_str());
                prop_assert_eq!(format!("{id:?}"), "SessionId(<redacted>)");
                prop_assert_eq!(id.to_string(), "<redacted session id>");
                let again: SessionId = id.expose_secret().parse().unwrap();
                prop_assert_eq!(again.expose_secret(), s.as_str());
            }
            Err(Error::InvalidInput { field: Field::SessionId, reason }) => {
                prop_assert!(!is_token(&s), "{:?} refused", s);
                prop_assert_eq!(reason, token_reason());
            }
            Err(e) => prop_assert!(false, "{:?} gave {:?}", s, e),
        }
    }

    #[test]
    fn invalid_tokens_are_refused(
        valid in valid_token(),
        at in any::<Index>(),
        bad in char_where(|c| !c.is_ascii_alphanumeric() && c != '-' && c != '_', '='),
        short in 0usize..22,
        long in 129usize..400,
    ) {
        for s in [insert(&valid, at, bad), cycled(&valid, short), cycled(&valid, long)] {
            refused_naming(SessionId::parse(&s), Field::SessionId)?;
        }
    }
}

// ---- Cursor ----

/// Timestamps in microseconds across chrono's whole range.
fn micros_in_range() -> impl Strategy<Value = i64> {
    // Cursors hold instants every backend stores: from PostgreSQL's first
    // (4714-11-24 BC) to chrono's last.
    let (min, max) = (
        dreamnet_db::earliest_timestamp().timestamp_micros(),
        DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros(),
    );
    prop_oneof![
        min..=max,
        // Around now, where real cursors are.
        1_600_000_000_000_000i64..2_000_000_000_000_000,
        Just(min),
        Just(max),
        Just(0),
        Just(-1),
    ]
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (micros_in_range(), any::<u128>()).prop_map(|(micros, id)| {
        Cursor::new(
            DateTime::from_timestamp_micros(micros).unwrap(),
            Uuid::from_u128(id),
        )
    })
}

fn valid_cursor_text() -> impl Strategy<Value = String> {
    (micros_in_range(), any::<u128>())
        .prop_map(|(micros, id)| format!("{micros}_{}", Uuid::from_u128(id).simple()))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn cursor_never_panics_and_refuses_naming_the_field(s in inputs(valid_cursor_text())) {
        match s.parse::<Cursor>() {
            // What it accepted has one canonical form, which parses back.
            Ok(c) => prop_assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c),
            Err(_) => refused_naming(s.parse::<Cursor>(), Field::Cursor)?,
        }
    }

    #[test]
    fn cursors_round_trip(c in cursor()) {
        let text = c.to_string();
        prop_assert!(
            text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{} is not URL-safe", text
        );
        prop_assert_eq!(text.parse::<Cursor>().unwrap(), c);
        let json = serde_json::to_string(&c).unwrap();
        prop_assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), c, "{}", json);
    }

    #[test]
    fn cursor_text_parses_when_its_time_exists(micros in any::<i64>(), id in any::<u128>()) {
        let text = format!("{micros}_{}", Uuid::from_u128(id).simple());
        match DateTime::from_timestamp_micros(micros).filter(|at| *at >= dreamnet_db::earliest_timestamp()) {
            Some(at) => prop_assert_eq!(text.parse::<Cursor>().unwrap(), Cursor::new(at, Uuid::from_u128(id))),
            None => refused_naming(text.parse::<Cursor>(), Field::Cursor)?,
        }
    }

    #[test]
    fn malformed_cursors_are_refused(
        text in valid_cursor_text(),
        at in 1usize..32,
        bad in char_where(|c| !c.is_ascii_hexdigit() && c != '-', 'g'),
    ) {
        let (micros, id) = text.split_once('_').unwrap();
        for s in [
            format!("{micros}{id}"),
            format!("{micros}-{id}"),
            format!("{micros}_"),
            format!("_{id}"),
            format!("{micros}x_{id}"),
            format!("{micros}_{}", &id[..at]),
            format!("{micros}_{}{bad}{}", &id[..at], &id[at + 1..]),
        ] {
            refused_naming(s.parse::<Cursor>(), Field::Cursor)?;
        }
    }
}

// ---- length limits, at their very edges ----

/// `chars` repeated to exactly `n` characters.
fn cycled(chars: &str, n: usize) -> String {
    chars.chars().cycle().take(n).collect()
}

/// `result` is accepted when `ok`, refused naming `field` otherwise.
fn at_limit<T: std::fmt::Debug>(
    result: dreamnet_db::Result<T>,
    ok: bool,
    field: Field,
) -> Result<(), TestCaseError> {
    if ok {
        prop_assert!(result.is_ok(), "{:?}", result);
        Ok(())
    } else {
        refused_naming(result, field)
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn email_length_limits(atom in "[A-Za-z0-9]{1,8}", label in "[A-Za-z0-9]{1,8}") {
        for n in [1, 63, 64, 65, 66] {
            let address = format!("{}@example.com", cycled(&atom, n));
            at_limit(Email::parse(&address), n <= 64, Field::Email)?;
        }
        for n in [1, 62, 63, 64, 65] {
            let address = format!("a@{}.com", cycled(&label, n));
            at_limit(Email::parse(&address), n <= 63, Field::Email)?;
        }
        // RFC 5321's limit, written out rather than read from the crate.
        prop_assert_eq!(MAX_EMAIL_LEN, 254);
        for len in 252..=256 {
            let address = format!("{}@{}", cycled(&atom, 64), domain_of_len(len - 65));
            prop_assert_eq!(address.len(), len);
            at_limit(Email::parse(&address), len <= 254, Field::Email)?;
        }
    }

    #[test]
    fn event_type_length_limits(chars in "[A-Za-z0-9_.:/-]{1,8}") {
        for n in [0, 1, 99, 100, 101, 102] {
            let t = cycled(&chars, n);
            at_limit(EventType::parse(&t), (1..=100).contains(&n), Field::EventType)?;
        }
    }

    /// Tiers are limited in characters, not bytes.
    #[test]
    fn passport_tier_length_limits(valid in valid_tier()) {
        let chars = valid.replace(char::is_whitespace, "t");
        for n in [0, 1, 49, 50, 51, 52] {
            let t = cycled(&chars, n);
            at_limit(PassportTier::parse(&t), (1..=50).contains(&n), Field::PassportTier)?;
        }
    }

    /// Presented keys are limited in bytes; issued ones have exactly 64
    /// digits.
    #[test]
    fn api_key_length_limits(ascii in "[!-~]{1,8}", digits in "[0-9a-f]{1,8}") {
        let ok = |s: &str| ApiKeySecret::parse(s).is_ok();
        prop_assert_eq!(MAX_PRESENTED_KEY_LEN, 512);
        let legacy = format!("k{ascii}");
        for n in [1, 511, 512, 513, 514] {
            prop_assert_eq!(ok(&cycled(&legacy, n)), n <= 512, "{} bytes", n);
        }
        let wide = "é".repeat(256);
        prop_assert!(ok(&wide));
        let over = format!("{wide}k");
        prop_assert!(!ok(&over));
        for n in [0, 1, 63, 64, 65, 128] {
            let key = format!("{KEY_PREFIX}{}", cycled(&digits, n));
            prop_assert_eq!(ok(&key), n == 64, "{} digits", n);
        }
    }

    #[test]
    fn session_id_length_limits(chars in "[A-Za-z0-9_-]{1,8}") {
        for n in [0, 1, 20, 21, 22, 23, 127, 128, 129, 130] {
            let token = cycled(&chars, n);
            at_limit(SessionId::parse(&token), (22..=128).contains(&n), Field::SessionId)?;
        }
    }
}

// ---- through the store: key validation, service names, session tokens ----

#[cfg(feature = "memory")]
mod through_the_store {
    use std::sync::LazyLock;
    use std::time::Duration;

    use dreamnet_db::{NewSession, NewUser, Sessions, Store};
    use tokio::runtime::Runtime;

    use super::*;

    static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    });

    /// An in-memory store with one user holding one `billing` key, and no
    /// other key ever.
    static STORE: LazyLock<(Store, Uuid, String)> = LazyLock::new(store_with_one_key);

    fn store_with_one_key() -> (Store, Uuid, String) {
        RUNTIME.block_on(async {
            let store = Store::in_memory();
            let (user, issued) = store
                .users()
                .create_with_key(
                    NewUser::with_email("keys@example.com".parse().unwrap()),
                    "billing",
                    None,
                )
                .await
                .unwrap();
            let secret = issued.secret.expose_secret().to_owned();
            (store, user.id, secret)
        })
    }

    /// A store of its own for issuing keys under random service names.
    static ISSUING: LazyLock<(Store, Uuid, String)> = LazyLock::new(store_with_one_key);

    /// `d` changed to another hex digit.
    fn other_digit(d: u8, by: u8) -> char {
        let hex = b"0123456789abcdef";
        let i = hex.iter().position(|&h| h == d).unwrap();
        hex[(i + 1 + usize::from(by % 15)) % 16] as char
    }

    proptest! {
        #![proptest_config(config(128))]

        /// Validation refuses what the key format refuses as malformed,
        /// and every other string it was not issued as unknown.
        #[test]
        fn validation_checks_the_format_first(
            s in inputs(prop_oneof![issued_shape(), legacy_key()]),
            service in hostile(),
        ) {
            let (store, _, secret) = &*STORE;
            let expected = match ApiKeySecret::parse(&s) {
                Err(_) => Some(KeyRejection::Malformed),
                Ok(_) if s == *secret => None,
                Ok(_) => Some(KeyRejection::Unknown),
            };
            for result in [
                RUNTIME.block_on(store.api_keys().validate(&s)),
                RUNTIME.block_on(store.api_keys().validate_for(&s, &service)),
            ] {
                match (result, expected) {
                    (Err(Error::Unauthorized(why)), Some(want)) => prop_assert_eq!(why, want),
                    (Ok(_), None) => {}
                    (Err(Error::Unauthorized(KeyRejection::WrongService)), None) => {}
                    (other, want) => prop_assert!(false, "{:?}: {:?}, expected {:?}", s, other, want),
                }
            }
        }

        /// The issued key with one digit changed is another key: unknown.
        #[test]
        fn a_key_one_digit_off_is_unknown(at in 0usize..64, by in any::<u8>()) {
            let (store, _, secret) = &*STORE;
            let mut wrong = secret.clone().into_bytes();
            let i = KEY_PREFIX.len() + at;
            wrong[i] = other_digit(wrong[i], by) as u8;
            let wrong = String::from_utf8(wrong).unwrap();
            prop_assert_ne!(&wrong, secret);
            prop_assert!(matches!(
                RUNTIME.block_on(store.api_keys().validate(&wrong)),
                Err(Error::Unauthorized(KeyRejection::Unknown))
            ));
            prop_assert!(RUNTIME.block_on(store.api_keys().validate(secret)).is_ok());
        }

        /// A service name is kept as given or refused naming the field.
        #[test]
        fn service_names_are_kept_or_refused(service in hostile()) {
            let (store, user, _) = &*ISSUING;
            match RUNTIME.block_on(store.api_keys().issue(*user, &service, None)) {
                Ok(issued) => {
                    prop_assert_eq!(&issued.key.service, &service);
                    let key = RUNTIME
                        .block_on(store.api_keys().validate_for(issued.secret.expose_secret(), &service))
                        .unwrap();
                    prop_assert_eq!(key.id, issued.key.id);
                    RUNTIME.block_on(store.api_keys().revoke(issued.key.id)).unwrap();
                }
                Err(e) => refused_naming::<()>(Err(e), Field::Service)?,
            }
        }
    }

    proptest! {
        #![proptest_config(config(32))]

        /// The token a session is created with parses back and finds it.
        #[test]
        fn created_session_tokens_parse_back(n in 0u32..1000) {
            let sessions = Sessions::in_memory();
            RUNTIME.block_on(async {
                let created = sessions
                    .create(NewSession::new(Duration::from_secs(60)).data(serde_json::json!({"n": n})))
                    .await
                    .unwrap();
                let id = SessionId::parse(created.id.expose_secret()).unwrap();
                let loaded = sessions.load(&id).await.unwrap();
                prop_assert_eq!(loaded, Some(created.session));
                Ok(())
            })?;
        }
    }
}
