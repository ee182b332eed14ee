//! Eviction signals and thresholds as the KubeletConfiguration states them
//! (evictionHard, evictionSoft, evictionSoftGracePeriod, evictionMinimumReclaim), parsed
//! and checked as upstream's ParseThresholdConfig does, and the quantities they stand for
//! against a signal's capacity (GetThresholdQuantity), printed as apimachinery prints
//! quantities.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_pod_manager::spec::quantity::Quantity;

use crate::config::{parse_duration, KubeletConfiguration};

/// The signals Gantry observes (upstream's pkg/kubelet/eviction/api Signal values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

impl Signal {
    pub const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    fn parse(name: &str) -> Result<Signal, String> {
        if let Some(s) = Signal::ALL.into_iter().find(|s| s.name() == name) {
            return Ok(s);
        }
        Err(match name {
            // Valid upstream, but Gantry observes neither: say so rather than ignore.
            "allocatableMemory.available" | "containerfs.available" | "containerfs.inodesFree" => {
                format!("eviction signal {name} is not supported by Gantry")
            }
            _ => format!("unsupported eviction signal {name}"),
        })
    }

    /// The resource a met threshold of this signal reclaims (upstream's signalToResource).
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    /// The node condition a met threshold of this signal sets (signalToNodeCondition).
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::PidAvailable => "PIDPressure",
            _ => "DiskPressure",
        }
    }

    /// Bytes print with binary suffixes (BinarySI), counts without (DecimalSI).
    pub fn in_bytes(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable | Signal::NodeFsAvailable | Signal::ImageFsAvailable
        )
    }
}

/// upstream's defaults for evictionHard (Linux). A configuration that sets the map
/// replaces them all.
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    [
        ("memory.available", "100Mi"),
        ("nodefs.available", "10%"),
        ("nodefs.inodesFree", "5%"),
        ("imagefs.available", "15%"),
        ("imagefs.inodesFree", "5%"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A quantity as the user wrote it: its value and how apimachinery prints it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Amount {
    pub value: i64,
    /// Printed with binary suffixes (Ki, Mi, ...) rather than decimal ones (k, M, ...).
    pub binary: bool,
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_quantity(self.value, self.binary))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThresholdValue {
    Quantity(Amount),
    /// A fraction of the signal's capacity (0.1 for "10%").
    Percentage(f32),
}

impl ThresholdValue {
    /// What the value stands for against `capacity` (upstream's GetThresholdQuantity:
    /// a percentage is taken of the capacity and printed in binary units).
    pub fn quantity(&self, capacity: i64) -> Amount {
        match *self {
            ThresholdValue::Quantity(a) => a,
            ThresholdValue::Percentage(p) => Amount {
                value: (capacity as f64 * p as f64) as i64,
                binary: true,
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    /// Met while the observed value is below this.
    pub value: ThresholdValue,
    /// Zero for a hard threshold; how long a soft one must be met before it evicts.
    pub grace_period: Duration,
    /// Once met, the threshold counts as met until this much more than its value is
    /// available again.
    pub min_reclaim: Option<ThresholdValue>,
}

impl Threshold {
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }
}

/// The node's eviction settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub thresholds: Vec<Threshold>,
    /// evictionPressureTransitionPeriod: how long a pressure condition stays after its
    /// threshold stops being met.
    pub transition_period: Duration,
    /// evictionMaxPodGracePeriod, the grace of kills for soft thresholds.
    pub max_pod_grace_seconds: i64,
}

impl Thresholds {
    /// Parses the configuration's eviction fields; the error names the field and says
    /// what is wrong in upstream's words.
    pub fn from_config(c: &KubeletConfiguration) -> Result<Thresholds, String> {
        let mut thresholds = statements("evictionHard", &c.eviction_hard)?;
        let mut soft = statements("evictionSoft", &c.eviction_soft)?;
        let mut grace = BTreeMap::new();
        for (name, v) in &c.eviction_soft_grace_period {
            let signal =
                Signal::parse(name).map_err(|e| format!("evictionSoftGracePeriod: {e}"))?;
            let d = parse_duration(v).ok_or_else(|| {
                format!(
                    "evictionSoftGracePeriod: {name} {v:?} is not a duration such as 30s or 1m30s"
                )
            })?;
            grace.insert(signal, d);
        }
        for t in &mut soft {
            t.grace_period = *grace.get(&t.signal).ok_or_else(|| {
                format!(
                    "evictionSoft: grace period must be specified for the soft eviction threshold {}",
                    t.signal.name()
                )
            })?;
            if t.grace_period.is_zero() {
                // A zero grace would make it a hard threshold in all but name.
                return Err(format!(
                    "evictionSoftGracePeriod: {} must be longer than 0s",
                    t.signal.name()
                ));
            }
        }
        thresholds.extend(soft);
        for (name, v) in &c.eviction_minimum_reclaim {
            let field = "evictionMinimumReclaim";
            let signal = Signal::parse(name).map_err(|e| format!("{field}: {e}"))?;
            let value = if v.ends_with('%') {
                let p = percentage(v).map_err(|e| format!("{field}: {name} {v:?}: {e}"))?;
                if p <= 0.0 {
                    return Err(format!(
                        "{field}: eviction percentage minimum reclaim {name} must be positive: {v}"
                    ));
                }
                ThresholdValue::Percentage(p)
            } else {
                let a = amount(v).map_err(|e| format!("{field}: {name} {v:?}: {e}"))?;
                if a.value < 0 {
                    return Err(format!(
                        "{field}: negative eviction minimum reclaim specified for {name}"
                    ));
                }
                ThresholdValue::Quantity(a)
            };
            for t in thresholds.iter_mut().filter(|t| t.signal == signal) {
                t.min_reclaim = Some(value);
            }
        }
        let transition_period =
            parse_duration(&c.eviction_pressure_transition_period).ok_or_else(|| {
                format!(
                    "evictionPressureTransitionPeriod {:?} is not a duration such as 5m",
                    c.eviction_pressure_transition_period
                )
            })?;
        Ok(Thresholds {
            thresholds,
            transition_period,
            max_pod_grace_seconds: i64::from(c.eviction_max_pod_grace_period.max(0)),
        })
    }
}

/// One map of statements ("memory.available": "100Mi"), as parseThresholdStatement:
/// "0%" and "100%" switch the signal off; other percentages must lie in [0%, 100%];
/// quantities must be positive.
fn statements(field: &str, map: &BTreeMap<String, String>) -> Result<Vec<Threshold>, String> {
    let mut out = Vec::new();
    for (name, v) in map {
        let signal = Signal::parse(name).map_err(|e| format!("{field}: {e}"))?;
        let value = if v.ends_with('%') {
            if v == "0%" || v == "100%" {
                continue;
            }
            let p = percentage(v).map_err(|e| format!("{field}: {name} {v:?}: {e}"))?;
            if p < 0.0 {
                return Err(format!(
                    "{field}: eviction percentage threshold {name} must be >= 0%: {v}"
                ));
            }
            if p > 1.0 {
                return Err(format!(
                    "{field}: eviction percentage threshold {name} must be <= 100%: {v}"
                ));
            }
            ThresholdValue::Percentage(p)
        } else {
            let a = amount(v).map_err(|e| format!("{field}: {name} {v:?}: {e}"))?;
            if a.value <= 0 {
                return Err(format!(
                    "{field}: eviction threshold {name} must be positive: {a}"
                ));
            }
            ThresholdValue::Quantity(a)
        };
        out.push(Threshold {
            signal,
            value,
            grace_period: Duration::ZERO,
            min_reclaim: None,
        });
    }
    Ok(out)
}

fn percentage(v: &str) -> Result<f32, String> {
    v.trim_end_matches('%')
        .parse::<f32>()
        .map(|p| p / 100.0)
        .map_err(|_| "not a percentage such as 10%".to_string())
}

fn amount(v: &str) -> Result<Amount, String> {
    let q = Quantity::parse(v).map_err(|e| format!("not a quantity such as 100Mi: {e}"))?;
    Ok(Amount {
        value: q.value(),
        binary: v.ends_with('i'),
    })
}

/// A value as apimachinery's Quantity.String() prints it: in binary units the largest
/// power of 1024 that divides it exactly ("1536Mi", "92Mi"), in decimal units the
/// largest power of 1000 ("5k"); binary values under 1024 print as decimal ones.
pub fn format_quantity(value: i64, binary: bool) -> String {
    let (base, suffixes): (i64, [&str; 7]) = if binary && value.unsigned_abs() >= 1024 {
        (1024, ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
    } else {
        (1000, ["", "k", "M", "G", "T", "P", "E"])
    };
    let mut n = value;
    let mut i = 0;
    while n != 0 && n % base == 0 && i < suffixes.len() - 1 {
        n /= base;
        i += 1;
    }
    format!("{n}{}", suffixes[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hard: &[(&str, &str)]) -> KubeletConfiguration {
        KubeletConfiguration {
            eviction_hard: hard
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_are_upstreams_hard_thresholds() {
        let t = Thresholds::from_config(&KubeletConfiguration::default()).unwrap();
        assert_eq!(t.transition_period, Duration::from_secs(300));
        assert_eq!(t.thresholds.len(), 5);
        let of = |s: Signal| t.thresholds.iter().find(|t| t.signal == s).unwrap().value;
        assert_eq!(
            of(Signal::MemoryAvailable),
            ThresholdValue::Quantity(Amount {
                value: 100 << 20,
                binary: true
            })
        );
        assert_eq!(
            of(Signal::NodeFsAvailable),
            ThresholdValue::Percentage(0.10)
        );
        assert_eq!(
            of(Signal::ImageFsAvailable),
            ThresholdValue::Percentage(0.15)
        );
        assert_eq!(
            of(Signal::NodeFsInodesFree),
            ThresholdValue::Percentage(0.05)
        );
        assert!(t.thresholds.iter().all(Threshold::is_hard));
    }

    #[test]
    fn a_configured_map_replaces_the_defaults() {
        let t = Thresholds::from_config(&config(&[("memory.available", "1Gi")])).unwrap();
        assert_eq!(t.thresholds.len(), 1);
        assert_eq!(t.thresholds[0].value.quantity(0).to_string(), "1Gi");
        // "0%" and "100%" switch a signal off, as upstream.
        let t = Thresholds::from_config(&config(&[("nodefs.available", "0%")])).unwrap();
        assert!(t.thresholds.is_empty());
    }

    #[test]
    fn percentages_are_taken_of_the_capacity() {
        let t = Thresholds::from_config(&config(&[("nodefs.available", "50%")])).unwrap();
        let q = t.thresholds[0].value.quantity(10 << 30);
        assert_eq!(q.value, 5 << 30);
        assert_eq!(q.to_string(), "5Gi");
        // upstream keeps the fraction as a float32: 10% of 10Gi is 16 bytes over 1Gi.
        let t = Thresholds::from_config(&config(&[("nodefs.available", "10%")])).unwrap();
        let q = t.thresholds[0].value.quantity(10 << 30);
        assert_eq!(q.value, 1073741840);
        assert_eq!(q.to_string(), "1073741840");
    }

    #[test]
    fn bad_statements_name_the_field_and_the_problem() {
        for (hard, expected) in [
            (
                ("memory.free", "1Gi"),
                "evictionHard: unsupported eviction signal memory.free",
            ),
            (("memory.available", "-1Gi"), "must be positive"),
            (("memory.available", "0"), "must be positive"),
            (("nodefs.available", "120%"), "must be <= 100%"),
            (("nodefs.available", "-5%"), "must be >= 0%"),
            (("nodefs.available", "ten%"), "not a percentage"),
            (("memory.available", "lots"), "not a quantity"),
            (("containerfs.available", "10%"), "not supported by Gantry"),
        ] {
            let e = Thresholds::from_config(&config(&[hard])).unwrap_err();
            assert!(e.contains(expected), "{hard:?}: {e}");
        }
        let e = KubeletConfiguration {
            eviction_soft: [("memory.available".to_string(), "1Gi".to_string())].into(),
            ..Default::default()
        };
        let e = Thresholds::from_config(&e).unwrap_err();
        assert!(
            e.contains(
                "grace period must be specified for the soft eviction threshold memory.available"
            ),
            "{e}"
        );
        let e = KubeletConfiguration {
            eviction_minimum_reclaim: [("memory.available".to_string(), "-1Mi".to_string())].into(),
            ..Default::default()
        };
        let e = Thresholds::from_config(&e).unwrap_err();
        assert!(
            e.contains("negative eviction minimum reclaim specified for memory.available"),
            "{e}"
        );
        let e = KubeletConfiguration {
            eviction_pressure_transition_period: "soon".into(),
            ..Default::default()
        };
        let problems = e.validate().unwrap_err().problems;
        assert_eq!(
            problems,
            vec![Thresholds::from_config(&e).unwrap_err()],
            "named once, by the thresholds' own check"
        );
        assert!(
            problems[0].contains("evictionPressureTransitionPeriod"),
            "{problems:?}"
        );
    }

    #[test]
    fn soft_thresholds_take_their_grace_period_and_minimum_reclaim() {
        let c = KubeletConfiguration {
            eviction_hard: BTreeMap::new(),
            eviction_soft: [("memory.available".to_string(), "500Mi".to_string())].into(),
            eviction_soft_grace_period: [("memory.available".to_string(), "1m30s".to_string())]
                .into(),
            eviction_minimum_reclaim: [("memory.available".to_string(), "5%".to_string())].into(),
            ..Default::default()
        };
        let t = Thresholds::from_config(&c).unwrap();
        assert_eq!(t.thresholds.len(), 1);
        assert_eq!(t.thresholds[0].grace_period, Duration::from_secs(90));
        assert!(!t.thresholds[0].is_hard());
        assert_eq!(
            t.thresholds[0].min_reclaim,
            Some(ThresholdValue::Percentage(0.05))
        );
    }

    #[test]
    fn quantities_print_as_apimachinery_prints_them() {
        assert_eq!(format_quantity(100 << 20, true), "100Mi");
        assert_eq!(format_quantity(1536 << 20, true), "1536Mi");
        assert_eq!(format_quantity(1 << 30, true), "1Gi");
        assert_eq!(format_quantity(94208 * 1024 + 4096, true), "94212Ki");
        assert_eq!(format_quantity(0, true), "0");
        assert_eq!(format_quantity(1000, true), "1k");
        assert_eq!(format_quantity(1025, true), "1025");
        assert_eq!(format_quantity(5000, false), "5k");
        assert_eq!(format_quantity(123456, false), "123456");
        assert_eq!(format_quantity(-2048, true), "-2Ki");
    }
}
