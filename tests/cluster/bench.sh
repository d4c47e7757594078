#!/bin/bash
# bench.sh - measure the test cluster on this machine.
#
#   bench.sh          pod start latency (busybox, 5 samples) and memory of the running cluster
#   bench.sh --full   first: cold start from wiped state (down.sh --wipe; up.sh) and warm restart
#                     (down.sh; up.sh), both with cached binaries/images. DESTROYS the cluster's
#                     state (namespaces, pods) - do not run while others use the cluster.
# Leaves the cluster running.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"

FULL=0
[ "${1:-}" = --full ] && FULL=1

timed_up() {  # timed_up LABEL: run up.sh, print its wall time
  local t
  t=$(date +%s%N)
  "$CLUSTER_DIR/up.sh" >/dev/null 2>"$LOGS/bench-up.log" || { cat "$LOGS/bench-up.log" >&2; die "up.sh failed"; }
  printf '%-44s %6d ms\n' "$1" "$(ms_since "$t")"
}

if [ $FULL = 1 ]; then
  "$CLUSTER_DIR/down.sh" --wipe >/dev/null 2>&1
  mkdir -p "$LOGS"
  timed_up "cold start (wiped state) -> node Ready"
  "$CLUSTER_DIR/down.sh" >/dev/null 2>&1
  timed_up "warm restart (state kept) -> node Ready"
  timed_up "up.sh when already up (reuse path)"
else
  "$CLUSTER_DIR/up.sh" >/dev/null 2>&1
fi

# pod start: POST /pods -> status.phase Running, polled every 20 ms through the API (admin)
NS=bench-$$
kc create namespace "$NS" >/dev/null
for ((i = 0; i < 300; i++)); do
  api "/api/v1/namespaces/$NS/serviceaccounts/default" | jq -e '.secrets | length > 0' >/dev/null 2>&1 && break
  sleep 0.1
done
post() {
  curl -sf --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(admin_token)" \
    -H 'Content-Type: application/json' -X POST --data-binary @- \
    "https://127.0.0.1:6443/api/v1/namespaces/$NS/pods" >/dev/null
}
samples=()
for n in 1 2 3 4 5; do
  t=$(date +%s%N)
  post <<JSON
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p$n"},
 "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main",
  "image": "docker.io/library/busybox:latest", "imagePullPolicy": "IfNotPresent",
  "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}}
JSON
  until [ "$(api "/api/v1/namespaces/$NS/pods/p$n" | jq -r .status.phase)" = Running ]; do sleep 0.02; done
  samples+=("$(ms_since "$t")")
done
printf '%-44s %s ms\n' "pod start, POST -> Running (5 samples)" "${samples[*]}"

# memory: RSS of every harness process plus the container shims of running pods
rss_of() { ps -o rss= -p "$1" 2>/dev/null | tr -d ' ' || true; }
total=0
for c in "${COMPONENTS[@]}"; do
  alive "$c" || continue
  r=$(rss_of "$(pid_of "$c")"); r=${r:-0}
  total=$((total + r))
  printf '  %-26s %6d MiB\n' "$c" $((r / 1024))
done
shims=0
for pid in $(pgrep -f 'containerd-shim-runc-v2 -namespace k8s.io' || true); do
  r=$(rss_of "$pid"); shims=$((shims + ${r:-0}))
done
printf '  %-26s %6d MiB (%d pods incl. the 5 bench pods)\n' "container shims" $((shims / 1024)) \
  "$(pgrep -fc 'containerd-shim-runc-v2 -namespace k8s.io' || true)"
printf '%-44s %6d MiB (components) + %d MiB (shims)\n' "memory, total RSS" $((total / 1024)) $((shims / 1024))

kc -n "$NS" delete pods --all --force --grace-period=0 >/dev/null 2>&1 || true
kc delete namespace "$NS" --wait=false >/dev/null
