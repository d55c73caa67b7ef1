//! The instants every backend can store: PostgreSQL's `timestamptz` runs
//! from 4714-11-24 00:00:00 UTC BC (Julian day 0) to the year 294276, and
//! chrono's `DateTime<Utc>` ends before that (the year 262142), so only the
//! start needs checking. Every timestamp a caller passes (time ranges,
//! cursors, expiries) is checked against it before it reaches a backend, so
//! the in-memory backend refuses exactly what PostgreSQL would.

use chrono::{DateTime, Utc};

use crate::error::{Error, Field};

/// Microseconds from the Unix epoch to 4714-11-24 00:00:00 UTC BC.
const EARLIEST_MICROS: i64 = -210_866_803_200_000_000;

/// The earliest instant a store keeps: 4714-11-24 00:00:00 UTC BC, the
/// start of PostgreSQL's `timestamptz`. Earlier instants passed to a store
/// (in a [`TimeRange`](crate::TimeRange), a [`Cursor`](crate::Cursor), an
/// expiry) give [`Error::InvalidInput`] on every backend.
///
/// ```
/// use chrono::{Datelike, Duration};
/// let t = dreamnet_db::earliest_timestamp();
/// assert_eq!((t.year(), t.month(), t.day()), (-4713, 11, 24));
/// assert!(dreamnet_db::earliest_timestamp() - Duration::microseconds(1) < t);
/// ```
pub fn earliest_timestamp() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(EARLIEST_MICROS).expect("within chrono's range")
}

/// `Ok` when every backend can store `t`; otherwise `InvalidInput` naming
/// `field`.
pub(crate) fn check_timestamp(field: Field, t: DateTime<Utc>) -> Result<(), Error> {
    if t.timestamp_micros() < EARLIEST_MICROS {
        return Err(Error::invalid(
            field,
            "before 4714-11-24 00:00:00 UTC BC, the earliest instant PostgreSQL stores",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn the_earliest_instant_is_accepted_and_the_one_before_refused() {
        let first = earliest_timestamp();
        assert!(check_timestamp(Field::TimeRange, first).is_ok());
        let before = first - Duration::microseconds(1);
        let err = check_timestamp(Field::TimeRange, before).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidInput {
                field: Field::TimeRange,
                ..
            }
        ));
        assert!(check_timestamp(Field::Cursor, DateTime::<Utc>::MIN_UTC).is_err());
        assert!(check_timestamp(Field::Cursor, DateTime::<Utc>::MAX_UTC).is_ok());
    }
}
