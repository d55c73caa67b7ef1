//! Merge patches and `@>` containment on exact trees: values the operation
//! does not touch are carried as the text they were written as, and
//! numbers compare by exact decimal value, never through `f64`.

use super::number::same_value;
use super::text::{Kind, Rules, Tree, escape_string};

/// RFC 7386: `patch` merged onto `target`. A patch that is not an object
/// replaces the target; an object patch sets its keys (merging nested
/// objects), removes those set to `null`, and makes a non-object target
/// an empty object first. Returns the merged text; values the patch does
/// not reach are copied byte for byte.
pub(crate) fn merge(target: &str, patch: &str) -> String {
    let (Ok(t), Ok(p)) = (
        Tree::parse(target, Rules::LENIENT),
        Tree::parse(patch, Rules::LENIENT),
    ) else {
        return patch.to_owned();
    };
    let mut out = String::with_capacity(target.len() + patch.len());
    merge_node(&mut out, Some((&t, 0)), (&p, 0));
    out
}

fn merge_node(out: &mut String, target: Option<(&Tree<'_>, usize)>, patch: (&Tree<'_>, usize)) {
    let (p, pi) = patch;
    if !matches!(p.nodes[pi].kind, Kind::Obj(_)) {
        out.push_str(p.raw(pi));
        return;
    }
    let target = target.filter(|(t, ti)| matches!(t.nodes[*ti].kind, Kind::Obj(_)));
    let patch_members = p.members(pi);
    let is_null = |i: usize| matches!(p.nodes[i].kind, Kind::Null);
    out.push('{');
    let mut first = true;
    let mut member = |out: &mut String, key: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        escape_string(key, &mut |s| out.push_str(s));
        out.push(':');
    };
    if let Some((t, ti)) = target {
        for (key, tc) in t.members(ti) {
            match patch_members.iter().find(|(k, _)| *k == key) {
                None => {
                    member(out, key);
                    out.push_str(t.raw(tc));
                }
                Some((_, pc)) if is_null(*pc) => {}
                Some((_, pc)) => {
                    member(out, key);
                    merge_node(out, Some((t, tc)), (p, *pc));
                }
            }
        }
    }
    for (key, pc) in &patch_members {
        let in_target = target.is_some_and(|(t, ti)| t.member(ti, key).is_some());
        if in_target || is_null(*pc) {
            continue;
        }
        member(out, key);
        merge_node(out, None, (p, *pc));
    }
    out.push('}');
}

/// PostgreSQL's `jsonb @>`: does `container` contain `contained`?
///
/// Objects contain objects whose every key they hold with a containing
/// value; arrays contain arrays whose every element some element of theirs
/// contains (order and duplicates ignored); a top-level array also contains
/// a lone scalar it holds; scalars contain equal scalars (numbers by exact
/// value).
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
pub(crate) fn contains(container: &str, contained: &str) -> bool {
    let (Ok(a), Ok(b)) = (
        Tree::parse(container, Rules::LENIENT),
        Tree::parse(contained, Rules::LENIENT),
    ) else {
        return false;
    };
    match (&a.nodes[0].kind, is_scalar(&b, 0)) {
        (Kind::Arr(items), true) => items.iter().any(|&i| scalar_eq(&a, i, &b, 0)),
        _ => contains_nested(&a, 0, &b, 0),
    }
}

#[cfg_attr(not(feature = "memory"), allow(dead_code))]
fn contains_nested(a: &Tree<'_>, ai: usize, b: &Tree<'_>, bi: usize) -> bool {
    match (&a.nodes[ai].kind, &b.nodes[bi].kind) {
        (Kind::Obj(_), Kind::Obj(_)) => b.members(bi).into_iter().all(|(key, bc)| {
            a.member(ai, key)
                .is_some_and(|ac| contains_nested(a, ac, b, bc))
        }),
        (Kind::Arr(items), Kind::Arr(wanted)) => wanted.iter().all(|&bc| {
            items.iter().any(|&ac| {
                if is_scalar(b, bc) {
                    scalar_eq(a, ac, b, bc)
                } else {
                    contains_nested(a, ac, b, bc)
                }
            })
        }),
        _ if is_scalar(a, ai) && is_scalar(b, bi) => scalar_eq(a, ai, b, bi),
        _ => false,
    }
}

fn is_scalar(t: &Tree<'_>, i: usize) -> bool {
    !matches!(t.nodes[i].kind, Kind::Arr(_) | Kind::Obj(_))
}

fn scalar_eq(a: &Tree<'_>, ai: usize, b: &Tree<'_>, bi: usize) -> bool {
    match (&a.nodes[ai].kind, &b.nodes[bi].kind) {
        (Kind::Null, Kind::Null) => true,
        (Kind::Bool(x), Kind::Bool(y)) => x == y,
        (Kind::Str(x), Kind::Str(y)) => x == y,
        (Kind::Num(x), Kind::Num(y)) => same_value(x, y),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_follows_postgres() {
        let doc = r#"{"a": 1, "b": {"c": [1, 2, {"d": "x"}]}, "tags": ["x", "y"], "big": 123456789012345678901234567890}"#;
        for (probe, want) in [
            ("{}", true),
            (r#"{"a": 1}"#, true),
            (r#"{"a": 1.0}"#, true),
            (r#"{"a": 1e0}"#, true),
            (r#"{"b": {"c": [2]}}"#, true),
            (r#"{"b": {"c": [{"d": "x"}, 1, 1]}}"#, true),
            (r#"{"tags": ["y"]}"#, true),
            (r#"{"tags": "y"}"#, false),
            (r#"{"a": 2}"#, false),
            (r#"{"b": {"c": 1}}"#, false),
            (r#"{"z": null}"#, false),
            (r#"{"big": 123456789012345678901234567890}"#, true),
            (r#"{"big": 1.2345678901234568e29}"#, false),
            (r#"{"big": 123456789012345680000000000000}"#, false),
        ] {
            assert_eq!(contains(doc, probe), want, "{probe}");
        }
        assert!(contains("[1, 2, 3]", "2"));
        assert!(contains("[1, [2, 3]]", "[[3]]"));
        assert!(!contains("[1, [2, 3]]", "[3]"));
        assert!(!contains(r#"{"a": [1]}"#, r#"{"a": 1}"#));
        assert!(contains(r#"{"a": 1, "a": 2}"#, r#"{"a": 2}"#));
        assert!(!contains(r#"{"a": 1, "a": 2}"#, r#"{"a": 1}"#));
    }

    #[test]
    fn merge_follows_rfc_7386_and_keeps_the_rest_exact() {
        let target = r#"{"balance_wei": 123456789012345678901234567890, "n": {"x": 1e400, "y": 1}, "gone": 1}"#;
        let merged = merge(
            target,
            r#"{"touched": true, "n": {"y": null, "z": [1.50]}, "gone": null}"#,
        );
        assert_eq!(
            merged,
            r#"{"n":{"x":1e400,"z":[1.50]},"balance_wei":123456789012345678901234567890,"touched":true}"#
        );
        // A patch that is not an object replaces; a non-object target
        // becomes an object; nulls inside new objects are dropped.
        assert_eq!(merge(r#"{"a":1}"#, "[1]"), "[1]");
        assert_eq!(
            merge("[1]", r#"{"a":{"b":null,"c":1}}"#),
            r#"{"a":{"c":1}}"#
        );
    }
}
