#!/usr/bin/env bash
# soak.sh - a long CI day in minutes: CLIENTS docker-py clients (default 50) each repeat
# create, cp in, start, exec, logs, cp out, stop, remove for SECONDS (default 600), beside a
# compose up --wait / down -v loop, against podbridge on the test cluster.
#
#   benches/soak.sh [CLIENTS] [SECONDS]
#
# Prints requests by kind with errors and p50/p99 latency, podbridge's resident memory, open file
# descriptors and threads over the run (middle third, last third, peak: flat means no leak), and
# the objects left in the namespace (must be 0). Exits 1 on any error, a leftover or a growing
# curve. Bounded in time; loopback only. Uses a release build, a fresh namespace with the minimal
# Role, a policy overlay with tiny requests so that CLIENTS pods fit on this 2-core node, and
# max_concurrent_copies raised to CLIENTS (a deployer's setting for that many parallel clients).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=tests/e2e/offline.sh
. tests/e2e/offline.sh
clients=${1:-50}
seconds=${2:-600}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
venv=${E2E_VENV:-${TMPDIR:-/tmp}/podbridge-e2e-venv}
compose=$venv/bin/docker-compose
[ -x "$compose" ] && "$venv/bin/python" -c 'import docker' ||
    { echo "needs docker-py and compose in $venv (tests/e2e/clients.sh installs them)" >&2; exit 1; }
tests/cluster/up.sh >/dev/null 2>&1 || { echo "test cluster failed to start (tests/cluster/up.sh)" >&2; exit 1; }
cargo build --release --quiet --offline 2>/dev/null || cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/podbridge

# shellcheck source=benches/bench_env.sh
. benches/bench_env.sh
bench_namespace pb-soak

mkdir -p "$tmp/policy"
cat >"$tmp/policy/30-resources.yaml" <<'YAML'
apiVersion: podbridge.io/v1alpha1
kind: Policy
metadata: {name: resources}
spec:
  rules:
  - name: soak-requests
    mutate:
      setDefaults:
        /spec/containers/0/resources/requests/cpu: 1m
        /spec/containers/0/resources/requests/memory: 8Mi
YAML
cat >"$tmp/podbridge.toml" <<TOML
namespace = "$ns"
instance = "soak"
listen = "127.0.0.1:$port"
readiness_listen = "127.0.0.1:0"
policies = ["$root/policies/baseline", "$root/tests/e2e/policies", "$tmp/policy"]
log = "warn"
max_containers = $((clients * 2 + 20))
# every client copies at once: the default of 2 copies in memory would answer most of them 429
max_concurrent_copies = $clients
TOML


KUBECONFIG=$kubeconfig "$bin" serve --config "$tmp/podbridge.toml" >"$tmp/podbridge.log" 2>&1 &
pb_pid=$!
bench_wait_ping
idle=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pb_pid/status")
docker pull -q busybox >/dev/null
echo "podbridge idle: $idle MiB resident"
status=0
"$venv/bin/python" benches/soak.py "$pb_pid" "$clients" "$seconds" "$compose" "$root/tests/e2e/compose/compose.yaml" \
    env KUBECONFIG="$kubeconfig" kubectl -n "$ns" || status=$?
sleep 5
echo "podbridge after the run: $(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pb_pid/status") MiB resident (idle before: $idle MiB)"
[ "$status" = 0 ] || { echo "podbridge log tail:"; tail -20 "$tmp/podbridge.log"; }
exit "$status"
