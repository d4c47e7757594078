//! Per-instance caps: what one Docker client (one CI job) may make this podbridge hold, in the
//! cluster (containers, ConfigMap bytes) and in memory (open streams, buffered copies). Every
//! refusal names the limit and its config key, so a job's log says what to raise.
//!
//! Reservations are RAII guards: a request that is cancelled at an `.await` releases what it
//! reserved when its future is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Result, Runtime, RuntimeError};

/// The configured caps (config keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Containers (created or running) this instance keeps.
    pub max_containers: usize,
    /// Bytes in this instance's ConfigMaps (container specs, pre-start archives, networks,
    /// volumes).
    pub max_stored_bytes: u64,
    /// Pre-start archives (`docker cp` into a created container) per container.
    pub max_archives_per_container: usize,
    /// Concurrent streaming requests (logs follow, attach, exec start, events, stats stream).
    pub max_streams: usize,
    /// Largest JSON request body.
    pub max_json_body_bytes: usize,
    /// Largest tar `docker cp` sends or receives.
    pub max_archive_bytes: usize,
    /// `docker cp` transfers (either direction) buffered at once.
    pub max_concurrent_copies: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_containers: 200,
            max_stored_bytes: 32 * 1024 * 1024,
            max_archives_per_container: 16,
            max_streams: 64,
            max_json_body_bytes: 2 * 1024 * 1024,
            max_archive_bytes: 512 * 1024 * 1024,
            max_concurrent_copies: 2,
        }
    }
}

/// Exec instances kept in memory; finished ones are forgotten first, oldest first.
pub const MAX_EXEC_RECORDS: usize = 1024;
/// Exits of removed containers kept for `wait?condition=removed`.
pub const MAX_REMOVED_EXITS: usize = 1024;
/// Image references kept for `images`/inspect (pulls of ever new names must not grow memory).
pub const MAX_IMAGE_RECORDS: usize = 1024;
/// Output of an internal exec (signal, stat, top, stats) kept per stream; the rest is dropped.
pub const MAX_CAPTURED_OUTPUT: usize = 1024 * 1024;
/// Longest log line passed on in one piece; longer lines are split, as Docker's json-file
/// driver splits at 16 KiB.
pub const MAX_LOG_LINE: usize = 16 * 1024;
/// What a ConfigMap costs in etcd besides its data (metadata, managed fields), estimated.
const CONFIG_MAP_OVERHEAD: u64 = 1024;

/// The caps with the semaphores and reservations that enforce them.
pub struct Gates {
    pub limits: Limits,
    streams: Arc<Semaphore>,
    copies: Arc<Semaphore>,
}

impl Gates {
    pub fn new(limits: Limits) -> Self {
        Gates {
            limits,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            copies: Arc::new(Semaphore::new(limits.max_concurrent_copies)),
        }
    }
}

/// Writes in flight that the watch has not shown yet.
#[derive(Default)]
pub(crate) struct Pending {
    /// Docker names of containers being created.
    names: HashSet<String>,
    /// Bytes of ConfigMaps being written, by reservation.
    bytes: HashMap<u64, u64>,
    next: u64,
}

/// A held stream slot; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamPermit(#[allow(dead_code)] OwnedSemaphorePermit);

/// A held `docker cp` slot.
#[derive(Debug)]
pub struct CopyPermit(#[allow(dead_code)] OwnedSemaphorePermit);

/// Reserved ConfigMap bytes; released on drop (by then the watch shows the write, or it failed).
pub struct BytesReservation<'a> {
    runtime: &'a Runtime,
    key: u64,
}

impl Drop for BytesReservation<'_> {
    fn drop(&mut self) {
        self.runtime.pending.lock().bytes.remove(&self.key);
    }
}

/// A Docker name reserved for a create in flight, with the bytes of its spec.
pub struct CreateReservation<'a> {
    runtime: &'a Runtime,
    name: String,
    _bytes: BytesReservation<'a>,
}

impl Drop for CreateReservation<'_> {
    fn drop(&mut self) {
        self.runtime.pending.lock().names.remove(&self.name);
    }
}

/// What etcd holds for `config_map`, estimated from its data, annotations and labels.
pub fn stored_size(config_map: &ConfigMap) -> u64 {
    let pairs = |map: Option<&std::collections::BTreeMap<String, String>>| -> u64 {
        map.map_or(0, |m| {
            m.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
        })
    };
    let binary: u64 = config_map.binary_data.as_ref().map_or(0, |m| {
        m.iter().map(|(k, v)| (k.len() + v.0.len()) as u64).sum()
    });
    CONFIG_MAP_OVERHEAD
        + pairs(config_map.data.as_ref())
        + binary
        + pairs(config_map.metadata.annotations.as_ref())
        + pairs(config_map.metadata.labels.as_ref())
}

impl Runtime {
    /// Replaces the caps; call before serving (permits already held keep their old gates).
    pub fn set_limits(&self, limits: Limits) {
        self.gates.store(Arc::new(Gates::new(limits)));
    }

    pub fn limits(&self) -> Limits {
        self.gates.load().limits
    }

    /// A slot for one streaming request, or 429 naming `max_streams`.
    pub fn stream_permit(&self) -> Result<StreamPermit> {
        let gates = self.gates.load();
        gates
            .streams
            .clone()
            .try_acquire_owned()
            .map(StreamPermit)
            .map_err(|_| RuntimeError::Busy {
                message: format!(
                    "too many streaming requests: this podbridge serves at most {} logs/attach/exec/events/stats streams at once (config max_streams); close some and retry",
                    gates.limits.max_streams
                ),
            })
    }

    /// A slot for one `docker cp` transfer, or 429 naming `max_concurrent_copies`.
    pub fn copy_permit(&self) -> Result<CopyPermit> {
        let gates = self.gates.load();
        gates
            .copies
            .clone()
            .try_acquire_owned()
            .map(CopyPermit)
            .map_err(|_| RuntimeError::Busy {
                message: format!(
                    "too many copies: this podbridge buffers at most {} docker cp transfers at once (config max_concurrent_copies); retry when one has finished",
                    gates.limits.max_concurrent_copies
                ),
            })
    }

    /// Bytes in this instance's ConfigMaps as the watch shows them, plus writes in flight.
    pub fn stored_bytes(&self) -> u64 {
        let watched: u64 = self
            .config_maps
            .state()
            .iter()
            .map(|cm| stored_size(cm))
            .sum();
        watched + self.pending.lock().bytes.values().sum::<u64>()
    }

    /// Reserves `bytes` more of ConfigMap storage, replacing `replaced` bytes (an update of an
    /// existing object), or refuses naming `max_stored_bytes`.
    pub fn reserve_bytes(&self, bytes: u64, replaced: u64) -> Result<BytesReservation<'_>> {
        let limit = self.limits().max_stored_bytes;
        let watched: u64 = self
            .config_maps
            .state()
            .iter()
            .map(|cm| stored_size(cm))
            .sum();
        let mut pending = self.pending.lock();
        let in_flight: u64 = pending.bytes.values().sum();
        let total = (watched + in_flight)
            .saturating_sub(replaced)
            .saturating_add(bytes);
        if bytes > replaced && total > limit {
            return Err(RuntimeError::LimitReached {
                message: format!(
                    "storage limit reached: this podbridge keeps at most {limit} bytes in ConfigMaps (config max_stored_bytes); {} are in use and this write needs {bytes}. Remove containers, networks or volumes, or copy files after start",
                    watched + in_flight
                ),
            });
        }
        let key = pending.next;
        pending.next += 1;
        pending.bytes.insert(key, bytes.saturating_sub(replaced));
        Ok(BytesReservation { runtime: self, key })
    }

    /// Reserves `name` and a container slot for a create, or refuses: the name is taken (409),
    /// or `max_containers` / `max_stored_bytes` would be exceeded.
    pub fn reserve_create(&self, name: &str, spec_bytes: u64) -> Result<CreateReservation<'_>> {
        let bytes = self.reserve_bytes(spec_bytes, 0)?;
        let containers = self.containers();
        let mut pending = self.pending.lock();
        if let Some(existing) = containers.iter().find(|c| c.name == name) {
            return Err(RuntimeError::NameInUse {
                name: name.into(),
                id: existing.id.clone(),
            });
        }
        if pending.names.contains(name) {
            return Err(RuntimeError::NameInUse {
                name: name.into(),
                id: "(being created)".into(),
            });
        }
        self.container_slot_free(kept_and_pending(&containers, &pending.names))?;
        pending.names.insert(name.to_string());
        Ok(CreateReservation {
            runtime: self,
            name: name.to_string(),
            _bytes: bytes,
        })
    }

    /// The instance caps checked before a create does any cluster I/O (ownership lookups,
    /// volumes): at least `spec_bytes` must fit and a container slot be free. The create's own
    /// reservation (`reserve_create`) decides for good.
    pub fn check_create_capacity(&self, spec_bytes: u64) -> Result<()> {
        drop(self.reserve_bytes(spec_bytes, 0)?);
        let containers = self.containers();
        let count = kept_and_pending(&containers, &self.pending.lock().names);
        self.container_slot_free(count)
    }

    /// `max_containers` against the containers kept and being created.
    fn container_slot_free(&self, count: usize) -> Result<()> {
        let limit = self.limits().max_containers;
        if count >= limit {
            return Err(RuntimeError::LimitReached {
                message: format!(
                    "container limit reached: this podbridge keeps at most {limit} containers (config max_containers); remove some (docker rm, docker container prune) before creating more"
                ),
            });
        }
        Ok(())
    }

    /// Names of creates in flight (tests).
    #[cfg(test)]
    pub(crate) fn pending_names(&self) -> usize {
        self.pending.lock().names.len()
    }
}

/// Containers kept plus creates in flight, each counted once: a create's record reaches the
/// watch cache before its reservation is released, and must not take two slots then.
fn kept_and_pending(
    containers: &[super::state::ContainerView],
    pending: &HashSet<String>,
) -> usize {
    let kept: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    slots_taken(&kept, pending)
}

fn slots_taken(kept: &[&str], pending: &HashSet<String>) -> usize {
    kept.len()
        + pending
            .iter()
            .filter(|name| !kept.contains(&name.as_str()))
            .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(limits: Limits) -> Arc<Runtime> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let runtime = Runtime::new(kube::Client::try_from(config).unwrap(), "test", "unit");
        runtime.set_limits(limits);
        runtime
    }

    #[test]
    fn a_create_seen_in_the_cache_takes_one_slot() {
        let pending: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        assert_eq!(slots_taken(&["a", "x"], &pending), 3);
        assert_eq!(slots_taken(&[], &pending), 2);
        assert_eq!(slots_taken(&["x"], &HashSet::new()), 1);
    }

    #[tokio::test]
    async fn streams_are_capped_and_released_on_drop() {
        let runtime = runtime(Limits {
            max_streams: 2,
            ..Limits::default()
        });
        let first = runtime.stream_permit().unwrap();
        let _second = runtime.stream_permit().unwrap();
        let error = runtime.stream_permit().unwrap_err();
        assert!(error.to_string().contains("max_streams"), "{error}");
        drop(first);
        runtime.stream_permit().unwrap();
    }

    #[tokio::test]
    async fn copies_are_capped() {
        let runtime = runtime(Limits {
            max_concurrent_copies: 1,
            ..Limits::default()
        });
        let held = runtime.copy_permit().unwrap();
        let error = runtime.copy_permit().unwrap_err();
        assert!(
            error.to_string().contains("max_concurrent_copies"),
            "{error}"
        );
        drop(held);
        runtime.copy_permit().unwrap();
    }

    #[tokio::test]
    async fn stored_bytes_are_capped_counting_writes_in_flight() {
        let runtime = runtime(Limits {
            max_stored_bytes: 10_000,
            ..Limits::default()
        });
        let first = runtime.reserve_bytes(6_000, 0).unwrap();
        let error = runtime.reserve_bytes(6_000, 0).err().unwrap();
        assert!(error.to_string().contains("max_stored_bytes"), "{error}");
        // An update that does not grow is always allowed.
        runtime.reserve_bytes(6_000, 6_000).unwrap();
        drop(first);
        runtime.reserve_bytes(6_000, 0).unwrap();
    }

    #[tokio::test]
    async fn containers_are_capped_and_names_released_on_drop() {
        let runtime = runtime(Limits {
            max_containers: 2,
            ..Limits::default()
        });
        let a = runtime.reserve_create("a", 100).unwrap();
        assert!(matches!(
            runtime.reserve_create("a", 100),
            Err(RuntimeError::NameInUse { .. })
        ));
        let _b = runtime.reserve_create("b", 100).unwrap();
        let error = runtime.reserve_create("c", 100).err().unwrap();
        assert!(error.to_string().contains("max_containers"), "{error}");
        drop(a);
        assert_eq!(runtime.pending_names(), 1);
        runtime.reserve_create("c", 100).unwrap();
    }

    #[test]
    fn stored_size_counts_data_and_metadata() {
        let config_map = ConfigMap {
            data: Some([("k".to_string(), "x".repeat(100))].into()),
            binary_data: Some([("b".to_string(), k8s_openapi::ByteString(vec![0; 1000]))].into()),
            ..Default::default()
        };
        assert_eq!(stored_size(&config_map), CONFIG_MAP_OVERHEAD + 101 + 1001);
    }
}
