//! Kubernetes resource quantities, parsed just far enough to compare an override label against
//! the bounds a policy declares (`max: 4Gi` must refuse `5000Mi`).

use std::cmp::Ordering;
use std::fmt;

/// A quantity as an exact whole number of nano-units, Kubernetes' finest scale, so `100m`, `0.5`
/// and `1Gi` compare exactly without floating-point surprises.
///
/// Every accepted string is represented exactly: a value finer than `1n` or beyond `i128`
/// nano-units is refused rather than rounded or wrapped, so a label can never compare below a
/// bound it exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a Kubernetes quantity: {reason} (examples: 500m, 2, 512Mi, 1Gi, 1e3)")]
pub struct InvalidQuantity {
    pub value: String,
    pub reason: &'static str,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

impl Quantity {
    pub fn parse(text: &str) -> Result<Self, InvalidQuantity> {
        let invalid = |reason: &'static str| InvalidQuantity {
            value: text.to_string(),
            reason,
        };
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(trimmed.len());
        let (number, suffix) = trimmed.split_at(split);
        let (negative, digits) = match number.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if (whole.is_empty() && fraction.is_empty())
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid("expected a number, then an optional suffix"));
        }
        // Trailing zeros of the fraction carry no value; dropping them keeps `1.000…0` exact.
        let fraction = fraction.trim_end_matches('0');
        let too_large = || invalid("too large");
        // The number as an integer mantissa: `12.5` is 125 with one fractional digit.
        let mut mantissa: i128 = 0;
        for byte in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(byte - b'0')))
                .ok_or_else(too_large)?;
        }
        let (binary, decimal_exponent): (i128, i64) = match suffix {
            "" => (1, 0),
            "n" => (1, -9),
            "u" => (1, -6),
            "m" => (1, -3),
            "k" => (1, 3),
            "M" => (1, 6),
            "G" => (1, 9),
            "T" => (1, 12),
            "P" => (1, 15),
            "E" => (1, 18),
            "Ki" => (1 << 10, 0),
            "Mi" => (1 << 20, 0),
            "Gi" => (1 << 30, 0),
            "Ti" => (1 << 40, 0),
            "Pi" => (1 << 50, 0),
            "Ei" => (1 << 60, 0),
            exponent if exponent.starts_with(['e', 'E']) => {
                let power = &exponent[1..];
                let unsigned = power.strip_prefix(['+', '-']).unwrap_or(power);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("the exponent must be an integer"));
                }
                let power: i64 = power.parse().map_err(|_| too_large())?;
                (1, power)
            }
            _ => return Err(invalid("unknown suffix")),
        };
        let scaled = mantissa.checked_mul(binary).ok_or_else(too_large)?;
        // value = scaled × 10^(decimal_exponent − fraction digits) units, in nano-units.
        let fraction_digits = i64::try_from(fraction.len()).map_err(|_| too_large())?;
        let exponent = decimal_exponent
            .checked_add(9)
            .and_then(|e| e.checked_sub(fraction_digits))
            .ok_or_else(too_large)?;
        let nanos = if scaled == 0 {
            0
        } else if exponent >= 0 {
            let factor = u32::try_from(exponent)
                .ok()
                .and_then(|e| 10i128.checked_pow(e))
                .ok_or_else(too_large)?;
            scaled.checked_mul(factor).ok_or_else(too_large)?
        } else {
            let finer = || invalid("finer than 1n, the smallest Kubernetes unit");
            let divisor = u32::try_from(-exponent)
                .ok()
                .and_then(|e| 10i128.checked_pow(e))
                .ok_or_else(finer)?;
            if scaled % divisor != 0 {
                return Err(finer());
            }
            scaled / divisor
        };
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    pub fn from_integer(value: i64) -> Self {
        Quantity {
            nanos: i128::from(value) * NANOS_PER_UNIT,
        }
    }

    /// The value in whole units, rounded down (`1.5Ki` → 1536, `500m` → 0).
    pub fn whole_units(self) -> i128 {
        self.nanos.div_euclid(NANOS_PER_UNIT)
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// The shortest exact spelling: whole units, else milli, micro or nano-units.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.nanos;
        if nanos % NANOS_PER_UNIT == 0 {
            write!(f, "{}", nanos / NANOS_PER_UNIT)
        } else if nanos % 1_000_000 == 0 {
            write!(f, "{}m", nanos / 1_000_000)
        } else if nanos % 1_000 == 0 {
            write!(f, "{}u", nanos / 1_000)
        } else {
            write!(f, "{nanos}n")
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
        assert_eq!(q("1.5u").to_string(), "1500n");
        assert_eq!(q("0.000001").to_string(), "1u");
    }

    #[test]
    fn huge_and_inexact_values_are_refused_not_wrapped() {
        for bad in [
            "99999999999999999999Ei",
            "1e308",
            "1e99999999999999999999",
            "170141183460469231731687303715.999999999",
            "170141183460469231731687303716",
            "0.0000000001",
            "1.5n",
            "1e-10",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(q("1e-3"), q("1m"));
        assert_eq!(q("1.000000000000000000000000000000000000000"), q("1"));
        assert!(q("4294967296.000000001") > q("4Gi"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const SUFFIXES: [&str; 16] = [
            "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
        ];

        /// Quantity-like strings, many of them out of range: long digit runs, long fractions,
        /// every suffix, large exponents.
        fn quantity_like() -> impl Strategy<Value = String> {
            (
                prop::option::of(prop::sample::select(vec!["+", "-"])),
                "[0-9]{0,45}",
                prop::option::of("[0-9]{0,45}"),
                prop_oneof![
                    prop::sample::select(SUFFIXES.to_vec()).prop_map(String::from),
                    (prop::sample::select(vec!["e", "E", "e-", "e+"]), 0u32..500)
                        .prop_map(|(e, power)| format!("{e}{power}")),
                ],
            )
                .prop_map(|(sign, whole, fraction, suffix)| {
                    let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
                    format!("{}{whole}{fraction}{suffix}", sign.unwrap_or(""))
                })
        }

        /// An independent, approximate reading of a quantity string, for the bound oracle.
        fn approximate(text: &str) -> Option<f64> {
            let split = text
                .find(|c: char| c.is_ascii_alphabetic())
                .unwrap_or(text.len());
            let (number, suffix) = text.split_at(split);
            let number: f64 = number.parse().ok()?;
            let multiplier = match suffix {
                "" => 1.0,
                "n" => 1e-9,
                "u" => 1e-6,
                "m" => 1e-3,
                "k" => 1e3,
                "M" => 1e6,
                "G" => 1e9,
                "T" => 1e12,
                "P" => 1e15,
                "E" => 1e18,
                "Ki" => 2f64.powi(10),
                "Mi" => 2f64.powi(20),
                "Gi" => 2f64.powi(30),
                "Ti" => 2f64.powi(40),
                "Pi" => 2f64.powi(50),
                "Ei" => 2f64.powi(60),
                exponent => 10f64.powi(exponent[1..].parse::<i32>().ok()?),
            };
            Some(number * multiplier)
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(512))]

            #[test]
            fn parse_never_panics_and_display_round_trips(text in any::<String>()) {
                if let Ok(quantity) = Quantity::parse(&text) {
                    prop_assert_eq!(Quantity::parse(&quantity.to_string()), Ok(quantity));
                }
            }

            #[test]
            fn quantity_like_strings_round_trip(text in quantity_like()) {
                if let Ok(quantity) = Quantity::parse(&text) {
                    prop_assert_eq!(Quantity::parse(&quantity.to_string()), Ok(quantity));
                }
            }

            #[test]
            fn values_above_a_bound_never_compare_below_it(text in quantity_like()) {
                let bound = q("4Gi");
                let exceeds = approximate(&text).is_some_and(|value| value > 4.0 * 2f64.powi(30) * (1.0 + 1e-12));
                if exceeds {
                        prop_assert!(
                        Quantity::parse(&text).is_ok_and(|quantity| quantity > bound)
                            || Quantity::parse(&text).is_err(),
                        "{} accepted at or below 4Gi", text
                    );
                }
            }

            #[test]
            fn integers_parse_exactly_and_in_order(a in any::<i64>(), b in any::<i64>()) {
                prop_assert_eq!(q(&a.to_string()), Quantity::from_integer(a));
                prop_assert_eq!(q(&a.to_string()).cmp(&q(&b.to_string())), a.cmp(&b));
            }

            #[test]
            fn comparisons_are_monotone(
                a in 0u64..1_000_000_000,
                b in 0u64..1_000_000_000,
                suffix in prop::sample::select(SUFFIXES.to_vec()),
                fraction in 0usize..4,
            ) {
                let spell = |n: u64| {
                    let digits = format!("{n:0>5}");
                    let (whole, frac) = digits.split_at(digits.len() - fraction);
                    format!("{whole}.{frac}{suffix}")
                };
                if let (Ok(qa), Ok(qb)) = (Quantity::parse(&spell(a)), Quantity::parse(&spell(b))) {
                    prop_assert_eq!(qa.cmp(&qb), a.cmp(&b), "{} vs {}", spell(a), spell(b));
                }
            }

            #[test]
            fn larger_suffixes_are_larger(n in 1u32..1_000_000) {
                let order = ["n", "u", "m", "", "k", "Ki", "M", "Mi", "G", "Gi", "T", "Ti", "P", "Pi", "E", "Ei"];
                for pair in order.windows(2) {
                    let (smaller, larger) = (format!("{n}{}", pair[0]), format!("{n}{}", pair[1]));
                    prop_assert!(q(&smaller) < q(&larger), "{} < {}", smaller, larger);
                }
            }
        }
    }
}
