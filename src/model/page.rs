use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Field};
use crate::model::check_timestamp;

/// The largest page any list returns.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// A position in a list ordered by `(created_at, id)`: the last item of a
/// page. Pass it back to get the page after it. Its string form is opaque
/// and URL-safe, for handing to HTTP clients; it keeps microseconds, the
/// precision every stored timestamp has.
///
/// ```
/// use dreamnet_db::Cursor;
/// let at = "2026-11-25T10:00:00.123456Z".parse().unwrap();
/// let c = Cursor::new(at, uuid::Uuid::now_v7());
/// let back: Cursor = c.to_string().parse()?;
/// assert_eq!(back, c);
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// The `created_at` of the last item seen.
    pub created_at: DateTime<Utc>,
    /// The `id` of the last item seen.
    pub id: Uuid,
}

impl Cursor {
    /// The position of the item with this `created_at` and `id`.
    pub fn new(created_at: DateTime<Utc>, id: Uuid) -> Self {
        Cursor { created_at, id }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }
}

impl FromStr for Cursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::invalid(Field::Cursor, "not a cursor this store issued");
        let (micros, id) = s.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        check_timestamp(Field::Cursor, created_at)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(Cursor { created_at, id })
    }
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Pass this to get the next page; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Checks a page request: a size of 1 to [`MAX_PAGE_SIZE`], and a cursor
/// every backend can hold.
pub(crate) fn check_page(limit: usize, after: Option<Cursor>) -> Result<(), Error> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(Error::invalid(Field::Limit, "must be 1 to 1000"));
    }
    if let Some(after) = after {
        check_timestamp(Field::Cursor, after.created_at)?;
    }
    Ok(())
}

/// Builds a page from up to `limit + 1` fetched items: the extra one, if
/// present, only says that another page exists.
pub(crate) fn page_from<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(key)
    } else {
        None
    };
    Page { items, next }
}
