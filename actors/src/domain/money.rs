//! Amounts of money in whole US cents. Owns parsing what people type ("$1,234.56", "300") and
//! displaying dollars; currencies other than USD and tax or rounding rules are out of scope.
//!
//! No floating point is used anywhere: amounts are parsed digit by digit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Describes why a string is not a dollar amount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The input is empty, only whitespace, or only a sign and "$".
    #[error("amount is empty")]
    Empty,
    /// The input is not shaped like a dollar amount.
    #[error("invalid amount {input:?}: expected dollars like \"$1,234.56\"")]
    Invalid {
        /// The offending input, trimmed.
        input: String,
    },
    /// The input has more than two digits after the decimal point.
    #[error("invalid amount {input:?}: more than two decimal places")]
    TooPrecise {
        /// The offending input, trimmed.
        input: String,
    },
    /// The amount does not fit in 64-bit cents.
    #[error("amount is too large")]
    Overflow,
}

/// Holds an amount of money as a whole number of US cents; negative amounts are allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// Zero dollars.
    pub const ZERO: Money = Money(0);

    /// Creates an amount from a number of cents.
    pub const fn from_cents(cents: i64) -> Self {
        Self(cents)
    }

    /// Creates an amount from a whole number of dollars.
    ///
    /// # Panics
    /// Panics if `dollars * 100` overflows an `i64` (more than about 92 quadrillion dollars).
    pub const fn from_dollars(dollars: i64) -> Self {
        match dollars.checked_mul(100) {
            Some(cents) => Self(cents),
            None => panic!("Money::from_dollars overflowed i64 cents"),
        }
    }

    /// Returns the amount in cents.
    pub const fn cents(&self) -> i64 {
        self.0
    }

    /// Returns whether the amount is below zero.
    pub const fn is_negative(&self) -> bool {
        self.0 < 0
    }

    /// Adds two amounts, returning `None` on overflow.
    pub const fn checked_add(self, other: Money) -> Option<Money> {
        match self.0.checked_add(other.0) {
            Some(cents) => Some(Money(cents)),
            None => None,
        }
    }

    /// Subtracts `other` from this amount, returning `None` on overflow.
    pub const fn checked_sub(self, other: Money) -> Option<Money> {
        match self.0.checked_sub(other.0) {
            Some(cents) => Some(Money(cents)),
            None => None,
        }
    }

    /// Parses a dollar amount such as "$1,234.56", "1234.5", "300" or "-$5.00".
    ///
    /// A leading "-" and "$" are optional, thousands separators must group digits in threes, and
    /// at most two decimal places are allowed ("1234.5" is $1,234.50).
    ///
    /// # Errors
    /// Returns [`MoneyError::Empty`] for blank input, [`MoneyError::TooPrecise`] for fractions of
    /// a cent, [`MoneyError::Overflow`] beyond `i64` cents and [`MoneyError::Invalid`] otherwise.
    pub fn parse(input: &str) -> Result<Self, MoneyError> {
        let trimmed = input.trim();
        let invalid = || MoneyError::Invalid { input: trimmed.to_owned() };

        let (negative, rest) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let rest = rest.strip_prefix('$').unwrap_or(rest);
        if rest.is_empty() {
            return if trimmed.is_empty() { Err(MoneyError::Empty) } else { Err(invalid()) };
        }

        let (whole, fraction) = match rest.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (rest, None),
        };
        if !is_grouped_integer(whole) {
            return Err(invalid());
        }
        let fraction_cents = match fraction {
            None => 0,
            Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(invalid());
            }
            Some(f) if f.len() > 2 => {
                return Err(MoneyError::TooPrecise { input: trimmed.to_owned() });
            }
            Some(f) => {
                let value = digits_value(f).ok_or(MoneyError::Overflow)?;
                if f.len() == 1 { value * 10 } else { value }
            }
        };

        let dollars = digits_value(whole).ok_or(MoneyError::Overflow)?;
        let magnitude =
            dollars.checked_mul(100).and_then(|c| c.checked_add(fraction_cents)).ok_or(MoneyError::Overflow)?;
        let signed = if negative { -magnitude } else { magnitude };
        i64::try_from(signed).map(Money).map_err(|_| MoneyError::Overflow)
    }
}

/// Returns whether `s` is a non-empty run of digits, optionally with commas every three digits
/// ("1234", "1,234", "12,345,678"; not "1,23" or ",123").
fn is_grouped_integer(s: &str) -> bool {
    let mut groups = s.split(',');
    let Some(first) = groups.next() else {
        return false;
    };
    let all_digits = |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(first) {
        return false;
    }
    let mut has_commas = false;
    for group in groups {
        has_commas = true;
        if group.len() != 3 || !all_digits(group) {
            return false;
        }
    }
    !has_commas || first.len() <= 3
}

/// Returns the value of the ASCII digits in `s` (commas skipped), or `None` if it overflows.
fn digits_value(s: &str) -> Option<i128> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .try_fold(0i128, |acc, b| acc.checked_mul(10)?.checked_add(i128::from(b - b'0')))
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.0.unsigned_abs();
        let dollars = (magnitude / 100).to_string();
        let cents = magnitude % 100;

        let mut grouped = String::with_capacity(dollars.len() + dollars.len() / 3);
        for (i, digit) in dollars.chars().enumerate() {
            if i > 0 && (dollars.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}${grouped}.{cents:02}")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn typed_amounts_parse_to_cents() {
        let cases = [
            ("$1,234.56", 123_456),
            ("1234.5", 123_450),
            ("300", 30_000),
            ("0", 0),
            ("$0.07", 7),
            ("  $12.30 ", 1_230),
            ("-$5.00", -500),
            ("-5", -500),
            ("-0", 0),
            ("$12,345,678.90", 1_234_567_890),
            ("007", 700),
            ("$92,233,720,368,547,758.07", i64::MAX),
            ("-$92,233,720,368,547,758.08", i64::MIN),
        ];
        for (input, cents) in cases {
            assert_eq!(Money::parse(input), Ok(Money::from_cents(cents)), "{input:?}");
        }
    }

    #[test]
    fn malformed_amounts_are_rejected_with_a_specific_error() {
        let invalid = |s: &str| MoneyError::Invalid { input: s.to_owned() };
        let cases = [
            ("", MoneyError::Empty),
            ("   ", MoneyError::Empty),
            ("$", invalid("$")),
            ("-", invalid("-")),
            ("abc", invalid("abc")),
            ("$1,23", invalid("$1,23")),
            ("1234,567", invalid("1234,567")),
            (",123", invalid(",123")),
            ("1,,234", invalid("1,,234")),
            ("12.", invalid("12.")),
            (".5", invalid(".5")),
            ("1.2.3", invalid("1.2.3")),
            ("$-5", invalid("$-5")),
            ("--5", invalid("--5")),
            ("+5", invalid("+5")),
            ("5 00", invalid("5 00")),
            ("1e3", invalid("1e3")),
            ("١٢٣", invalid("١٢٣")),
            ("1.234", MoneyError::TooPrecise { input: "1.234".to_owned() }),
            ("$92,233,720,368,547,758.08", MoneyError::Overflow),
            ("99999999999999999999999999999999999999999999", MoneyError::Overflow),
        ];
        for (input, expected) in cases {
            assert_eq!(Money::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn display_shows_dollars_with_thousands_separators() {
        let cases = [
            (0, "$0.00"),
            (7, "$0.07"),
            (-500, "-$5.00"),
            (-1, "-$0.01"),
            (100_000, "$1,000.00"),
            (123_456, "$1,234.56"),
            (99_999, "$999.99"),
            (1_234_567_890, "$12,345,678.90"),
            (i64::MIN, "-$92,233,720,368,547,758.08"),
        ];
        for (cents, expected) in cases {
            assert_eq!(Money::from_cents(cents).to_string(), expected);
        }
    }

    #[test]
    fn from_dollars_multiplies_by_one_hundred() {
        assert_eq!(Money::from_dollars(300).cents(), 30_000);
        assert_eq!(Money::from_dollars(-2), Money::from_cents(-200));
    }

    #[test]
    fn checked_arithmetic_returns_none_on_overflow() {
        let a = Money::from_cents(150);
        assert_eq!(a.checked_add(Money::from_cents(50)), Some(Money::from_cents(200)));
        assert_eq!(a.checked_sub(Money::from_cents(200)), Some(Money::from_cents(-50)));
        assert_eq!(Money::from_cents(i64::MAX).checked_add(Money::from_cents(1)), None);
        assert_eq!(Money::from_cents(i64::MIN).checked_sub(Money::from_cents(1)), None);
    }

    #[test]
    fn amounts_order_by_value() {
        assert!(Money::from_cents(-1) < Money::ZERO);
        assert!(Money::from_dollars(2) > Money::from_cents(199));
    }

    #[test]
    fn serde_uses_integer_cents() {
        let money = Money::from_cents(123_456);
        assert_eq!(serde_json::to_string(&money).unwrap(), "123456");
        assert_eq!(serde_json::from_str::<Money>("-500").unwrap(), Money::from_cents(-500));
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(cents in any::<i64>()) {
            let money = Money::from_cents(cents);
            prop_assert_eq!(Money::parse(&money.to_string()), Ok(money));
        }

        #[test]
        fn parse_never_panics(input in "[-$0-9,. ]{0,30}") {
            let _ = Money::parse(&input);
        }
    }
}
