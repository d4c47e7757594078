//! The integration test binary. Modules that need the real test cluster are `#[ignore]`d with
//! the reason "needs the test cluster"; the README's test command runs them with
//! `--include-ignored` after `tests/cluster/up.sh`, so they never skip silently.

mod podbridge {
    pub mod cli;
    pub mod cluster;
    pub mod policy_load;
    pub mod policy_tests;
    pub mod remote_command;
    pub mod support;
}
