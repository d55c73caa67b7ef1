//! Media files: the record of a stored file, the checks on what a client
//! gives (its file name), and what the crate decides itself (the content
//! type, from the bytes).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest file name kept, in bytes of UTF-8; longer names are cut (at
/// a character boundary).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// The largest upload by default: 25 MiB.
pub const DEFAULT_MAX_MEDIA_BYTES: u64 = 25 * 1024 * 1024;

/// The content types accepted by default: common images, PDF, plain text,
/// JSON, and common audio and video.
pub const DEFAULT_ALLOWED_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/avif",
    "application/pdf",
    "text/plain",
    "application/json",
    "audio/mpeg",
    "audio/ogg",
    "audio/x-wav",
    "audio/x-flac",
    "audio/m4a",
    "video/mp4",
    "video/webm",
    "video/quicktime",
];

/// How many leading bytes the content type is decided from.
pub(crate) const SNIFF_BYTES: usize = 8 * 1024;

/// A stored file: the facts kept in the `media` table. Only files whose
/// bytes were fully written are ever returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// The file's id (a UUIDv7, so ids sort by upload time).
    pub id: Uuid,
    /// The user the file belongs to; `None` for the platform's own files.
    pub owner_id: Option<Uuid>,
    /// The content type decided from the bytes (never the client's claim).
    pub content_type: String,
    /// The size in bytes.
    pub size_bytes: u64,
    /// The SHA-256 of the content, lower-case hex.
    pub sha256: String,
    /// The name the client gave, cleaned for display (see
    /// [`NewMedia::file_name`]); it never names the stored object.
    pub file_name: String,
    /// Where the bytes are in the object store, made from `id` alone.
    pub storage_key: String,
    /// When the upload started.
    pub created_at: DateTime<Utc>,
}

impl Media {
    /// A `Content-Disposition` header value for this file, safe to send as
    /// is: `attachment` (or `inline`) with an ASCII `filename` (every
    /// other character, and `"`, `\` and `%`, replaced by `_`) and the
    /// exact name as an RFC 8187 `filename*`.
    ///
    /// ```
    /// # let mut m = dreamnet_db::Media { id: uuid::Uuid::nil(), owner_id: None,
    /// #     content_type: "text/plain".into(), size_bytes: 0, sha256: String::new(),
    /// #     file_name: String::new(), storage_key: String::new(), created_at: chrono::Utc::now() };
    /// m.file_name = "naïve \"plan\".txt".into();
    /// assert_eq!(
    ///     m.content_disposition(false),
    ///     "attachment; filename=\"na_ve _plan_.txt\"; filename*=UTF-8''na%C3%AFve%20%22plan%22.txt"
    /// );
    /// ```
    pub fn content_disposition(&self, inline: bool) -> String {
        let kind = if inline { "inline" } else { "attachment" };
        let ascii: String = self
            .file_name
            .chars()
            .map(|c| match c {
                ' '..='~' if !matches!(c, '"' | '\\' | '%') => c,
                _ => '_',
            })
            .collect();
        let mut encoded = String::with_capacity(self.file_name.len() * 3);
        for b in self.file_name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                encoded.push(b as char);
            } else {
                let _ = write!(encoded, "%{b:02X}");
            }
        }
        format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
    }
}

/// What an upload says about itself: whose file it is and the name it had.
/// The content type is not part of it: the store decides it from the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMedia {
    /// The owner; `None` for a platform file.
    pub owner_id: Option<Uuid>,
    /// The name the client gave.
    pub file_name: String,
}

impl NewMedia {
    /// A file of `owner` named `file_name`.
    pub fn for_user(owner: Uuid, file_name: impl Into<String>) -> Self {
        NewMedia {
            owner_id: Some(owner),
            file_name: file_name.into(),
        }
    }

    /// A platform file (no owner) named `file_name`.
    pub fn system(file_name: impl Into<String>) -> Self {
        NewMedia {
            owner_id: None,
            file_name: file_name.into(),
        }
    }

    /// The name as it is kept: its last path segment (after any `/` or
    /// `\`), without control characters (NUL included) or bidirectional
    /// overrides, trimmed, cut to [`MAX_FILE_NAME_BYTES`]; `file` if
    /// nothing is left (or only `.` or `..`). It is for display only.
    pub fn file_name(&self) -> String {
        clean_file_name(&self.file_name)
    }
}

fn clean_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let kept: String = base
        .chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    let mut kept = kept.trim();
    if kept.len() > MAX_FILE_NAME_BYTES {
        let mut end = MAX_FILE_NAME_BYTES;
        while !kept.is_char_boundary(end) {
            end -= 1;
        }
        kept = kept[..end].trim_end();
    }
    if kept.is_empty() || kept == "." || kept == ".." {
        "file".to_owned()
    } else {
        kept.to_owned()
    }
}

/// The content type of a file starting with `prefix` (its first
/// [`SNIFF_BYTES`], or all of it if shorter), from magic numbers; text
/// that is valid UTF-8 without control characters (other than tab, line
/// feeds and form feed) is `text/plain`, or `application/json` when it
/// starts (after white space) with `{` or `[`. Only the prefix is looked
/// at: the rest of a "text" file is not checked.
pub(crate) fn sniff(prefix: &[u8]) -> Option<&'static str> {
    if let Some(kind) = infer::get(prefix) {
        return Some(kind.mime_type());
    }
    if prefix.is_empty() {
        return None;
    }
    // A prefix may end inside a multi-byte character: allow that tail.
    let text = match std::str::from_utf8(prefix) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() && prefix.len() >= SNIFF_BYTES => {
            std::str::from_utf8(&prefix[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0C'))
    {
        return None;
    }
    match text.trim_start().as_bytes().first() {
        Some(b'{' | b'[') => Some("application/json"),
        _ => Some("text/plain"),
    }
}

/// A row of `media` as the backends keep it: `pending` until its object is
/// written, then complete with the facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaRow {
    pub id: Uuid,
    pub owner_id: Option<Uuid>,
    pub file_name: String,
    pub storage_key: String,
    pub created_at: DateTime<Utc>,
    /// `None` while pending.
    pub facts: Option<MediaFacts>,
}

/// What is known of a file once its bytes are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaFacts {
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub completed_at: DateTime<Utc>,
}

impl MediaRow {
    /// The record, if the row is complete.
    pub(crate) fn media(&self) -> Option<Media> {
        let f = self.facts.as_ref()?;
        Some(Media {
            id: self.id,
            owner_id: self.owner_id,
            content_type: f.content_type.clone(),
            size_bytes: f.size_bytes,
            sha256: f.sha256.clone(),
            file_name: self.file_name.clone(),
            storage_key: self.storage_key.clone(),
            created_at: self.created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_for_display() {
        let clean = |s: &str| NewMedia::system(s).file_name();
        assert_eq!(clean("../../etc/passwd"), "passwd");
        assert_eq!(clean("/abs/path.png"), "path.png");
        assert_eq!(clean("C:\\Users\\x\\a.pdf"), "a.pdf");
        assert_eq!(clean("a\0b.txt"), "ab.txt");
        assert_eq!(clean(".."), "file");
        assert_eq!(clean(""), "file");
        assert_eq!(clean("evil\u{202E}gpj.exe"), "evilgpj.exe");
        assert_eq!(clean("日本語.png"), "日本語.png");
        let long = "é".repeat(300);
        let cut = clean(&long);
        assert!(cut.len() <= MAX_FILE_NAME_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn content_types_come_from_the_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff(b"  {\"a\": 1}"), Some("application/json"));
        assert_eq!(sniff(b"hello\n"), Some("text/plain"));
        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0"),
            Some("application/vnd.microsoft.portable-executable")
        );
        assert_eq!(sniff(b"\0\x01\x02binary"), None);
        assert_eq!(sniff(b""), None);
    }
}
