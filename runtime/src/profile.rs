//! Where the GPU's time goes: every kernel launch of a region counted by name and, on request,
//! timed on the device with timestamp queries, through cubecl's launch observer.
//!
//! Our WGSL kernels all reach cubecl as one kernel type, so [`crate::kernels`] names each
//! launch here ([`named`]) just before issuing it; the observer runs synchronously on the
//! issuing thread and reads that name. Burn's own kernels are named by their Rust type.
//!
//! cubecl's observer sees every launch of the process; a profile keeps those issued by the
//! thread that started it, so work on other threads (another test, a server's other request)
//! does not leak into it.
//!
//! Timing uses cubecl's deferred measurements: nothing waits between kernels, so they run back
//! to back as in a real step, and the timestamps are read once the region is over. A backend
//! out of timestamp queries falls back to host time around a blocking submit; such launches are
//! counted in [`Profile::host_timed`] so that a report can say its times are not device times.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cubecl_runtime::logging::{LaunchObservation, LaunchObserver, ProfileDuration, TimingMethod, TimingRequest};

thread_local! {
    static CURRENT: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Runs `launch` with its kernel attributed to `name` in an active profile.
pub(crate) fn named<R>(name: &'static str, launch: impl FnOnce() -> R) -> R {
    let previous = CURRENT.replace(Some(name));
    let r = launch();
    CURRENT.set(previous);
    r
}

/// The short name of a Rust kernel type: its last path segment with generics dropped.
fn short(kernel: &'static str) -> &'static str {
    let base = kernel.split('<').next().unwrap_or(kernel);
    base.rsplit("::").next().unwrap_or(base)
}

struct Observer {
    /// The thread whose launches are kept.
    thread: std::thread::ThreadId,
    timed: bool,
    launches: Mutex<Vec<&'static str>>,
    profiles: Mutex<Vec<(&'static str, ProfileDuration)>>,
}

impl LaunchObserver for Observer {
    fn launched(&self, kernel: &'static str) {
        if std::thread::current().id() != self.thread {
            return;
        }
        let name = CURRENT.get().unwrap_or_else(|| short(kernel));
        self.launches.lock().expect("profile lock").push(name);
    }

    fn timing(&self) -> TimingRequest {
        if self.timed { TimingRequest::Deferred } else { TimingRequest::None }
    }

    fn profiled(&self, kernel: &'static str, profile: ProfileDuration) {
        if std::thread::current().id() != self.thread {
            return;
        }
        let name = CURRENT.get().unwrap_or_else(|| short(kernel));
        self.profiles.lock().expect("profile lock").push((name, profile));
    }
}

/// One kernel's share of a profiled region.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    pub name: &'static str,
    pub launches: usize,
    /// Device seconds summed over its launches (`None` when not timed).
    pub seconds: Option<f64>,
}

/// What a profiled region launched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// By kernel, most device time (or most launches) first.
    pub kernels: Vec<KernelTime>,
    /// Launches whose time is host time around a blocking submit, not device time.
    pub host_timed: usize,
}

impl Profile {
    pub fn launches(&self) -> usize {
        self.kernels.iter().map(|k| k.launches).sum()
    }

    /// Summed device time of every timed launch.
    pub fn seconds(&self) -> f64 {
        self.kernels.iter().filter_map(|k| k.seconds).sum()
    }
}

/// Observes the kernel launches of the calling thread until [`Profiler::finish`].
pub struct Profiler {
    observer: Arc<Observer>,
    guard: LaunchObservation,
}

impl Profiler {
    /// Starts counting launches; with `timed`, also timing each on the device.
    pub fn start(timed: bool) -> Self {
        let observer = Arc::new(Observer {
            thread: std::thread::current().id(),
            timed,
            launches: Mutex::default(),
            profiles: Mutex::default(),
        });
        let guard = LaunchObservation::new(observer.clone());
        Self { observer, guard }
    }

    /// Stops observing and resolves the timings (waits for the device to reach them).
    pub async fn finish(self) -> Profile {
        drop(self.guard);
        let launches = std::mem::take(&mut *self.observer.launches.lock().expect("profile lock"));
        let profiles = std::mem::take(&mut *self.observer.profiles.lock().expect("profile lock"));
        let mut by_name: BTreeMap<&'static str, (usize, Option<f64>)> = BTreeMap::new();
        for name in launches {
            by_name.entry(name).or_default().0 += 1;
        }
        let mut host_timed = 0;
        for (name, profile) in profiles {
            if profile.timing_method() == TimingMethod::System {
                host_timed += 1;
            }
            if let Some(ticks) = profile.resolve().await {
                let entry = by_name.entry(name).or_default();
                entry.1 = Some(entry.1.unwrap_or(0.0) + ticks.duration().as_secs_f64());
            }
        }
        let mut kernels: Vec<KernelTime> = by_name
            .into_iter()
            .map(|(name, (launches, seconds))| KernelTime { name, launches, seconds })
            .collect();
        kernels.sort_by(|a, b| {
            b.seconds.unwrap_or(0.0).total_cmp(&a.seconds.unwrap_or(0.0)).then(b.launches.cmp(&a.launches))
        });
        Profile { kernels, host_timed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::stream_read::stream_read;
    use crate::kernels::testing::{gpu, random};

    /// Our kernels are counted under their own names (not the one type cubecl sees), each
    /// launch of the profiling thread once, and a timed profile gives each of them a duration.
    #[test]
    fn counts_and_times_named_launches() {
        let Some(device) = gpu() else { return };
        let data = random(1, [4 * 4096], 1.0, &device);
        // Compile outside the profile.
        let _ = stream_read(&data, 256).unwrap().into_data();
        for timed in [false, true] {
            let profiler = Profiler::start(timed);
            let a = stream_read(&data, 256).unwrap();
            // A launch from another thread is not this profile's.
            std::thread::scope(|s| s.spawn(|| drop(stream_read(&data, 256).unwrap().into_data())).join().unwrap());
            let b = stream_read(&data, 512).unwrap();
            let _ = (a.sum() + b.sum()).into_data();
            let profile = pollster::block_on(profiler.finish());
            let reads = profile.kernels.iter().find(|k| k.name == "stream_read").expect("stream_read was profiled");
            assert_eq!(reads.launches, 2, "{profile:?}");
            assert!(profile.launches() > 2, "the sums launch Burn kernels too: {profile:?}");
            assert_eq!(reads.seconds.is_some(), timed, "{profile:?}");
            if timed {
                assert!(profile.seconds() > 0.0, "{profile:?}");
            }
        }
    }
}
