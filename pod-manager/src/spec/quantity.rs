//! Kubernetes resource quantities ("100m", "0.5", "128Mi", "1G", "1e3"), read as
//! apimachinery's resource.Quantity reads them. Written here rather than taken from a
//! crate: the grammar fits in one function, and what the kubelet needs from a quantity
//! is only Value() and MilliValue() with upstream's rounding (up, never losing a
//! request).
//!
//! A quantity is kept as an exact count of nano-units in an i128: the finest suffix
//! upstream accepts is `n`, and 2^127 nano-units hold every value an i64 can carry.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

const NANO: i128 = 1_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("quantity {input:?}: {why}")]
pub struct QuantityError {
    input: String,
    why: &'static str,
}

impl Quantity {
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// `<sign><digits>[.<digits>]<suffix>`, where the suffix is a binary SI suffix
    /// (Ki … Ei), a decimal SI suffix (n u m "" k M G T P E) or an exponent (e3, E-2).
    /// Digits below a nano-unit round up, as upstream rounds "0.1m" up to "1m".
    pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
        let err = |why| QuantityError {
            input: input.to_string(),
            why,
        };
        let s = input.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(err("no digits"));
        }
        if fraction.contains('.') {
            return Err(err("more than one decimal point"));
        }
        let (base, exponent) = suffix_scale(suffix).ok_or_else(|| err("unknown suffix"))?;

        // The digits as one integer: mantissa = digits / 10^fraction_len.
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        let mut mantissa: i128 = 0;
        for d in digits.bytes() {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(d - b'0')))
                .ok_or_else(|| err("too large"))?;
        }
        let scale = i32::try_from(fraction.len()).map_err(|_| err("too many digits"))?;

        // nanos = mantissa * base^exponent * 10^9 / 10^scale, rounded up.
        let (numerator, denominator) = if base == 10 {
            let power = exponent + 9 - scale;
            if power >= 0 {
                (mul_pow(mantissa, 10, power), Some(1))
            } else {
                (Some(mantissa), pow(10, -power))
            }
        } else {
            (
                mul_pow(mantissa, 2, exponent).and_then(|m| m.checked_mul(NANO)),
                pow(10, scale),
            )
        };
        let numerator = numerator.ok_or_else(|| err("too large"))?;
        let nanos = match denominator {
            Some(d) => ceil_div(numerator, d),
            // 10^power beyond i128: anything non-zero is below one nano-unit.
            None => i128::from(numerator != 0),
        };
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// The quantity in whole units, rounded up (upstream's Value()).
    pub fn value(&self) -> i64 {
        saturate(ceil_div(self.nanos, NANO))
    }

    /// The quantity in thousandths, rounded up (upstream's MilliValue()).
    pub fn milli_value(&self) -> i64 {
        saturate(ceil_div(self.nanos, 1_000_000))
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
        }
    }

    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }

    /// A quantity of whole units (for node capacities given as plain numbers).
    pub fn from_units(units: i64) -> Quantity {
        Quantity {
            nanos: i128::from(units) * NANO,
        }
    }

    /// A quantity of thousandths (millicores).
    pub fn from_millis(millis: i64) -> Quantity {
        Quantity {
            nanos: i128::from(millis) * 1_000_000,
        }
    }
}

/// The quantity `name` of a resource list, if present and readable. The API server
/// validates quantities, so an unreadable one is logged and treated as absent.
pub fn of(list: Option<&BTreeMap<String, ApiQuantity>>, name: &str) -> Option<Quantity> {
    let q = list?.get(name)?;
    match Quantity::parse(&q.0) {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::warn!(resource = name, error = %e, "ignoring an unreadable quantity");
            None
        }
    }
}

fn suffix_scale(suffix: &str) -> Option<(i128, i32)> {
    let decimal = |e| Some((10, e));
    let binary = |e| Some((2, e));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            let digits = exponent.trim_start_matches(['+', '-']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            decimal(exponent.parse().ok()?)
        }
    }
}

fn pow(base: i128, exponent: i32) -> Option<i128> {
    base.checked_pow(u32::try_from(exponent).ok()?)
}

fn mul_pow(m: i128, base: i128, exponent: i32) -> Option<i128> {
    if m == 0 {
        return Some(0);
    }
    m.checked_mul(pow(base, exponent)?)
}

/// Division rounding toward +infinity.
fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d > 0 {
        q + 1
    } else {
        q
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn value_and_milli_value_follow_every_suffix_kind() {
        let cases = [
            // (input, Value(), MilliValue())
            ("1", 1, 1000),
            ("100m", 1, 100),
            ("0.5", 1, 500),
            ("1.5", 2, 1500),
            ("250m", 1, 250),
            ("2500m", 3, 2500),
            ("128Mi", 134_217_728, 134_217_728_000),
            ("1Ki", 1024, 1_024_000),
            ("1.5Gi", 1_610_612_736, 1_610_612_736_000),
            ("1G", 1_000_000_000, 1_000_000_000_000),
            ("1k", 1000, 1_000_000),
            ("1e3", 1000, 1_000_000),
            ("1E3", 1000, 1_000_000),
            ("1e-3", 1, 1),
            ("12e+2", 1200, 1_200_000),
            ("1E", 1_000_000_000_000_000_000, i64::MAX),
            ("5.", 5, 5000),
            (".5", 1, 500),
            ("+2", 2, 2000),
            ("0", 0, 0),
            ("000100m", 1, 100),
            ("1u", 1, 1),
            ("1n", 1, 1),
        ];
        for (input, value, milli) in cases {
            let parsed = q(input);
            assert_eq!(
                (parsed.value(), parsed.milli_value()),
                (value, milli),
                "{input}"
            );
        }
    }

    #[test]
    fn precision_below_a_nano_unit_rounds_up_like_upstream() {
        // 0.1n is not representable: upstream rounds up rather than dropping it.
        assert!(!q("0.1n").is_zero());
        assert_eq!(q("0.1m").milli_value(), 1);
        assert_eq!(q("1e-20").milli_value(), 1);
    }

    #[test]
    fn negative_quantities_round_toward_positive_infinity() {
        assert_eq!(q("-1.5").value(), -1);
        assert_eq!(q("-100m").milli_value(), -100);
    }

    #[test]
    fn malformed_quantities_are_errors() {
        for input in [
            "", "m", "1.2.3", "1x", "1KiB", "1e", "1e+", "Mi", "1 Mi", "1ki", "--1",
        ] {
            assert!(Quantity::parse(input).is_err(), "{input:?} parsed");
        }
    }

    #[test]
    fn quantities_too_large_for_the_representation_are_errors() {
        assert!(Quantity::parse("1e40").is_err());
        assert!(Quantity::parse(&"9".repeat(60)).is_err());
    }

    #[test]
    fn equal_amounts_compare_equal_whatever_their_spelling() {
        assert_eq!(q("1").cmp_value(&q("1000m")), Ordering::Equal);
        assert_eq!(q("1Ki").cmp_value(&q("1024")), Ordering::Equal);
        assert_eq!(q("1G").cmp_value(&q("1e9")), Ordering::Equal);
        assert_eq!(q("1Gi").cmp_value(&q("1G")), Ordering::Greater);
    }

    #[test]
    fn sums_keep_milli_precision() {
        assert_eq!(q("100m").saturating_add(q("0.25")).milli_value(), 350);
    }

    #[test]
    fn an_unreadable_quantity_in_a_resource_list_reads_as_absent() {
        let list = BTreeMap::from([
            ("cpu".to_string(), ApiQuantity("bogus".into())),
            ("memory".to_string(), ApiQuantity("1Mi".into())),
        ]);
        assert_eq!(of(Some(&list), "cpu"), None);
        assert_eq!(
            of(Some(&list), "memory").map(|q| q.value()),
            Some(1_048_576)
        );
        assert_eq!(of(None, "memory"), None);
    }
}
