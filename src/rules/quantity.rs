//! Kubernetes resource quantities, parsed just far enough to compare an override label against
//! the bounds a policy declares (`max: 4Gi` must refuse `5000Mi`).

use std::cmp::Ordering;
use std::fmt;

/// A quantity as an exact rational in thousandths (milli-units), so `100m`, `0.5` and `1Gi`
/// compare exactly without floating-point surprises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    millis: i128,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a Kubernetes quantity (examples: 500m, 2, 512Mi, 1Gi, 1e3)")]
pub struct InvalidQuantity {
    pub value: String,
}

impl Quantity {
    pub fn parse(text: &str) -> Result<Self, InvalidQuantity> {
        let invalid = || InvalidQuantity {
            value: text.to_string(),
        };
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        if number.is_empty() || number == "+" || number == "-" {
            return Err(invalid());
        }
        let (negative, digits) = match number.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if (whole.is_empty() && fraction.is_empty())
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !fraction.chars().all(|c| c.is_ascii_digit())
            || fraction.len() > 9
        {
            return Err(invalid());
        }
        // Work in nano-units so fractions like 0.001 survive, then scale.
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut nanos = whole.checked_mul(1_000_000_000).ok_or_else(invalid)?;
        if !fraction.is_empty() {
            let padded = format!("{fraction:0<9}");
            nanos += padded.parse::<i128>().map_err(|_| invalid())?;
        }
        let nanos = match suffix {
            "" => Some(nanos),
            "n" => Some(nanos / 1_000_000_000),
            "u" => Some(nanos / 1_000_000),
            "m" => Some(nanos / 1_000),
            "k" => nanos.checked_mul(1_000),
            "M" => nanos.checked_mul(1_000_000),
            "G" => nanos.checked_mul(1_000_000_000),
            "T" => nanos.checked_mul(1_000_000_000_000),
            "P" => nanos.checked_mul(1_000_000_000_000_000),
            "E" => nanos.checked_mul(1_000_000_000_000_000_000),
            "Ki" => nanos.checked_mul(1 << 10),
            "Mi" => nanos.checked_mul(1 << 20),
            "Gi" => nanos.checked_mul(1 << 30),
            "Ti" => nanos.checked_mul(1 << 40),
            "Pi" => nanos.checked_mul(1 << 50),
            "Ei" => nanos.checked_mul(1 << 60),
            exponent if exponent.starts_with(['e', 'E']) => {
                let power: u32 = exponent[1..].parse().map_err(|_| invalid())?;
                10i128.checked_pow(power).and_then(|p| nanos.checked_mul(p))
            }
            _ => None,
        }
        .ok_or_else(invalid)?;
        let millis = nanos / 1_000_000;
        Ok(Quantity {
            millis: if negative { -millis } else { millis },
        })
    }

    pub fn from_integer(value: i64) -> Self {
        Quantity {
            millis: i128::from(value) * 1000,
        }
    }

    /// The value in whole units, rounded down (`1.5Ki` → 1536, `500m` → 0).
    pub fn whole_units(self) -> i128 {
        self.millis.div_euclid(1000)
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.millis.cmp(&other.millis)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis % 1000 == 0 {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap()
    }

    #[test]
    fn binary_and_decimal_suffixes_compare_exactly() {
        assert!(q("4Gi") > q("4G"));
        assert!(q("5000Mi") > q("4Gi"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1e3"), q("1k"));
        assert!(q("100m") < q("1"));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "abc", "1.2.3", "12Q", "--1", "1 Gi", "m"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(q("1500m").to_string(), "1500m");
        assert_eq!(q("2").to_string(), "2");
    }
}
