//! JSON numbers as exact decimals: compared by value and printed the way
//! PostgreSQL's `numeric` prints them, never through `f64`.

use std::fmt::Write as _;

/// The most digits `numeric` holds before the decimal point (a weight of
/// 32767 base-10000 digits): `9e131071` is accepted, `1e131072` is not.
pub(crate) const NUMERIC_MAX_INTEGER_DIGITS: i64 = 131_072;

/// The most digits `numeric` keeps after the decimal point (its largest
/// display scale): `1e-16383` is accepted, `1e-16384` and `0.1e-16383` are
/// not.
pub(crate) const NUMERIC_MAX_SCALE: i64 = 16_383;

/// `numeric`'s input refuses an exponent at or beyond `INT_MAX / 2` either
/// way, whatever the digits (`0e1073741823` included).
const NUMERIC_MAX_EXPONENT: i64 = (i32::MAX / 2) as i64;

/// Exponents are read saturating at this size, far beyond anything
/// `numeric` accepts, so that arithmetic on them cannot overflow.
const EXPONENT_CAP: i64 = 1 << 60;

/// A JSON number's text, split into its parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Number<'a> {
    neg: bool,
    /// The digits before the point, as written.
    int: &'a str,
    /// The digits after the point, as written (may be empty).
    frac: &'a str,
    /// The exponent, as written (saturating).
    exp: i64,
}

/// Why `numeric` would refuse a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutOfRange {
    /// More than [`NUMERIC_MAX_INTEGER_DIGITS`] digits before the point.
    IntegerDigits,
    /// More than [`NUMERIC_MAX_SCALE`] digits after the point.
    Scale,
    /// An exponent of at least 1073741823 either way.
    Exponent,
}

impl OutOfRange {
    pub(crate) fn describe(self) -> String {
        match self {
            OutOfRange::IntegerDigits => {
                format!("more than {NUMERIC_MAX_INTEGER_DIGITS} digits before the decimal point")
            }
            OutOfRange::Scale => {
                format!("more than {NUMERIC_MAX_SCALE} digits after the decimal point")
            }
            OutOfRange::Exponent => {
                format!("an exponent of {NUMERIC_MAX_EXPONENT} or more either way")
            }
        }
    }
}

/// Where a number's text goes: pieces, and runs of zeros (which may be
/// long: `1e131071` is one and 131,071 zeros).
pub(crate) trait Digits {
    fn push(&mut self, s: &str);
    fn zeros(&mut self, n: usize);
}

impl Digits for String {
    fn push(&mut self, s: &str) {
        self.push_str(s);
    }

    fn zeros(&mut self, n: usize) {
        self.extend(std::iter::repeat_n('0', n));
    }
}

/// A number's exact value: `digits × 10^exp`, with `digits` free of
/// leading and trailing zeros (empty for zero, which has no sign).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decimal {
    neg: bool,
    digits: String,
    exp: i64,
}

impl<'a> Number<'a> {
    /// Splits a JSON number's text; `None` if it is not one.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        let b = text.as_bytes();
        let mut i = 0;
        let neg = b.first() == Some(&b'-');
        if neg {
            i += 1;
        }
        let int_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int = &text[int_start..i];
        if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
            return None;
        }
        let mut frac = "";
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            frac = &text[start..i];
            if frac.is_empty() {
                return None;
            }
        }
        let mut exp: i64 = 0;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let exp_neg = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                exp = exp
                    .saturating_mul(10)
                    .saturating_add(i64::from(b[i] - b'0'))
                    .min(EXPONENT_CAP);
                i += 1;
            }
            if i == start {
                return None;
            }
            if exp_neg {
                exp = -exp;
            }
        }
        (i == b.len()).then_some(Number {
            neg,
            int,
            frac,
            exp,
        })
    }

    /// The digits as written, before and after the point.
    fn all_digits(&self) -> impl DoubleEndedIterator<Item = u8> + Clone + 'a {
        self.int.bytes().chain(self.frac.bytes())
    }

    /// The exact value.
    pub(crate) fn value(&self) -> Decimal {
        let total = self.int.len() + self.frac.len();
        let first = self.all_digits().position(|d| d != b'0');
        let Some(first) = first else {
            return Decimal {
                neg: false,
                digits: String::new(),
                exp: 0,
            };
        };
        let last = total - 1 - self.all_digits().rev().position(|d| d != b'0').unwrap_or(0);
        let digits: String = self
            .all_digits()
            .skip(first)
            .take(last + 1 - first)
            .map(char::from)
            .collect();
        let trailing = (total - 1 - last) as i64;
        Decimal {
            neg: self.neg,
            digits,
            exp: self.exp - self.frac.len() as i64 + trailing,
        }
    }

    /// `numeric`'s display scale: the digits it prints after the point.
    fn scale(&self) -> i64 {
        (self.frac.len() as i64 - self.exp).max(0)
    }

    /// Whether PostgreSQL's `numeric` (and so `jsonb`) accepts the number.
    pub(crate) fn check_range(&self) -> Result<(), OutOfRange> {
        if self.exp.abs() >= NUMERIC_MAX_EXPONENT {
            return Err(OutOfRange::Exponent);
        }
        if self.scale() > NUMERIC_MAX_SCALE {
            return Err(OutOfRange::Scale);
        }
        if self.value().integer_digits() > NUMERIC_MAX_INTEGER_DIGITS {
            return Err(OutOfRange::IntegerDigits);
        }
        Ok(())
    }

    /// How long [`write_numeric`](Self::write_numeric) makes it, computed
    /// without writing it.
    pub(crate) fn numeric_len(&self, value: &Decimal) -> usize {
        let scale = self.scale() as usize;
        let sign = usize::from(value.neg);
        let int = value.integer_digits().max(1) as usize;
        let fraction = if scale > 0 {
            scale.saturating_add(1)
        } else {
            0
        };
        sign.saturating_add(int).saturating_add(fraction)
    }

    /// Writes the number as `numeric` prints it: no exponent, the integer
    /// part without leading zeros, and exactly the display scale's digits
    /// after the point (`1.50e1` is `15.0`, `1e2` is `100`, `-0.0` is
    /// `0.0`).
    pub(crate) fn write_numeric(&self, value: &Decimal, out: &mut dyn Digits) {
        let scale = self.scale() as usize;
        if value.neg {
            out.push("-");
        }
        let len = value.digits.len() as i64;
        // Where the point falls, counted in digits from the first of
        // `digits`.
        let point = len + value.exp;
        if point <= 0 {
            out.push("0");
        } else if point <= len {
            out.push(&value.digits[..point as usize]);
        } else {
            out.push(&value.digits);
            out.zeros((point - len) as usize);
        }
        if scale == 0 {
            return;
        }
        out.push(".");
        let mut written = 0usize;
        if point < 0 {
            let lead = (-point) as usize;
            out.zeros(lead);
            written += lead;
        }
        if point < len {
            let tail = &value.digits[point.max(0) as usize..];
            out.push(tail);
            written += tail.len();
        }
        out.zeros(scale.saturating_sub(written));
    }
}

impl Decimal {
    /// Digits before the point (0 for a value below 1).
    fn integer_digits(&self) -> i64 {
        if self.digits.is_empty() {
            0
        } else {
            (self.digits.len() as i64 + self.exp).max(0)
        }
    }

    /// A short text unique to the value: `0`, or the digits and the
    /// exponent (`15e-1` for `1.50`).
    pub(crate) fn write_normalized(&self, out: &mut String) {
        if self.digits.is_empty() {
            out.push('0');
            return;
        }
        if self.neg {
            out.push('-');
        }
        out.push_str(&self.digits);
        if self.exp != 0 {
            let _ = write!(out, "e{}", self.exp);
        }
    }
}

/// Whether two number texts have the same value (`1.0` and `1`, `1e2` and
/// `100`); texts that are not numbers are equal only as text.
pub(crate) fn same_value(a: &str, b: &str) -> bool {
    match (Number::parse(a), Number::parse(b)) {
        (Some(x), Some(y)) => x.value() == y.value(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(text: &str) -> String {
        let n = Number::parse(text).unwrap();
        let v = n.value();
        let mut out = String::new();
        n.write_numeric(&v, &mut out);
        assert_eq!(out.len(), n.numeric_len(&v), "{text}");
        out
    }

    #[test]
    fn prints_as_numeric_does() {
        // Each pair: what PostgreSQL 15 printed for `'<text>'::jsonb`.
        for (text, printed) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("-0.0e3", "0"),
            ("0.000", "0.000"),
            ("0e5", "0"),
            ("1.50e1", "15.0"),
            ("1e2", "100"),
            ("1E+2", "100"),
            ("1.0", "1.0"),
            ("123.456e-10", "0.0000000123456"),
            ("1e-3", "0.001"),
            ("-12.5", "-12.5"),
            (
                "12345678901234567890.12345678901234567890e-5",
                "123456789012345.6789012345678901234567890",
            ),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("18446744073709551617", "18446744073709551617"),
            ("0.5e3", "500"),
            ("100e-2", "1.00"),
        ] {
            assert_eq!(numeric(text), printed, "{text}");
        }
        assert_eq!(numeric("1e400").len(), 401);
        assert_eq!(numeric("1e-16383").len(), 16385);
    }

    #[test]
    fn values_compare_exactly() {
        assert!(same_value("1", "1.0"));
        assert!(same_value("1e2", "100"));
        assert!(same_value("-0", "0.00"));
        assert!(same_value("0.1e1", "1"));
        assert!(!same_value("0.1", "0.10000000000000001"));
        assert!(!same_value(
            "123456789012345678901234567890",
            "123456789012345680000000000000"
        ));
        assert!(!same_value("1", "-1"));
        let mut s = String::new();
        Number::parse("1.50")
            .unwrap()
            .value()
            .write_normalized(&mut s);
        assert_eq!(s, "15e-1");
    }

    #[test]
    fn range_follows_numeric() {
        // What PostgreSQL 15 accepted and refused ("value overflows numeric
        // format").
        for ok in [
            "9e131071",
            "0.5e131072",
            "1e-16383",
            "0e-16383",
            "0e999999999",
            "1e400",
        ] {
            assert_eq!(Number::parse(ok).unwrap().check_range(), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("1e131072", OutOfRange::IntegerDigits),
            ("1e200000", OutOfRange::IntegerDigits),
            ("1e-16384", OutOfRange::Scale),
            ("0e-16384", OutOfRange::Scale),
            ("0.1e-16383", OutOfRange::Scale),
            ("1e2147483647", OutOfRange::Exponent),
            ("0e1073741823", OutOfRange::Exponent),
            ("1e-99999999999999999999999", OutOfRange::Exponent),
        ] {
            assert_eq!(Number::parse(bad).unwrap().check_range(), Err(why), "{bad}");
        }
    }

    #[test]
    fn only_json_numbers_parse() {
        for bad in ["", "-", "01", "1.", ".5", "1e", "1e+", "+1", "1x", "0x10"] {
            assert!(Number::parse(bad).is_none(), "{bad}");
        }
    }
}
