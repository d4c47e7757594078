#!/usr/bin/env bash
# The project's one test command (README, .ci/run): format and lint, unit and golden policy tests,
# then the real single-node Kubernetes (built and started on first use, reused after) and every
# test that needs it. Cluster-backed tests never skip: if the cluster cannot start, this fails and
# prints the component log that says why.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

passed=0
failed_stage=""
stage_started=$SECONDS
stage() {
    echo
    echo "==> $*"
    stage_started=$SECONDS
}
# each stage's time, so the run's budget (90 min in CI) can be watched as the suite grows
done_stage() {
    passed=$((passed + 1))
    echo "<== $failed_stage: $((SECONDS - stage_started)) s (total $SECONDS s)"
}
trap 'if [ -n "$failed_stage" ]; then echo; echo "stages: $passed passed, 1 failed ($failed_stage)"; fi' EXIT

failed_stage="format and lint"
stage "$failed_stage"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
done_stage

failed_stage="unit, integration and golden policy tests"
stage "$failed_stage"
cargo test --quiet
done_stage

failed_stage="policy test command on the shipped golden tests"
stage "$failed_stage"
cargo run --quiet -- policy test tests/rules | tail -n 1
done_stage

failed_stage="test cluster"
stage "$failed_stage (tests/cluster/up.sh)"
tests/cluster/up.sh >/tmp/podbridge-cluster-up.out
admin_kubeconfig=$(tail -n 1 /tmp/podbridge-cluster-up.out)
echo "cluster ready, admin kubeconfig: $admin_kubeconfig"
done_stage

failed_stage="cluster smoke test"
stage "$failed_stage"
tests/cluster/smoke.sh
done_stage

failed_stage="cluster-backed Rust tests"
stage "$failed_stage"
namespace=podbridge-rust-tests
tests/cluster/namespace.sh --delete "$namespace" >/dev/null 2>&1 || true
export PODBRIDGE_TEST_KUBECONFIG
PODBRIDGE_TEST_KUBECONFIG=$(tests/cluster/namespace.sh "$namespace" | tail -n 1)
PODBRIDGE_TEST_NAMESPACE=$namespace cargo test --quiet --test podbridge -- --ignored
tests/cluster/namespace.sh --delete "$namespace" >/dev/null
done_stage

failed_stage="end-to-end with real Docker clients"
stage "$failed_stage"
tests/e2e/run.sh
done_stage

failed_stage="hostile job: the policy boundary (baseline and restricted)"
stage "$failed_stage"
tests/e2e/attacks.sh
done_stage

failed_stage="compose, testcontainers-python/-node and Ryuk"
stage "$failed_stage"
tests/e2e/clients.sh
done_stage

failed_stage="docker build: builder pods, built images, hostile builds"
stage "$failed_stage"
tests/e2e/build.sh
done_stage

failed_stage="lifecycle: reaper, namespace lock, dry-run server, bad input"
stage "$failed_stage"
tests/e2e/lifecycle.sh
done_stage

failed_stage="operator: per-job namespaces"
stage "$failed_stage"
tests/e2e/operator.sh
done_stage

failed_stage="in-cluster: podbridge's image, the operator Deployment, a job pod with podbridge beside it"
stage "$failed_stage"
tests/e2e/incluster.sh
done_stage

failed_stage="chaos: SIGKILL mid-operation, API server restart"
stage "$failed_stage"
tests/e2e/chaos.sh
done_stage

failed_stage=""
cd "$root"
echo
echo "stages: $passed passed, 0 failed"
