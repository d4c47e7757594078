//! decode → rule chain → render for one realistic testcontainers-style request with the default
//! (built-in baseline) policy and with the shipped baseline + restricted profile (issue 13's
//! target, ≤ 50 µs), against a baseline measured in the same run: decoding and rendering alone,
//! with no policies. The ratio is the cost of the policy engine.

use std::collections::BTreeMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use podbridge::api::translate::{CreateRequest, Translator};
use podbridge::model::ContainerId;
use podbridge::render::{Identity, RenderContext};
use podbridge::rules::Limits;

/// The allocator of the `podbridge` binary: a third of the time per request is allocation.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const REQUEST: &str = include_str!("../examples/testcontainers-redis.json");

fn context() -> RenderContext {
    RenderContext {
        instance_id: "bench".into(),
        namespace: "ci".into(),
        project: Some("group/app".into()),
        name_prefix: "podbridge".into(),
        init_image: "docker.io/library/busybox:latest".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        docker_host_for_pods: None,
        volumes: Default::default(),
        bind_roots: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let identity = Identity {
        id: ContainerId::from_seed(b"bench"),
        created: "2026-01-01T00:00:00Z".into(),
    };
    let request = CreateRequest {
        start: podbridge::render::StartInputs::default(),
        purpose: Default::default(),
        body: REQUEST.as_bytes(),
        name: Some("redis-1"),
        image: None,
        identity,
    };
    let default_policy = Translator::new(
        podbridge::policy_store::shared(
            podbridge::policy_store::builtin(Limits::default()).unwrap(),
        ),
        context(),
    );
    let no_policy = Translator::new(
        podbridge::policy_store::shared(
            podbridge::rules::compile(&[], &BTreeMap::new(), Limits::default()).unwrap(),
        ),
        context(),
    );
    if let Ok(dirs) = std::env::var("PODBRIDGE_BENCH_POLICIES") {
        let paths: Vec<std::path::PathBuf> = dirs.split(',').map(Into::into).collect();
        let custom = Translator::new(
            podbridge::policy_store::shared(
                podbridge::policy_store::load_paths(&paths, None, Limits::default()).unwrap(),
            ),
            context(),
        );
        c.bench_function("translate/custom-policy", |b| {
            b.iter(|| black_box(custom.translate(black_box(&request)).unwrap()))
        });
        return;
    }
    let shipped = |dir: &str| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let restricted = Translator::new(
        podbridge::policy_store::shared(
            podbridge::policy_store::load_paths(
                &[shipped("policies/baseline"), shipped("policies/restricted")],
                Some(&shipped("rules")),
                Limits::default(),
            )
            .unwrap(),
        ),
        context(),
    );
    c.bench_function("translate/default-policy", |b| {
        b.iter(|| black_box(default_policy.translate(black_box(&request)).unwrap()))
    });
    c.bench_function("translate/baseline+restricted", |b| {
        b.iter(|| black_box(restricted.translate(black_box(&request)).unwrap()))
    });
    c.bench_function("translate/no-policy", |b| {
        b.iter(|| black_box(no_policy.translate(black_box(&request)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
