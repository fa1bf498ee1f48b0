//! CPU and memory as placement resources: a worker that reports its capacity
//! holds running jobs whose requests (`resources.cpu_millis`,
//! `resources.memory_bytes`) sum to at most that capacity. A worker without a
//! known capacity (an older worker, the simulator's) is limited by its slots
//! only, as before; a job requesting nothing (0) fits anywhere.

use augur_core::{Capacity, RunRecord};

/// CPU and memory a job asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Request {
    /// The request of a job, from its submit-time features.
    pub fn of(features: &RunRecord) -> Request {
        Request {
            cpu_millis: features.requested_cpu_millis,
            memory_bytes: features.requested_memory_bytes,
        }
    }
}

/// Requests of the jobs running on a worker, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Used {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Used {
    pub fn add(&mut self, r: Request) {
        self.cpu_millis = self.cpu_millis.saturating_add(r.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(r.memory_bytes);
    }

    pub fn remove(&mut self, r: Request) {
        self.cpu_millis = self.cpu_millis.saturating_sub(r.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_sub(r.memory_bytes);
    }
}

/// Whether `request` fits in what `capacity` has left after `used`.
pub fn fits_now(capacity: Option<Capacity>, used: Used, request: Request) -> bool {
    let Some(cap) = capacity else { return true };
    (request.cpu_millis == 0
        || used.cpu_millis.saturating_add(request.cpu_millis) <= cap.cpu_millis)
        && (request.memory_bytes == 0
            || used.memory_bytes.saturating_add(request.memory_bytes) <= cap.memory_bytes)
}

/// Whether `request` could ever run on a worker of `capacity` (when idle).
pub fn fits_ever(capacity: Option<Capacity>, request: Request) -> bool {
    fits_now(capacity, Used::default(), request)
}

/// Why no worker could ever hold `request`, if none could: the capacities of
/// the workers otherwise able to run the job (slots and constraints) are
/// given. `None` when one fits, or when no capacity is known at all.
pub fn shortfall<'a>(
    request: Request,
    capacities: impl Iterator<Item = Option<&'a Capacity>>,
) -> Option<String> {
    let mut largest_cpu = 0;
    let mut largest_memory = 0;
    let mut any = false;
    for capacity in capacities {
        if fits_ever(capacity.copied(), request) {
            return None;
        }
        if let Some(c) = capacity {
            any = true;
            largest_cpu = largest_cpu.max(c.cpu_millis);
            largest_memory = largest_memory.max(c.memory_bytes);
        }
    }
    if !any {
        return None;
    }
    let mut missing = Vec::new();
    if request.cpu_millis > largest_cpu {
        missing.push(format!(
            "{}m CPU (largest {largest_cpu}m)",
            request.cpu_millis
        ));
    }
    if request.memory_bytes > largest_memory {
        missing.push(format!(
            "{} bytes of memory (largest {largest_memory})",
            request.memory_bytes
        ));
    }
    if missing.is_empty() {
        // Each resource fits somewhere, but never both on one worker.
        missing.push(format!(
            "{}m CPU and {} bytes of memory on one worker",
            request.cpu_millis, request.memory_bytes
        ));
    }
    Some(format!("no worker has {}", missing.join(" and ")))
}
