//! JSON rules shared by every backend: what PostgreSQL's `jsonb` accepts,
//! size limits, merge patches and `@>` containment.

use serde_json::Value;

use crate::error::{Error, Field};

/// Checks that `value` can be stored in a `jsonb` column and is at most
/// `max_bytes` long when serialized. PostgreSQL refuses `\u0000` in `jsonb`
/// strings, so every backend refuses it.
pub(crate) fn check_document(field: Field, value: &Value, max_bytes: usize) -> Result<(), Error> {
    if has_nul(value) {
        return Err(Error::invalid(
            field,
            "JSON strings cannot contain the NUL character (\\u0000)",
        ));
    }
    let size = serde_json::to_vec(value)
        .map_err(|e| Error::invalid(field, e.to_string()))?
        .len();
    if size > max_bytes {
        return Err(Error::invalid(
            field,
            format!("{size} bytes of JSON is over the limit of {max_bytes} bytes"),
        ));
    }
    Ok(())
}

/// Checks that `value` is a JSON object (user metadata and preferences are).
pub(crate) fn check_object(field: Field, value: &Value) -> Result<(), Error> {
    if value.is_object() {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be a JSON object"))
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// RFC 7386 JSON merge patch of `patch` onto `target`.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// PostgreSQL's `jsonb @>`: does `container` contain `contained`?
///
/// Objects contain objects whose every key they hold with a containing
/// value; arrays contain arrays whose every element some element of theirs
/// contains (order and duplicates ignored); a top-level array also contains
/// a lone scalar it holds; scalars contain equal scalars (numbers by value).
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
pub(crate) fn contains(container: &Value, contained: &Value) -> bool {
    match (container, contained) {
        (Value::Array(items), scalar) if is_scalar(scalar) => {
            items.iter().any(|item| scalar_eq(item, scalar))
        }
        _ => contains_nested(container, contained),
    }
}

#[cfg_attr(not(feature = "memory"), allow(dead_code))]
fn contains_nested(container: &Value, contained: &Value) -> bool {
    match (container, contained) {
        (Value::Object(a), Value::Object(b)) => b
            .iter()
            .all(|(k, bv)| a.get(k).is_some_and(|av| contains_nested(av, bv))),
        (Value::Array(a), Value::Array(b)) => b.iter().all(|bv| {
            a.iter().any(|av| {
                if is_scalar(bv) {
                    scalar_eq(av, bv)
                } else {
                    contains_nested(av, bv)
                }
            })
        }),
        (a, b) if is_scalar(a) && is_scalar(b) => scalar_eq(a, b),
        _ => false,
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containment_follows_postgres() {
        let doc = json!({"a": 1, "b": {"c": [1, 2, {"d": "x"}]}, "tags": ["x", "y"]});
        assert!(contains(&doc, &json!({})));
        assert!(contains(&doc, &json!({"a": 1})));
        assert!(contains(&doc, &json!({"a": 1.0})));
        assert!(contains(&doc, &json!({"b": {"c": [2]}})));
        assert!(contains(&doc, &json!({"b": {"c": [{"d": "x"}, 1, 1]}})));
        assert!(contains(&doc, &json!({"tags": ["y"]})));
        assert!(!contains(&doc, &json!({"tags": "y"})));
        assert!(!contains(&doc, &json!({"a": 2})));
        assert!(!contains(&doc, &json!({"b": {"c": 1}})));
        assert!(!contains(&doc, &json!({"z": null})));
        assert!(contains(&json!([1, 2, 3]), &json!(2)));
        assert!(contains(&json!([1, [2, 3]]), &json!([[3]])));
        assert!(!contains(&json!([1, [2, 3]]), &json!([3])));
        assert!(!contains(&json!({"a": [1]}), &json!({"a": 1})));
    }

    #[test]
    fn documents_with_nul_or_too_large_are_refused() {
        assert!(check_document(Field::Payload, &json!({"a": "x\u{0}"}), 100).is_err());
        assert!(check_document(Field::Payload, &json!({"a\u{0}": 1}), 100).is_err());
        assert!(check_document(Field::Payload, &json!({"a": "x".repeat(100)}), 100).is_err());
        assert!(check_document(Field::Payload, &json!({"a": "x"}), 100).is_ok());
    }
}
