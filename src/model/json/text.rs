//! A JSON text as a tree of its parts, read without recursion (so that
//! any depth PostgreSQL can hold is readable), and written back the way
//! PostgreSQL's `jsonb` prints it.
//!
//! Every node keeps the span of its text, so a value can be handed on
//! exactly as it was written.

use std::borrow::Cow;

use super::number::{Digits, Number, OutOfRange};

/// What a node is.
#[derive(Debug)]
pub(crate) enum Kind<'a> {
    Null,
    Bool(bool),
    /// A number's text.
    Num(&'a str),
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// Child node indices.
    Arr(Vec<usize>),
    /// Keys (unescaped) and child node indices, in the order written,
    /// duplicates included.
    Obj(Vec<(Cow<'a, str>, usize)>),
}

#[derive(Debug)]
pub(crate) struct Node<'a> {
    pub(crate) kind: Kind<'a>,
    parent: usize,
    start: usize,
    end: usize,
}

/// A parsed JSON text. Node 0 is the root; children come after their
/// parent.
#[derive(Debug)]
pub(crate) struct Tree<'a> {
    text: &'a str,
    pub(crate) nodes: Vec<Node<'a>>,
}

/// Rules a text is read under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Refuse unpaired UTF-16 surrogate escapes (`"\ud800"`), as
    /// PostgreSQL does; otherwise they read as U+FFFD.
    pub(crate) surrogates: bool,
    /// Refuse what else PostgreSQL's `jsonb` refuses: `\u0000`, numbers
    /// outside `numeric`'s range.
    pub(crate) jsonb: bool,
    /// The deepest nesting of arrays and objects allowed.
    pub(crate) max_depth: usize,
}

impl Rules {
    /// Anything that is JSON.
    pub(crate) const LENIENT: Rules = Rules {
        surrogates: false,
        jsonb: false,
        max_depth: usize::MAX,
    };
}

/// Why a text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Not JSON (at this byte offset).
    Syntax(usize),
    /// Nested deeper than [`Rules::max_depth`].
    TooDeep,
    /// A string (or key) holding `\u0000`, at this path.
    Nul(String),
    /// A string (or key) holding an unpaired surrogate escape.
    Surrogate(String),
    /// A number `numeric` cannot hold.
    Number(String, OutOfRange),
}

const NO_PARENT: usize = usize::MAX;

/// What a string's text holds that some rules refuse.
enum StrFlaw {
    Nul,
    Surrogate,
}

impl StrFlaw {
    /// The problem `rules` find in it, with the path `at` gives.
    fn refused(self, rules: Rules, at: impl FnOnce() -> String) -> Option<Problem> {
        match self {
            StrFlaw::Nul if rules.jsonb => Some(Problem::Nul(at())),
            StrFlaw::Surrogate if rules.surrogates => Some(Problem::Surrogate(at())),
            _ => None,
        }
    }
}

struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    rules: Rules,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn syntax<T>(&self) -> Result<T, Problem> {
        Err(Problem::Syntax(self.pos))
    }

    fn expect(&mut self, byte: u8) -> Result<(), Problem> {
        self.ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.syntax()
        }
    }

    fn hex4(&mut self) -> Result<u32, Problem> {
        let digits = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or(Problem::Syntax(self.pos))?;
        let mut v = 0u32;
        for &d in digits {
            let n = (d as char).to_digit(16).ok_or(Problem::Syntax(self.pos))?;
            v = v * 16 + n;
        }
        self.pos += 4;
        Ok(v)
    }

    /// A string starting at the opening quote; the flaw strict rules
    /// refuse, if any.
    fn string(&mut self) -> Result<(Cow<'a, str>, Option<StrFlaw>), Problem> {
        self.pos += 1;
        let start = self.pos;
        // The common case: no escape, borrowed as it is.
        loop {
            match self.peek() {
                None => return self.syntax(),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok((Cow::Borrowed(&self.text[start..self.pos - 1]), None));
                }
                Some(b'\\') => break,
                Some(c) if c < 0x20 => return self.syntax(),
                Some(_) => self.pos += 1,
            }
        }
        let mut out = String::from(&self.text[start..self.pos]);
        let mut flaw = None;
        loop {
            match self.peek() {
                None => return self.syntax(),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok((Cow::Owned(out), flaw));
                }
                Some(c) if c < 0x20 => return self.syntax(),
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.peek().ok_or(Problem::Syntax(self.pos))?;
                    self.pos += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let unit = self.hex4()?;
                            let ch = match unit {
                                0xD800..=0xDBFF => {
                                    let low = if self.b.get(self.pos..self.pos + 2) == Some(b"\\u")
                                    {
                                        let save = self.pos;
                                        self.pos += 2;
                                        let low = self.hex4()?;
                                        if (0xDC00..=0xDFFF).contains(&low) {
                                            Some(low)
                                        } else {
                                            self.pos = save;
                                            None
                                        }
                                    } else {
                                        None
                                    };
                                    low.and_then(|low| {
                                        char::from_u32(
                                            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00),
                                        )
                                    })
                                }
                                0xDC00..=0xDFFF => None,
                                _ => char::from_u32(unit),
                            };
                            match ch {
                                Some(ch) => {
                                    if ch == '\0' {
                                        flaw.get_or_insert(StrFlaw::Nul);
                                    }
                                    out.push(ch);
                                }
                                None => {
                                    flaw.get_or_insert(StrFlaw::Surrogate);
                                    out.push(char::REPLACEMENT_CHARACTER);
                                }
                            }
                        }
                        _ => return self.syntax(),
                    }
                }
                Some(_) => {
                    // Copy the run up to the next quote or backslash.
                    let run = self.pos;
                    while let Some(c) = self.peek() {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        self.pos += 1;
                    }
                    out.push_str(&self.text[run..self.pos]);
                }
            }
        }
    }

    fn number(&mut self) -> Result<&'a str, Problem> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.pos += 1;
        }
        let text = &self.text[start..self.pos];
        match Number::parse(text) {
            Some(_) => Ok(text),
            None => Err(Problem::Syntax(start)),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Problem> {
        if self.b.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.syntax()
        }
    }
}

impl<'a> Tree<'a> {
    /// Reads `text` under `rules`.
    pub(crate) fn parse(text: &'a str, rules: Rules) -> Result<Self, Problem> {
        let mut r = Reader {
            text,
            b: text.as_bytes(),
            pos: 0,
            rules,
        };
        let mut tree = Tree {
            text,
            nodes: Vec::new(),
        };
        // Open containers, innermost last; for objects, the key of the
        // value being read.
        let mut open: Vec<usize> = Vec::new();
        let mut key: Option<Cow<'a, str>> = None;
        'value: loop {
            r.ws();
            let start = r.pos;
            let parent = open.last().copied().unwrap_or(NO_PARENT);
            match r.peek() {
                Some(b'{') | Some(b'[') => {
                    let is_obj = r.peek() == Some(b'{');
                    r.pos += 1;
                    let kind = if is_obj {
                        Kind::Obj(Vec::new())
                    } else {
                        Kind::Arr(Vec::new())
                    };
                    let idx = tree.attach(kind, parent, key.take(), start);
                    if open.len() + 1 > rules.max_depth {
                        return Err(Problem::TooDeep);
                    }
                    open.push(idx);
                    r.ws();
                    let close = if is_obj { b'}' } else { b']' };
                    if r.peek() == Some(close) {
                        r.pos += 1;
                        open.pop();
                        tree.nodes[idx].end = r.pos;
                    } else {
                        if is_obj {
                            key = Some(tree.key(&mut r, idx)?);
                            r.expect(b':')?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    let (s, flaw) = r.string()?;
                    let idx = tree.attach(Kind::Str(s), parent, key.take(), start);
                    tree.nodes[idx].end = r.pos;
                    if let Some(problem) = flaw.and_then(|f| f.refused(rules, || tree.path(idx))) {
                        return Err(problem);
                    }
                }
                Some(b'-' | b'0'..=b'9') => {
                    let n = r.number()?;
                    let idx = tree.attach(Kind::Num(n), parent, key.take(), start);
                    tree.nodes[idx].end = r.pos;
                    if rules.jsonb {
                        if let Some(Err(why)) = Number::parse(n).map(|n| n.check_range()) {
                            return Err(Problem::Number(tree.path(idx), why));
                        }
                    }
                }
                Some(b't') => {
                    r.literal(b"true")?;
                    let idx = tree.attach(Kind::Bool(true), parent, key.take(), start);
                    tree.nodes[idx].end = r.pos;
                }
                Some(b'f') => {
                    r.literal(b"false")?;
                    let idx = tree.attach(Kind::Bool(false), parent, key.take(), start);
                    tree.nodes[idx].end = r.pos;
                }
                Some(b'n') => {
                    r.literal(b"null")?;
                    let idx = tree.attach(Kind::Null, parent, key.take(), start);
                    tree.nodes[idx].end = r.pos;
                }
                _ => return r.syntax(),
            }
            // A value is complete: close containers or move to the next
            // element.
            loop {
                let Some(&top) = open.last() else {
                    r.ws();
                    return if r.pos == r.b.len() {
                        Ok(tree)
                    } else {
                        r.syntax()
                    };
                };
                r.ws();
                let is_obj = matches!(tree.nodes[top].kind, Kind::Obj(_));
                match r.peek() {
                    Some(b',') => {
                        r.pos += 1;
                        if is_obj {
                            r.ws();
                            key = Some(tree.key(&mut r, top)?);
                            r.expect(b':')?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if is_obj => {}
                    Some(b']') if !is_obj => {}
                    _ => return r.syntax(),
                }
                r.pos += 1;
                tree.nodes[top].end = r.pos;
                open.pop();
            }
        }
    }

    /// Reads an object key at the reader's position (inside `obj`).
    fn key(&self, r: &mut Reader<'a>, obj: usize) -> Result<Cow<'a, str>, Problem> {
        if r.peek() != Some(b'"') {
            return r.syntax();
        }
        let (k, flaw) = r.string()?;
        let at = || format!("{}/{}", self.path(obj), escape_pointer(&k));
        match flaw.and_then(|f| f.refused(r.rules, at)) {
            Some(problem) => Err(problem),
            None => Ok(k),
        }
    }

    fn attach(
        &mut self,
        kind: Kind<'a>,
        parent: usize,
        key: Option<Cow<'a, str>>,
        start: usize,
    ) -> usize {
        let idx = self.nodes.len();
        self.nodes.push(Node {
            kind,
            parent,
            start,
            end: start,
        });
        if parent != NO_PARENT {
            match &mut self.nodes[parent].kind {
                Kind::Obj(entries) => entries.push((key.unwrap_or_default(), idx)),
                Kind::Arr(items) => items.push(idx),
                _ => {}
            }
        }
        idx
    }

    /// The text of node `idx`, exactly as written.
    pub(crate) fn raw(&self, idx: usize) -> &'a str {
        let n = &self.nodes[idx];
        &self.text[n.start..n.end]
    }

    /// The JSON Pointer (RFC 6901) of node `idx`, `""` for the root.
    pub(crate) fn path(&self, idx: usize) -> String {
        let mut segments = Vec::new();
        let mut at = idx;
        while let Some(node) = self.nodes.get(at) {
            let parent = node.parent;
            match self.nodes.get(parent).map(|p| &p.kind) {
                Some(Kind::Obj(entries)) => {
                    if let Some((k, _)) = entries.iter().find(|(_, c)| *c == at) {
                        segments.push(escape_pointer(k));
                    }
                }
                Some(Kind::Arr(items)) => {
                    if let Some(i) = items.iter().position(|c| *c == at) {
                        segments.push(i.to_string());
                    }
                }
                _ => break,
            }
            at = parent;
        }
        segments.reverse();
        segments.iter().map(|s| format!("/{s}")).collect()
    }

    /// The value under `key` in object node `idx` (the last one if the key
    /// is repeated, as `jsonb` keeps it).
    pub(crate) fn member(&self, idx: usize, key: &str) -> Option<usize> {
        match &self.nodes[idx].kind {
            Kind::Obj(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|e| e.1),
            _ => None,
        }
    }

    /// Object node `idx`'s members as `jsonb` keeps them: each key once
    /// (its last value), keys ordered by length, then bytewise.
    pub(crate) fn members(&self, idx: usize) -> Vec<(&Cow<'a, str>, usize)> {
        let Kind::Obj(entries) = &self.nodes[idx].kind else {
            return Vec::new();
        };
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| jsonb_key_order(&entries[a].0, &entries[b].0).then(a.cmp(&b)));
        let mut out: Vec<(&Cow<'a, str>, usize)> = Vec::with_capacity(order.len());
        for i in order {
            let (k, child) = &entries[i];
            match out.last_mut() {
                Some(last) if last.0 == k => *last = (k, *child),
                _ => out.push((k, *child)),
            }
        }
        out
    }
}

/// `jsonb`'s order of object keys: shorter first, then bytewise.
fn jsonb_key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A key as a JSON Pointer segment: `~` as `~0`, `/` as `~1`.
pub(crate) fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// How numbers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Numbers {
    /// As `numeric` prints them (what `jsonb` returns).
    Numeric,
    /// In a form unique to each value, for comparing documents.
    Normalized,
}

/// A document as `jsonb` prints it, and its size.
#[derive(Debug)]
pub(crate) struct Written {
    /// The text; `None` when it went over the size limit.
    pub(crate) text: Option<String>,
    /// Its size without the spaces `jsonb` puts after `,` and `:`.
    pub(crate) compact_len: usize,
}

/// Where written text goes: into a string until it passes the limit,
/// then only counted.
struct Sink {
    out: String,
    len: usize,
    spaces: usize,
    max: Option<usize>,
    over: bool,
}

impl Sink {
    fn compact(&self) -> usize {
        self.len - self.spaces
    }

    fn check(&mut self) {
        if !self.over && self.max.is_some_and(|m| self.compact() > m) {
            self.over = true;
            self.out = String::new();
        }
    }

    fn push_str(&mut self, s: &str) {
        self.len += s.len();
        self.check();
        if !self.over {
            self.out.push_str(s);
        }
    }
}

impl Digits for Sink {
    fn push(&mut self, s: &str) {
        self.push_str(s);
    }

    fn zeros(&mut self, n: usize) {
        self.len += n;
        self.check();
        if !self.over {
            self.out.extend(std::iter::repeat_n('0', n));
        }
    }
}

impl Sink {
    /// `sep` followed by the one space `jsonb` puts after it.
    fn separator(&mut self, sep: &str) {
        self.push(sep);
        self.push(" ");
        self.spaces += 1;
    }

    /// A string, escaped as `jsonb` escapes it.
    fn string(&mut self, s: &str) {
        escape_string(s, &mut |piece| self.push(piece));
    }
}

/// Writes `s` as a JSON string, escaped as `jsonb` escapes it: `\"`, `\\`,
/// `\b`, `\f`, `\n`, `\r`, `\t`, other control characters as `\u00xx`,
/// everything else as it is.
pub(crate) fn escape_string(s: &str, push: &mut dyn FnMut(&str)) {
    push("\"");
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        push(&s[run..i]);
        if escaped.is_empty() {
            push(&format!("\\u{:04x}", c as u32));
        } else {
            push(escaped);
        }
        run = i + c.len_utf8();
    }
    push(&s[run..]);
    push("\"");
}

/// What is left to write, innermost last.
enum Step<'t> {
    Value(usize),
    Key(&'t str),
    Comma,
    Close(&'static str),
}

/// Writes `tree` as `jsonb` prints it: object keys once each (the last
/// value), ordered by length then bytewise, `", "` and `": "` between
/// parts, strings escaped as `jsonb` escapes them, numbers per `numbers`.
/// Stops keeping text (but goes on counting) once the compact size passes
/// `max_compact`.
pub(crate) fn write(tree: &Tree<'_>, numbers: Numbers, max_compact: Option<usize>) -> Written {
    let mut sink = Sink {
        out: String::with_capacity(tree.text.len() + tree.text.len() / 4),
        len: 0,
        spaces: 0,
        max: max_compact,
        over: false,
    };
    let mut steps = vec![Step::Value(0)];
    while let Some(step) = steps.pop() {
        match step {
            Step::Comma => sink.separator(","),
            Step::Close(s) => sink.push(s),
            Step::Key(k) => {
                sink.string(k);
                sink.separator(":");
            }
            Step::Value(idx) => match &tree.nodes[idx].kind {
                Kind::Null => sink.push("null"),
                Kind::Bool(true) => sink.push("true"),
                Kind::Bool(false) => sink.push("false"),
                Kind::Str(s) => sink.string(s),
                Kind::Num(text) => write_number(&mut sink, text, numbers),
                Kind::Arr(items) => {
                    sink.push("[");
                    steps.push(Step::Close("]"));
                    for (i, &child) in items.iter().enumerate().rev() {
                        steps.push(Step::Value(child));
                        if i > 0 {
                            steps.push(Step::Comma);
                        }
                    }
                }
                Kind::Obj(_) => {
                    sink.push("{");
                    steps.push(Step::Close("}"));
                    let members = tree.members(idx);
                    for (i, (k, child)) in members.into_iter().enumerate().rev() {
                        steps.push(Step::Value(child));
                        steps.push(Step::Key(k));
                        if i > 0 {
                            steps.push(Step::Comma);
                        }
                    }
                }
            },
        }
    }
    Written {
        compact_len: sink.compact(),
        text: (!sink.over).then_some(sink.out),
    }
}

fn write_number(sink: &mut Sink, text: &str, numbers: Numbers) {
    let Some(n) = Number::parse(text) else {
        sink.push(text);
        return;
    };
    let value = n.value();
    match numbers {
        Numbers::Numeric => {
            // Counted first: a short text such as `1e131071` prints as
            // 131,072 digits, which need not be made to be refused.
            let len = n.numeric_len(&value);
            if sink.over || sink.max.is_some_and(|m| sink.compact() + len > m) {
                sink.len += len;
                sink.check();
                return;
            }
            n.write_numeric(&value, sink);
        }
        Numbers::Normalized => {
            let mut s = String::new();
            value.write_normalized(&mut s);
            sink.push(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonb(text: &str) -> String {
        let tree = Tree::parse(text, Rules::LENIENT).unwrap();
        write(&tree, Numbers::Numeric, None).text.unwrap()
    }

    #[test]
    fn writes_what_jsonb_prints() {
        // Each pair: what PostgreSQL 15 printed for `'<text>'::jsonb`.
        assert_eq!(
            jsonb(r#"{"b":1,"aa":2,"a":3,"é":4,"z":5,"b":6, "":7}"#),
            r#"{"": 7, "a": 3, "b": 6, "z": 5, "aa": 2, "é": 4}"#
        );
        assert_eq!(
            jsonb(r#"{"a":[1,{"b":null,"a":true}],"c":{}}"#),
            r#"{"a": [1, {"a": true, "b": null}], "c": {}}"#
        );
        assert_eq!(
            jsonb(r#"["\ud83d\ude00 \u001f \u007f \u00e9 \/ \b\f\n\r\t \" \\ \u0001"]"#),
            "[\"😀 \\u001f \u{7f} é / \\b\\f\\n\\r\\t \\\" \\\\ \\u0001\"]"
        );
        assert_eq!(jsonb("[ 1 , 2 ]"), "[1, 2]");
        assert_eq!(jsonb("[[],[[]]]"), "[[], [[]]]");
        assert_eq!(jsonb(" -0.0e3 "), "0");
        assert_eq!(jsonb("\"x\""), "\"x\"");
    }

    #[test]
    fn reads_any_depth_without_recursion() {
        let depth = 100_000;
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let tree = Tree::parse(&text, Rules::LENIENT).unwrap();
        assert_eq!(tree.nodes.len(), depth);
        let written = write(&tree, Numbers::Numeric, None).text.unwrap();
        assert_eq!(written.len(), 2 * depth);
        let strict = Rules {
            max_depth: depth - 1,
            ..Rules::LENIENT
        };
        assert_eq!(Tree::parse(&text, strict).unwrap_err(), Problem::TooDeep);
    }

    #[test]
    fn strict_rules_name_the_path() {
        let strict = Rules {
            surrogates: true,
            jsonb: true,
            max_depth: 10,
        };
        let err = |t: &str| Tree::parse(t, strict).unwrap_err();
        assert_eq!(err(r#"{"a":[0,"x\u0000"]}"#), Problem::Nul("/a/1".into()));
        assert_eq!(
            err(r#"{"a/b":{"\u0000":1}}"#),
            Problem::Nul("/a~1b/\u{0}".into())
        );
        assert_eq!(err(r#"["\ud800"]"#), Problem::Surrogate("/0".into()));
        assert_eq!(err(r#"["\udc00\ud800"]"#), Problem::Surrogate("/0".into()));
        assert_eq!(
            err(r#"{"n":1e131072}"#),
            Problem::Number("/n".into(), OutOfRange::IntegerDigits)
        );
        // The lenient rules read them.
        for t in [r#"["\u0000"]"#, r#"["\ud800"]"#, "1e999999"] {
            assert!(Tree::parse(t, Rules::LENIENT).is_ok(), "{t}");
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        for t in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "[1 2]",
            "01",
            "\"\n\"",
            "nul",
            "[]]",
            "{1:2}",
            "\"\\x\"",
            "\"\\u12\"",
            "1 2",
        ] {
            assert!(Tree::parse(t, Rules::LENIENT).is_err(), "{t:?}");
        }
    }

    #[test]
    fn size_is_counted_past_the_limit() {
        let tree = Tree::parse(r#"{"a": 1e400, "b": [1, 2]}"#, Rules::LENIENT).unwrap();
        let full = write(&tree, Numbers::Numeric, None);
        let capped = write(&tree, Numbers::Numeric, Some(20));
        assert!(capped.text.is_none());
        assert_eq!(capped.compact_len, full.compact_len);
        assert_eq!(full.compact_len, r#"{"a":,"b":[1,2]}"#.len() + 401);
    }
}
