//! Just enough of apimachinery's `resource.Quantity` for volumes: a downward API divisor
//! (`1m`, `1Mi`), a container limit (`500m`, `1Gi`, `129e6`) and an emptyDir `sizeLimit`.
//!
//! A quantity is held exactly as a count of nano-units (10^-9), which covers every suffix
//! from `n` to `E`/`Ei` in an `i128`. Upstream's `Value()` and `MilliValue()` round up
//! (towards +infinity) to whole units and milli-units; so do [`Quantity::value`] and
//! [`Quantity::milli_value`].

use thiserror::Error;

/// A parsed quantity, in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("quantity {input:?}: {reason}")]
pub struct QuantityError {
    pub input: String,
    pub reason: &'static str,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// A quantity of whole units.
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

    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
        }
    }

    /// Parses the canonical and the exponent forms: `<sign><digits>[.<digits>]<suffix>`, where the
    /// suffix is a binary SI one (`Ki`..`Ei`), a decimal SI one (`n`,`u`,`m`,``,`k`,`M`..`E`) or an
    /// exponent (`e3`, `E-2`), as `resource.ParseQuantity`.
    pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
        let err = |reason| QuantityError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (negative, s) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("no number"));
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        // value = digits * 10^(-frac_len), multiplied by the suffix.
        let digits: String = format!("{int_part}{frac_part}");
        let mantissa: i128 = digits.parse().map_err(|_| err("number too large"))?;
        let mut exp10: i32 = -(frac_part.len() as i32);
        let mut mult: i128 = 1;
        match suffix {
            "" => {}
            "Ki" => mult = 1 << 10,
            "Mi" => mult = 1 << 20,
            "Gi" => mult = 1 << 30,
            "Ti" => mult = 1 << 40,
            "Pi" => mult = 1 << 50,
            "Ei" => mult = 1 << 60,
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            other if other.starts_with(['e', 'E']) => {
                let e: i32 = other[1..].parse().map_err(|_| err("bad exponent"))?;
                exp10 += e;
            }
            _ => return Err(err("unknown suffix")),
        }
        // Convert to nanos: mantissa * mult * 10^(exp10 + 9), rounding up as upstream does
        // for precision below the smallest unit it keeps.
        let shift = exp10 + 9;
        let base = mantissa
            .checked_mul(mult)
            .ok_or_else(|| err("number too large"))?;
        let nanos = if shift >= 0 {
            let p = 10i128
                .checked_pow(shift as u32)
                .ok_or_else(|| err("number too large"))?;
            base.checked_mul(p).ok_or_else(|| err("number too large"))?
        } else {
            match 10i128.checked_pow((-shift) as u32) {
                Some(p) => ceil_div(base, p),
                None => i128::from(base != 0),
            }
        };
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whole units, rounded up (upstream `Quantity.Value()`).
    pub fn value(&self) -> i128 {
        ceil_div(self.nanos, NANO)
    }

    /// Milli-units, rounded up (upstream `Quantity.MilliValue()`).
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.nanos, 1_000_000)
    }
}

/// Integer division rounding towards +infinity.
pub(crate) fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if (a % b != 0) && ((a > 0) == (b > 0)) {
        q + 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_and_rounds_up_like_upstream() {
        // (input, value(), milli_value())
        let cases: &[(&str, i128, i128)] = &[
            ("0", 0, 0),
            ("1", 1, 1000),
            ("500m", 1, 500),
            ("0.5", 1, 500),
            ("1.5", 2, 1500),
            ("250m", 1, 250),
            ("1m", 1, 1),
            ("1Ki", 1024, 1_024_000),
            ("1Mi", 1 << 20, (1 << 20) * 1000),
            ("1Gi", 1 << 30, (1i128 << 30) * 1000),
            ("128974848", 128_974_848, 128_974_848_000),
            ("129e6", 129_000_000, 129_000_000_000),
            ("129M", 129_000_000, 129_000_000_000),
            ("1k", 1000, 1_000_000),
            ("100n", 1, 1),
            ("1E-3", 1, 1),
            ("+2", 2, 2000),
            ("-1", -1, -1000),
        ];
        for (input, value, milli) in cases {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(q.value(), *value, "value of {input}");
            assert_eq!(q.milli_value(), *milli, "milli of {input}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for input in ["", "abc", "1Xi", "1.2.3", "m", "1e"] {
            assert!(Quantity::parse(input).is_err(), "{input} should fail");
        }
    }
}
