//! The manager's memory between two observations, advanced by one pure function
//! (upstream's synchronize, without the effects): which thresholds are met (a met
//! threshold stays met until its minimum reclaim is also available), since when (for
//! soft grace periods), and which pressure conditions hold (each for the transition
//! period after its threshold was last seen met).

use std::collections::BTreeMap;
use std::time::Instant;

use super::signals::Observations;
use super::thresholds::{Threshold, Thresholds};

#[derive(Debug, Default)]
pub struct State {
    first_observed: Vec<(Threshold, Instant)>,
    condition_last_observed: BTreeMap<&'static str, Instant>,
    met: Vec<Threshold>,
    /// The pressure conditions to report.
    pub conditions: Vec<&'static str>,
}

/// The thresholds met by `obs`; with `min_reclaim`, a threshold counts as met until
/// its value plus its minimum reclaim is available (upstream's thresholdsMet).
pub fn thresholds_met(
    thresholds: &[Threshold],
    obs: &Observations,
    min_reclaim: bool,
) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| {
            let Some(o) = obs.get(&t.signal) else {
                return false;
            };
            let mut quantity = t.value.quantity(o.capacity).value;
            if min_reclaim {
                if let Some(m) = &t.min_reclaim {
                    quantity += m.quantity(o.capacity).value;
                }
            }
            quantity > o.available
        })
        .cloned()
        .collect()
}

impl State {
    /// Takes in one observation; returns the thresholds to act on (met for their grace
    /// period), memory first, and updates the conditions.
    pub fn observe(
        &mut self,
        config: &Thresholds,
        obs: &Observations,
        now: Instant,
    ) -> Vec<Threshold> {
        let mut met = thresholds_met(&config.thresholds, obs, false);
        for t in thresholds_met(&self.met, obs, true) {
            if !met.contains(&t) {
                met.push(t);
            }
        }
        self.first_observed = met
            .iter()
            .map(|t| {
                let since = self
                    .first_observed
                    .iter()
                    .find(|(old, _)| old == t)
                    .map_or(now, |(_, at)| *at);
                (t.clone(), since)
            })
            .collect();
        for t in &met {
            self.condition_last_observed
                .insert(t.signal.condition(), now);
        }
        self.conditions = self
            .condition_last_observed
            .iter()
            .filter(|(_, at)| now.duration_since(**at) < config.transition_period)
            .map(|(c, _)| *c)
            .collect();
        let mut act: Vec<Threshold> = self
            .first_observed
            .iter()
            .filter(|(t, at)| now.duration_since(*at) >= t.grace_period)
            .map(|(t, _)| t.clone())
            .collect();
        self.met = act.clone();
        // upstream's byEvictionPriority: memory before every other resource.
        act.sort_by_key(|t| t.signal != super::thresholds::Signal::MemoryAvailable);
        act
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KubeletConfiguration;
    use crate::eviction::signals::Observation;
    use crate::eviction::thresholds::Signal;
    use std::time::Duration;

    fn config(extra: impl FnOnce(&mut KubeletConfiguration)) -> Thresholds {
        let mut c = KubeletConfiguration {
            eviction_hard: [("memory.available".to_string(), "100Mi".to_string())].into(),
            eviction_pressure_transition_period: "30s".into(),
            ..Default::default()
        };
        extra(&mut c);
        Thresholds::from_config(&c).unwrap()
    }

    fn memory(available_mib: i64) -> Observations {
        [(
            Signal::MemoryAvailable,
            Observation {
                available: available_mib << 20,
                capacity: 1 << 34,
            },
        )]
        .into()
    }

    #[test]
    fn pressure_holds_for_the_transition_period_after_the_threshold_clears() {
        let config = config(|_| {});
        let mut s = State::default();
        let t0 = Instant::now();
        assert!(s.observe(&config, &memory(500), t0).is_empty());
        assert!(s.conditions.is_empty());
        let act = s.observe(&config, &memory(90), t0 + Duration::from_secs(10));
        assert_eq!(act.len(), 1);
        assert_eq!(s.conditions, ["MemoryPressure"]);
        // Cleared, but within 30 s of the last sighting: still under pressure, no action.
        assert!(s
            .observe(&config, &memory(500), t0 + Duration::from_secs(20))
            .is_empty());
        assert_eq!(s.conditions, ["MemoryPressure"]);
        assert!(s
            .observe(&config, &memory(500), t0 + Duration::from_secs(39))
            .is_empty());
        assert_eq!(s.conditions, ["MemoryPressure"]);
        s.observe(&config, &memory(500), t0 + Duration::from_secs(40));
        assert!(s.conditions.is_empty());
    }

    #[test]
    fn a_met_threshold_stays_met_until_the_minimum_reclaim_is_available() {
        let config = config(|c| {
            c.eviction_minimum_reclaim =
                [("memory.available".to_string(), "200Mi".to_string())].into();
        });
        let mut s = State::default();
        let t0 = Instant::now();
        assert_eq!(s.observe(&config, &memory(90), t0).len(), 1);
        // Above 100Mi but below 100Mi + 200Mi: still reclaiming.
        assert_eq!(
            s.observe(&config, &memory(250), t0 + Duration::from_secs(10))
                .len(),
            1
        );
        assert!(s
            .observe(&config, &memory(350), t0 + Duration::from_secs(20))
            .is_empty());
    }

    #[test]
    fn a_soft_threshold_acts_after_its_grace_period_but_sets_the_condition_at_once() {
        let config = config(|c| {
            c.eviction_hard.clear();
            c.eviction_soft = [("memory.available".to_string(), "1Gi".to_string())].into();
            c.eviction_soft_grace_period =
                [("memory.available".to_string(), "1m".to_string())].into();
        });
        let mut s = State::default();
        let t0 = Instant::now();
        assert!(s.observe(&config, &memory(512), t0).is_empty());
        assert_eq!(s.conditions, ["MemoryPressure"]);
        assert!(s
            .observe(&config, &memory(512), t0 + Duration::from_secs(59))
            .is_empty());
        let act = s.observe(&config, &memory(512), t0 + Duration::from_secs(60));
        assert_eq!(act.len(), 1);
        assert!(!act[0].is_hard());
    }

    #[test]
    fn memory_is_reclaimed_before_disk() {
        let config = config(|c| {
            c.eviction_hard
                .insert("imagefs.available".into(), "10%".into());
        });
        let mut obs = memory(10);
        obs.insert(
            Signal::ImageFsAvailable,
            Observation {
                available: 1,
                capacity: 100,
            },
        );
        let act = State::default().observe(&config, &obs, Instant::now());
        assert_eq!(
            act.iter().map(|t| t.signal).collect::<Vec<_>>(),
            [Signal::MemoryAvailable, Signal::ImageFsAvailable]
        );
    }
}
