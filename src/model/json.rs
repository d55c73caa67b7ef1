//! [`Json`], the exact JSON document every record carries, and the rules
//! every backend shares: what PostgreSQL's `jsonb` accepts, size and depth
//! limits, merge patches and `@>` containment.

mod number;
mod ops;
mod text;

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use self::number::Number;
use self::text::{Kind, Numbers, Problem, Rules, Tree};
use crate::error::{Error, Field};

/// The deepest nesting of arrays and objects a document written through
/// the crate may have: 1000. PostgreSQL's own parser gives up somewhere
/// past 13,000 levels with its default `max_stack_depth` of 2 MB; the crate
/// refuses anything deeper than this on every backend, and reads documents
/// of any depth.
pub const MAX_JSON_DEPTH: usize = 1000;

/// A JSON document, kept as its text, so that every number is exactly what
/// was written: `123456789012345678901234567890` stays that, `1e400` too,
/// and nothing goes through `f64` on the way in or out.
///
/// Users' metadata and preferences, event payloads, session data and the
/// filters and patches that act on them are all `Json`. Build one from a
/// `serde_json::Value` (so `json!({...})` works wherever a document is
/// taken: those parameters are `impl Into<Json>`), or from text with
/// [`Json::parse`] when numbers must not pass through `serde_json::Value`.
///
/// ```
/// use dreamnet_db::Json;
/// use serde_json::json;
///
/// let doc = Json::parse(r#"{"balance_wei": 123456789012345678901234567890, "n": 1.50}"#)?;
/// let balance = doc.get("balance_wei").unwrap();
/// assert_eq!(balance.as_number(), Some("123456789012345678901234567890"));
/// assert!(balance.to_value().is_err()); // serde_json::Value would round it
/// assert_eq!(doc.get("n").unwrap(), json!(1.5)); // equal by value
/// assert_eq!(Json::from(json!({"a": [1, true]})).as_str(), r#"{"a":[1,true]}"#);
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
///
/// # What comes back
///
/// Documents read from the store come back as PostgreSQL's `jsonb` prints
/// them, on every backend: each object key once (the last one written
/// wins), keys ordered by length and then bytewise, `", "` and `": "`
/// between parts, strings escaped only where JSON requires it, and numbers
/// as `numeric` prints them (`1e2` as `100`, `1.50` as `1.50`). What another
/// service wrote is returned as PostgreSQL holds it; a write through the
/// crate leaves every value it does not change equal to what was there (as
/// `jsonb` compares them).
///
/// # Equality
///
/// `==` is `jsonb`'s equality: object key order does not matter, a
/// repeated key counts once (its last value), and numbers are equal when
/// their values are (`1.0 == 1`, `1e2 == 100`, but
/// `123456789012345678901234567890 != 1.2345678901234568e29`).
/// `Json == serde_json::Value` compares the same way.
///
/// # What the store accepts
///
/// Any JSON value, except what PostgreSQL's `jsonb` refuses (strings or
/// keys holding `\u0000` or an unpaired UTF-16 surrogate escape, numbers
/// outside `numeric`'s range: more than 131,072 digits before the decimal
/// point or 16,383 after it), documents nested deeper than
/// [`MAX_JSON_DEPTH`], and documents over the size limit
/// ([`StoreBuilder::max_payload_bytes`](crate::StoreBuilder::max_payload_bytes),
/// [`Sessions::max_data_bytes`](crate::Sessions::max_data_bytes)), counted
/// as the document's bytes as `jsonb` prints it without the spaces. Each is
/// refused with [`Error::InvalidInput`] naming the field and, where it
/// applies, the path, on every backend alike.
///
/// # Serde
///
/// `Serialize` writes the text as it is into serde_json's output (other
/// serde formats see serde_json's raw-value wrapper); `Deserialize` takes
/// any JSON value from serde_json's deserializers, exactly.
///
/// With diesel, `Json` reads and writes `jsonb` columns as their text.
#[derive(Clone, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Jsonb)]
pub struct Json(Box<RawValue>);

impl Json {
    /// The document `text`, kept exactly as written (less surrounding
    /// white space). [`Error::InvalidInput`] ([`Field::Json`]) if it is
    /// not one JSON value.
    pub fn parse(text: &str) -> Result<Json, Error> {
        RawValue::from_string(text.to_owned())
            .map(Json)
            .map_err(|e| Error::invalid(Field::Json, format!("not a JSON document: {e}")))
    }

    /// Text known to be JSON: what PostgreSQL, Redis or this crate wrote.
    pub(crate) fn from_stored(text: String) -> Result<Json, serde_json::Error> {
        RawValue::from_string(text).map(Json)
    }

    /// `{}`.
    pub(crate) fn empty_object() -> Json {
        Json(RawValue::from_string("{}".to_owned()).expect("{} is JSON"))
    }

    /// The document's text, exactly.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The document as serde_json's [`RawValue`], to embed in a serde type.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// Whether the document is a JSON object.
    pub fn is_object(&self) -> bool {
        self.as_str().starts_with('{')
    }

    /// If the document is a number, its text: its exact decimal value
    /// (`"123456789012345678901234567890"`, or `"1.50"` as `numeric`
    /// prints it).
    pub fn as_number(&self) -> Option<&str> {
        let s = self.as_str();
        s.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            .then_some(s)
    }

    /// The value under `key`, if the document is an object that has it
    /// (the last one, if the key is repeated), exactly as written.
    pub fn get(&self, key: &str) -> Option<Json> {
        let tree = Tree::parse(self.as_str(), Rules::LENIENT).ok()?;
        tree.member(0, key).and_then(|i| sub_document(&tree, i))
    }

    /// The value at a JSON Pointer (RFC 6901: `""` is the whole document,
    /// `/a/0/b~1c` is key `a`, element 0, key `b/c`), exactly as written.
    pub fn pointer(&self, pointer: &str) -> Option<Json> {
        if pointer.is_empty() {
            return Some(self.clone());
        }
        let tree = Tree::parse(self.as_str(), Rules::LENIENT).ok()?;
        let mut at = 0;
        for segment in pointer.strip_prefix('/')?.split('/') {
            let key = segment.replace("~1", "/").replace("~0", "~");
            at = match &tree.nodes[at].kind {
                Kind::Obj(_) => tree.member(at, &key)?,
                Kind::Arr(items) => {
                    if key.len() > 1 && key.starts_with('0') {
                        return None;
                    }
                    *items.get(key.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        sub_document(&tree, at)
    }

    /// The document as a `T`, through serde_json (which refuses documents
    /// nested more than 128 levels deep). [`Error::InvalidInput`]
    /// ([`Field::Json`]) if it does not fit `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(self.as_str())
            .map_err(|e| Error::invalid(Field::Json, format!("does not fit the type: {e}")))
    }

    /// The document as a `serde_json::Value`, nested up to
    /// [`MAX_JSON_DEPTH`] deep (serde_json's own parser stops at 128; a
    /// `Value` much deeper can overflow the stack when dropped). A number
    /// that the `Value` would not hold exactly
    /// (`123456789012345678901234567890` and `1e400` do not fit `i64`, `u64`
    /// or `f64` without rounding) is [`Error::InvalidInput`]
    /// ([`Field::Json`]) naming its path, never a rounded value. With
    /// serde_json's `arbitrary_precision` feature on in the build, every
    /// number fits.
    pub fn to_value(&self) -> Result<Value, Error> {
        let rules = Rules {
            surrogates: true,
            jsonb: false,
            max_depth: MAX_JSON_DEPTH,
        };
        let tree = Tree::parse(self.as_str(), rules).map_err(|problem| {
            Error::invalid(
                Field::Json,
                match problem {
                    Problem::Surrogate(path) => format!(
                        "the string at {} holds an unpaired UTF-16 surrogate escape, which a serde_json::Value cannot hold",
                        at(&path)
                    ),
                    Problem::TooDeep => format!(
                        "nests arrays and objects more than {MAX_JSON_DEPTH} levels deep (MAX_JSON_DEPTH): a serde_json::Value that deep can overflow the stack when it is dropped"
                    ),
                    _ => "not a JSON document".to_owned(),
                },
            )
        })?;
        let unfit = |idx: usize| {
            Error::invalid(
                Field::Json,
                format!(
                    "the number at {} cannot be held exactly by a serde_json::Value",
                    at(&tree.path(idx))
                ),
            )
        };
        // Children come after their parents: build from the last node back.
        let mut built: Vec<Option<Value>> = Vec::new();
        built.resize_with(tree.nodes.len(), || None);
        for idx in (0..tree.nodes.len()).rev() {
            let value = match &tree.nodes[idx].kind {
                Kind::Null => Value::Null,
                Kind::Bool(b) => Value::Bool(*b),
                Kind::Str(s) => Value::String(s.to_string()),
                Kind::Num(text) => Value::Number(exact_number(text).ok_or_else(|| unfit(idx))?),
                Kind::Arr(items) => Value::Array(
                    items
                        .iter()
                        .map(|&c| built[c].take().unwrap_or(Value::Null))
                        .collect(),
                ),
                Kind::Obj(entries) => Value::Object(
                    entries
                        .iter()
                        .map(|(k, c)| (k.to_string(), built[*c].take().unwrap_or(Value::Null)))
                        .collect(),
                ),
            };
            built[idx] = Some(value);
        }
        Ok(built.swap_remove(0).unwrap_or(Value::Null))
    }

    /// A form unique to the document's `jsonb` value: keys sorted and
    /// unique, numbers normalized. Equal documents have equal forms.
    fn normalized(&self) -> String {
        match Tree::parse(self.as_str(), Rules::LENIENT) {
            Ok(tree) => text::write(&tree, Numbers::Normalized, None)
                .text
                .unwrap_or_default(),
            Err(_) => self.as_str().to_owned(),
        }
    }
}

/// Node `idx` of `tree` as a document of its own.
fn sub_document(tree: &Tree<'_>, idx: usize) -> Option<Json> {
    Json::from_stored(tree.raw(idx).to_owned()).ok()
}

/// `text` as a `serde_json::Number` whose value is exactly the text's.
fn exact_number(text: &str) -> Option<serde_json::Number> {
    let n: serde_json::Number = text.parse().ok()?;
    let want = Number::parse(text)?.value();
    let got = n.to_string();
    (Number::parse(&got)?.value() == want).then_some(n)
}

/// A JSON Pointer for messages: the root is named, not left empty.
fn at(pointer: &str) -> String {
    if pointer.is_empty() {
        "the top level".to_owned()
    } else {
        pointer.to_owned()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({})", self.as_str())
    }
}

/// The exact text.
impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Json {
    type Err = Error;

    fn from_str(s: &str) -> Result<Json, Error> {
        Json::parse(s)
    }
}

/// The value as serde_json writes it: integers exactly, floats in the
/// shortest form that reads back as the same `f64`.
impl From<Value> for Json {
    fn from(value: Value) -> Json {
        Json::from(&value)
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Json {
        // A `Value` always serializes: its keys are strings and its numbers
        // finite.
        Json(serde_json::value::to_raw_value(value).expect("a serde_json::Value serializes"))
    }
}

impl From<Box<RawValue>> for Json {
    fn from(raw: Box<RawValue>) -> Json {
        Json(raw)
    }
}

impl From<Json> for Box<RawValue> {
    fn from(json: Json) -> Box<RawValue> {
        json.0
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.as_str() == other.as_str() || self.normalized() == other.normalized()
    }
}

impl Eq for Json {}

impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        let other = Json::from(other);
        self.eq(&other)
    }
}

impl PartialEq<Json> for Value {
    fn eq(&self, other: &Json) -> bool {
        other == self
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        Box::<RawValue>::deserialize(d).map(Json)
    }
}

/// Checks that `doc` can be stored: what PostgreSQL's `jsonb` accepts,
/// nested at most [`MAX_JSON_DEPTH`] deep and at most `max_bytes` long as
/// `jsonb` prints it without spaces. Returns the document as it is stored
/// (and as PostgreSQL returns it), so every backend holds the same text.
pub(crate) fn check_document(field: Field, doc: &Json, max_bytes: usize) -> Result<Json, Error> {
    let rules = Rules {
        surrogates: true,
        jsonb: true,
        max_depth: MAX_JSON_DEPTH,
    };
    let tree = Tree::parse(doc.as_str(), rules).map_err(|problem| {
        Error::invalid(
            field,
            match problem {
                Problem::Syntax(at) => format!("not a JSON document (at byte {at})"),
                Problem::TooDeep => format!(
                    "nests arrays and objects more than {MAX_JSON_DEPTH} levels deep (MAX_JSON_DEPTH)"
                ),
                Problem::Nul(path) => format!(
                    "JSON strings cannot contain the NUL character (\\u0000), as PostgreSQL's jsonb refuses it (at {})",
                    at(&path)
                ),
                Problem::Surrogate(path) => format!(
                    "the string at {} holds an unpaired UTF-16 surrogate escape, which PostgreSQL's jsonb refuses",
                    at(&path)
                ),
                Problem::Number(path, why) => format!(
                    "the number at {} is outside PostgreSQL's numeric range: it has {}",
                    at(&path),
                    why.describe()
                ),
            },
        )
    })?;
    let written = text::write(&tree, Numbers::Numeric, Some(max_bytes));
    match written.text {
        Some(text) => Json::from_stored(text).map_err(|e| Error::invalid(field, e.to_string())),
        None => Err(Error::invalid(
            field,
            format!(
                "{} bytes of JSON is over the limit of {max_bytes} bytes",
                written.compact_len
            ),
        )),
    }
}

/// Checks that `doc` is a JSON object (user metadata and preferences,
/// session data are).
pub(crate) fn check_object(field: Field, doc: &Json) -> Result<(), Error> {
    if doc.is_object() {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be a JSON object"))
    }
}

/// RFC 7386 JSON merge patch of `patch` onto `target`; values the patch
/// does not reach keep their exact text.
pub(crate) fn merge(target: &Json, patch: &Json) -> Json {
    let merged = ops::merge(target.as_str(), patch.as_str());
    Json::from_stored(merged).unwrap_or_else(|_| patch.clone())
}

/// PostgreSQL's `jsonb @>`: does `container` contain `contained`?
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
pub(crate) fn contains(container: &Json, contained: &Json) -> bool {
    ops::contains(container.as_str(), contained.as_str())
}

impl Json {
    /// Every string value in the document (object keys excluded), at any
    /// depth, unescaped: what `jsonb_to_tsvector(…, '["string"]')` reads.
    /// Of a key written twice in one object only the last value counts, as
    /// in `jsonb`.
    pub(crate) fn string_values(&self) -> Vec<String> {
        let Ok(tree) = Tree::parse(self.as_str(), Rules::LENIENT) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            match &tree.nodes[i].kind {
                Kind::Str(s) => out.push(s.to_string()),
                Kind::Arr(items) => stack.extend(items.iter().rev()),
                Kind::Obj(_) => stack.extend(tree.members(i).into_iter().map(|m| m.1)),
                _ => {}
            }
        }
        out
    }

    /// The string under the top-level `key` (`payload->>key` when
    /// `jsonb_typeof(payload->key) = 'string'`); `None` if the document is
    /// not an object, lacks the key, or holds something else under it.
    pub(crate) fn string_member(&self, key: &str) -> Option<String> {
        let tree = Tree::parse(self.as_str(), Rules::LENIENT).ok()?;
        let i = tree.member(0, key)?;
        match &tree.nodes[i].kind {
            Kind::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(s: &str) -> Json {
        Json::parse(s).unwrap()
    }

    /// The reason of an `InvalidInput` on `field`.
    #[track_caller]
    fn refusal<T: fmt::Debug>(result: Result<T, Error>, field: Field) -> String {
        match result {
            Err(Error::InvalidInput { field: f, reason }) if f == field => reason,
            other => panic!("expected InvalidInput on {field}, got {other:?}"),
        }
    }

    #[test]
    fn equality_is_jsonb_equality() {
        assert_eq!(
            doc(r#"{"a": 1, "b": [1.0, 1e2]}"#),
            doc(r#"{"b":[1,100],"a":1.00}"#)
        );
        assert_eq!(doc(r#"{"a": 1, "a": 2}"#), doc(r#"{"a": 2}"#));
        assert_ne!(doc(r#"{"a": 1, "a": 2}"#), doc(r#"{"a": 1}"#));
        assert_ne!(doc("[1, 2]"), doc("[2, 1]"));
        assert_ne!(
            doc("123456789012345678901234567890"),
            doc("1.2345678901234568e29")
        );
        assert_eq!(doc(r#""\u00e9\/""#), doc(r#""é/""#));
        assert_eq!(doc(r#"{"n": 1.5}"#), json!({"n": 1.5}));
        assert_eq!(json!({"n": 1.5}), doc(r#"{"n": 15e-1}"#));
        assert_ne!(
            doc(r#"{"n": 18446744073709551617}"#),
            json!({"n": 18446744073709551616.0})
        );
    }

    #[test]
    fn sub_documents_are_exact() {
        let d = doc(
            r#"{"w": 123456789012345678901234567890, "a": [{"b/c": 1e400}], "a": [0, {"~": -0.50}]}"#,
        );
        assert_eq!(
            d.get("w").unwrap().as_number(),
            Some("123456789012345678901234567890")
        );
        assert_eq!(d.pointer("/a/1/~0").unwrap().as_str(), "-0.50");
        assert!(d.pointer("/a/0/b~1c").is_none()); // the last `a` wins
        assert!(d.pointer("/a/01").is_none());
        assert!(d.pointer("a").is_none());
        assert_eq!(d.pointer("").unwrap().as_str(), d.as_str());
        assert!(d.get("w").unwrap().get("x").is_none());
        assert_eq!(doc("[1]").as_number(), None);
    }

    #[test]
    fn to_value_refuses_to_round() {
        let d = doc(
            r#"{"ok": [1, -2, 1.5, 0.1, 18446744073709551615], "w": {"x": 123456789012345678901234567890}}"#,
        );
        let reason = refusal(d.to_value(), Field::Json);
        assert!(reason.contains("/w/x"), "{reason}");
        assert_eq!(
            doc(r#"{"ok": [1, -2, 1.5, 0.1, 18446744073709551615]}"#)
                .to_value()
                .unwrap(),
            json!({"ok": [1, -2, 1.5, 0.1, 18446744073709551615u64]})
        );
        assert!(doc("1e400").to_value().is_err());
        assert!(doc("18446744073709551617").to_value().is_err());
        assert!(doc(r#"["\ud800"]"#).to_value().is_err());
        // Deeper than serde_json's own limit of 128, up to the crate's.
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let deep = nested(MAX_JSON_DEPTH);
        let v = doc(&deep).to_value().unwrap();
        assert_eq!(Json::from(&v).as_str(), deep);
        let too_deep = doc(&nested(MAX_JSON_DEPTH + 1)).to_value();
        assert!(refusal(too_deep, Field::Json).contains("MAX_JSON_DEPTH"));
    }

    #[test]
    fn stored_form_is_jsonb_text() {
        let stored = check_document(
            Field::Metadata,
            &doc(r#"{"b": 1e2, "a": "x", "b": 1.50}"#),
            100,
        )
        .unwrap();
        assert_eq!(stored.as_str(), r#"{"a": "x", "b": 1.50}"#);
    }

    #[test]
    fn documents_with_nul_or_too_large_are_refused() {
        let check = |v: Value| check_document(Field::Payload, &Json::from(v), 100);
        assert!(check(json!({"a": "x\u{0}"})).is_err());
        assert!(check(json!({"a\u{0}": 1})).is_err());
        assert!(check(json!({"a": "x".repeat(100)})).is_err());
        assert!(check(json!({"a": "x"})).is_ok());
        // The size counts numbers as `numeric` prints them.
        assert!(check_document(Field::Payload, &doc("1e99"), 100).is_ok());
        assert!(check_document(Field::Payload, &doc("1e100"), 100).is_err());
    }

    #[test]
    fn depth_limit_is_named() {
        let nested = |n: usize| doc(&format!("{}{}", "[".repeat(n), "]".repeat(n)));
        assert!(check_document(Field::Payload, &nested(MAX_JSON_DEPTH), usize::MAX).is_ok());
        let too_deep = check_document(Field::Payload, &nested(MAX_JSON_DEPTH + 1), usize::MAX);
        let reason = refusal(too_deep, Field::Payload);
        assert!(reason.contains("1000"), "{reason}");
    }
}
