#!/bin/bash
# The hostile-job suite: every attack class of the policy-boundary issue, tried as a CI job would
# try it (docker CLI and raw HTTP, nothing else), under the baseline policy and again under the
# restricted overlay. After each attempt the cluster itself is read back (audit.py): every
# container of every pod carries the policy's hardening, no podbridge file reached a pod, no
# object of another tenant changed, ConfigMaps bounded, podbridge still serving with a bounded RSS.
#
#   tests/e2e/attacks.sh        build podbridge, run every case, print "N passed, M failed"
#
# Cases live in tests/e2e/attacks/*.sh: each defines functions named `attack_<name>` (run once per
# policy, with NS, KCFG, PORT, POLICY, WORK and DOCKER_HOST set) and may define
# `attacks_<file>_setup` (run once per policy before its cases). Helpers: kc (kubectl in the
# namespace), api_call / expect_error (raw HTTP), pb_alive, and everything in checks.sh.
# Environment: E2E_BIN (a built podbridge), E2E_KEEP=1, E2E_ONLY=regex, ATTACK_POLICIES
# ("baseline restricted").
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/offline.sh
. "$ROOT/tests/e2e/offline.sh"
# shellcheck source=tests/e2e/checks.sh
. "$ROOT/tests/e2e/checks.sh"
CHECK_TAIL=25
CLUSTER=$ROOT/tests/cluster
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
PASSED=0
FAILED=0
FAILURES=()
PIDS=()
NAMESPACES=()

log() { printf '[attacks] %s\n' "$*" >&2; }

curl -sf -m 3 127.0.0.1:${PODBRIDGE_READY_PORT:-2476}/kubernetes-ready >/dev/null ||
  { echo "no cluster: run tests/cluster/up.sh first"; echo "0 passed, 1 failed"; exit 1; }

if [ -z "${E2E_BIN:-}" ]; then
  log "building podbridge"
  (cd "$ROOT" && cargo build --quiet --offline 2>&1 || cargo build --quiet) >&2 || { echo "0 passed, 1 failed"; exit 1; }
  E2E_BIN=$CARGO_TARGET_DIR/debug/podbridge
fi
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept namespaces ${NAMESPACES[*]}, logs in $WORK"
  else
    for ns in "${NAMESPACES[@]}"; do "$CLUSTER/namespace.sh" --delete "$ns" >/dev/null 2>&1; done
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

kc() { KUBECONFIG=$KCFG kubectl -n "$NS" "$@"; }
# kc_admin: kubectl as the cluster admin (the "other tenant" and the auditor)
kc_admin() { KUBECONFIG=$ADMIN_KCFG kubectl "$@"; }
ADMIN_KCFG=$("$CLUSTER/up.sh" 2>/dev/null | tail -1)

# pb_alive: podbridge still answers /_ping
pb_alive() { [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "127.0.0.1:$PORT/_ping")" = 200 ]; }
# pb_rss_kib: podbridge's resident memory
pb_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$PB_PID/status"; }

# audit: the cluster after an attempt (see the header); ATTACK_RSS_LIMIT_KIB bounds podbridge's RSS.
audit() {
  pb_alive || { echo "podbridge does not answer /_ping"; tail -20 "$WORK/podbridge-$POLICY.log"; return 1; }
  local rss; rss=$(pb_rss_kib)
  [ "${rss:-0}" -le "${ATTACK_RSS_LIMIT_KIB:-262144}" ] || { echo "podbridge RSS ${rss} KiB"; return 1; }
  kc_admin get pods,configmaps,services,persistentvolumeclaims -A -o json >"$WORK/cluster.json" || return 1
  python3 "$ROOT/tests/e2e/attacks/audit.py" "$WORK/cluster.json" "$NS" "$POLICY" "$WORK/foreign.json" "$WORK/token"
}

run_policy() {
  POLICY=$1
  NS=pb-atk-$POLICY-$$
  KCFG=$("$CLUSTER/namespace.sh" "$NS" 2>/dev/null | tail -1)
  NAMESPACES+=("$NS")
  [ -f "$KCFG" ] || { check "$POLICY: namespace" false; return; }
  # The policies are copies, so a case can change them while podbridge runs (hot reload).
  POLICY_DIR=$WORK/policies-$POLICY
  mkdir -p "$POLICY_DIR"
  cp "$ROOT"/policies/baseline/*.yaml "$POLICY_DIR/"
  [ "$POLICY" = restricted ] && cp "$ROOT"/policies/restricted/*.yaml "$POLICY_DIR/"
  local policies=(--policies "$POLICY_DIR" --rules-dir "$ROOT/rules")
  PORT=$(free_port)
  KUBECONFIG=$KCFG PODBRIDGE_LISTEN=127.0.0.1:$PORT PODBRIDGE_READINESS_LISTEN=127.0.0.1:$(free_port) NO_COLOR=1 \
    PODBRIDGE_LOG=info,kube=warn PODBRIDGE_CLEANUP_ON_EXIT=true \
    "$E2E_BIN" serve --namespace "$NS" --instance "atk-$POLICY" "${policies[@]}" "${ATTACK_SERVE_ARGS[@]}" \
    >"$WORK/podbridge-$POLICY.out" 2>"$WORK/podbridge-$POLICY.log" &
  PB_PID=$!
  PIDS+=("$PB_PID")
  for _ in $(seq 300); do pb_alive && break; sleep 0.1; done
  pb_alive || { check "$POLICY: podbridge starts" bash -c "tail -20 '$WORK/podbridge-$POLICY.log'; false"; return; }
  export DOCKER_HOST=tcp://127.0.0.1:$PORT
  # podbridge's own credential: no object may ever hold it
  sed -n 's/^ *token: *//p' "$KCFG" | head -1 >"$WORK/token"
  local setup name
  for setup in $(declare -F | awk '{print $3}' | grep '^attacks_.*_setup$'); do "$setup"; done
  # Every object not of this instance (made by the setups as "another tenant") must come out of
  # the attacks unchanged.
  kc_admin get services,configmaps,persistentvolumeclaims -A -o json >"$WORK/foreign-all.json"
  python3 -c '
import json, sys
items = json.load(open(sys.argv[1]))["items"]
keep = [i for i in items if (i["metadata"].get("labels") or {}).get("podbridge.io/instance") != sys.argv[2]]
json.dump(keep, open(sys.argv[3], "w"))' "$WORK/foreign-all.json" "atk-$POLICY" "$WORK/foreign.json"
  for name in $(declare -F | awk '{print $3}' | grep '^attack_' | sort); do
    check "$POLICY: ${name#attack_}" "$name"
    check "$POLICY: ${name#attack_} (cluster audit)" audit
  done
  docker rm -f $(docker ps -aq) >/dev/null 2>&1
  kill "$PB_PID" 2>/dev/null; wait "$PB_PID" 2>/dev/null
}

for file in "$ROOT"/tests/e2e/attacks/*.sh; do
  # shellcheck source=/dev/null
  . "$file"
done
ATTACK_SERVE_ARGS=(${ATTACK_SERVE_ARGS[@]+"${ATTACK_SERVE_ARGS[@]}"})
for policy in ${ATTACK_POLICIES:-baseline restricted}; do run_policy "$policy"; done
finish
