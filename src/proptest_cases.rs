//! How many cases each property test runs: a small default so `cargo test` stays quick, and the
//! `PROPTEST_CASES` environment variable for a longer hunt (`tests/fuzz.sh`).

use proptest::test_runner::{Config, FileFailurePersistence};

/// `default` cases unless `PROPTEST_CASES` says otherwise. Failing inputs are kept in
/// `proptest-regressions/` beside the source and replayed first on every run.
pub fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}
