//! podbridge: the Docker Engine API served from Kubernetes, translated by policy files.
//!
//! The modules follow the pipeline a Docker request travels:
//! `api` (HTTP and Docker wire format) → `model` (neutral workload) → `render::pod` (Pod-shaped
//! document) → `rules` (policy chain) → `render::objects` (typed Kubernetes objects) → `apply`
//! (cluster writes or dry-run printing) → `runtime` (watch state, logs, exec, archive, ports).
//! `translate` is the glue that runs the pure part of that pipeline for one request.

pub mod api;
pub mod apply;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod operator;
pub mod policy_store;
pub mod policy_test;
#[cfg(test)]
pub(crate) mod proptest_cases;
pub mod readiness;
pub mod render;
pub mod rules;
pub mod runtime;

/// tracing target of the phase spans (`create.translate`, `start.apply`, `remove.delete`, …).
/// Off by default; `log = "info,podbridge::timing=debug"` prints each span's duration when it
/// closes, which is how `benches/docker_run.sh` breaks a `docker run` into phases.
pub const TIMING: &str = "podbridge::timing";
