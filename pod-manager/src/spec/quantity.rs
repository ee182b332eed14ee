//! Kubernetes resource quantities ("100m", "0.5", "128Mi", "1G", "1e3") as the pod specs
//! resources need them: the volumes crate's parser (apimachinery's resource.Quantity
//! grammar, exact nano-units) seen through i64 Value() and MilliValue() with upstream's
//! rounding (up, never losing a request) and saturation, plus sums and comparisons.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use gantry_volumes::quantity::Quantity as Exact;
pub use gantry_volumes::QuantityError;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(Exact);

impl Default for Quantity {
    fn default() -> Self {
        Quantity::ZERO
    }
}

impl Quantity {
    pub const ZERO: Quantity = Quantity(Exact::ZERO);

    pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
        Exact::parse(input).map(Quantity)
    }

    /// The quantity in whole units, rounded up (upstream's Value()).
    pub fn value(&self) -> i64 {
        saturate(self.0.value())
    }

    /// The quantity in thousandths, rounded up (upstream's MilliValue()).
    pub fn milli_value(&self) -> i64 {
        saturate(self.0.milli_value())
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity(self.0.saturating_add(other.0))
    }

    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        self.0.cmp(&other.0)
    }

    /// A quantity of whole units (for node capacities given as plain numbers).
    pub fn from_units(units: i64) -> Quantity {
        Quantity(Exact::from_units(units))
    }

    /// A quantity of thousandths (millicores).
    pub fn from_millis(millis: i64) -> Quantity {
        Quantity(Exact::from_millis(millis))
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
