//! Where a job goes: a pure function from the workers' state to a choice.
//!
//! Objective (least-loaded): among the workers that are able to take the job —
//! connected, not draining, enough free slots, every constraint label matched —
//! pick the one with the lowest fraction of its slots in use; ties go to the
//! lexicographically smallest id so placement is deterministic. Learned,
//! runtime-aware placement replaces this in the placement issue.

use std::collections::BTreeMap;

use augur_core::WorkerId;

/// What placement needs to know about one worker.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub id: &'a WorkerId,
    /// Connected and not draining.
    pub available: bool,
    pub slots: u32,
    pub used: u32,
    pub labels: &'a BTreeMap<String, String>,
}

impl Candidate<'_> {
    /// Whether this worker can take a job of `slots` with `constraints`.
    pub fn fits(&self, slots: u32, constraints: &BTreeMap<String, String>) -> bool {
        self.available
            && self.slots.saturating_sub(self.used) >= slots
            && constraints
                .iter()
                .all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Fraction of slots in use: the least-loaded score (lower wins).
    pub fn load(&self) -> f64 {
        self.used as f64 / self.slots.max(1) as f64
    }
}

/// The least-loaded worker that can take a job of `slots` with `constraints`.
pub fn least_loaded<'a>(
    candidates: impl IntoIterator<Item = Candidate<'a>>,
    slots: u32,
    constraints: &BTreeMap<String, String>,
) -> Option<&'a WorkerId> {
    candidates
        .into_iter()
        .filter(|c| c.fits(slots, constraints))
        .min_by(|a, b| a.load().total_cmp(&b.load()).then_with(|| a.id.cmp(b.id)))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn prefers_the_emptier_worker_and_respects_constraints() {
        let (a, b) = (WorkerId::new("a").unwrap(), WorkerId::new("b").unwrap());
        let gpu: BTreeMap<String, String> = [("gpu".to_string(), "yes".to_string())].into();
        let none = BTreeMap::new();
        let workers = |used_a, used_b| {
            vec![
                Candidate {
                    id: &a,
                    available: true,
                    slots: 4,
                    used: used_a,
                    labels: &none,
                },
                Candidate {
                    id: &b,
                    available: true,
                    slots: 4,
                    used: used_b,
                    labels: &gpu,
                },
            ]
        };
        assert_eq!(least_loaded(workers(3, 1), 1, &none), Some(&b));
        assert_eq!(least_loaded(workers(1, 3), 1, &none), Some(&a));
        assert_eq!(least_loaded(workers(0, 3), 1, &gpu), Some(&b));
        assert_eq!(least_loaded(workers(0, 4), 1, &gpu), None);
        assert_eq!(least_loaded(workers(0, 0), 5, &none), None);
    }

    proptest! {
        #[test]
        fn choice_is_feasible_and_least_loaded(
            workers in proptest::collection::vec((any::<bool>(), 1u32..16, 0u32..16), 0..12),
            slots in 1u32..6,
        ) {
            let ids: Vec<WorkerId> = (0..workers.len()).map(|i| WorkerId::new(format!("w{i:02}")).unwrap()).collect();
            let labels = BTreeMap::new();
            let candidates: Vec<Candidate> = workers
                .iter()
                .zip(&ids)
                .map(|(&(available, cap, used), id)| Candidate { id, available, slots: cap, used: used.min(cap), labels: &labels })
                .collect();
            let chosen = least_loaded(candidates.clone(), slots, &labels);
            let feasible: Vec<&Candidate> = candidates.iter().filter(|c| c.fits(slots, &labels)).collect();
            match chosen {
                None => prop_assert!(feasible.is_empty()),
                Some(id) => {
                    let c = candidates.iter().find(|c| c.id == id).unwrap();
                    prop_assert!(c.fits(slots, &labels));
                    prop_assert!(feasible.iter().all(|f| c.load() <= f.load()));
                }
            }
        }
    }
}
