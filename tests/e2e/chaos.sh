#!/bin/bash
# Chaos run (bounded): podbridge killed with SIGKILL in the middle of creates, starts, copies and
# execs, then restarted; the Kubernetes API server restarted while a client waits on a container.
#
#   tests/e2e/chaos.sh          build podbridge, run every check, print "N passed, M failed"
#
# After each SIGKILL round: every container is in a state Docker can report, every pod podbridge
# made has its container record (nothing half-applied without an owner), no container has two
# pods. After the API server restart: the watches recover, `docker wait` returns the exit code,
# `docker events` saw the `die`, and new containers run. Needs the cluster of tests/cluster.
# Environment: E2E_BIN, E2E_KEEP=1, E2E_ONLY=regex, CHAOS_ROUNDS (default 3).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/offline.sh
. "$ROOT/tests/e2e/offline.sh"
# shellcheck source=tests/e2e/checks.sh
. "$ROOT/tests/e2e/checks.sh"
CLUSTER=$ROOT/tests/cluster
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
PASSED=0
FAILED=0
FAILURES=()
CHECK_TAIL=25
ROUNDS=${CHAOS_ROUNDS:-3}
NS=pb-chaos-$$-$RANDOM

log() { printf '[chaos] %s\n' "$*" >&2; }
fail_setup() { echo "$*"; echo "0 passed, 1 failed"; exit 1; }

curl -sf -m 3 127.0.0.1:${PODBRIDGE_READY_PORT:-2476}/kubernetes-ready >/dev/null || fail_setup "no cluster: run tests/cluster/up.sh first"
if [ -z "${E2E_BIN:-}" ]; then
  log "building podbridge"
  (cd "$ROOT" && cargo build --quiet --offline 2>&1 || cargo build --quiet) >&2 || fail_setup "build failed"
  E2E_BIN=$CARGO_TARGET_DIR/debug/podbridge
fi
KUBECONFIG_NS=$("$CLUSTER/namespace.sh" "$NS" 2>/dev/null | tail -1)
[ -f "$KUBECONFIG_NS" ] || fail_setup "namespace.sh $NS failed"
PORT=$(free_port)
export DOCKER_HOST=tcp://127.0.0.1:$PORT
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
PB_PID=

start_pb() {
  KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=127.0.0.1:$PORT PODBRIDGE_LOG=info,kube=warn PODBRIDGE_CLEANUP_ON_EXIT=false \
    PODBRIDGE_READINESS_LISTEN=127.0.0.1:0 "$E2E_BIN" serve --namespace "$NS" --instance chaos >>"$WORK/podbridge.log" 2>&1 &
  PB_PID=$!
  for _ in $(seq 300); do [ "$(curl -s -m 2 "127.0.0.1:$PORT/_ping")" = OK ] && return 0; sleep 0.1; done
  echo "podbridge did not come up"; return 1
}
cleanup() {
  [ -n "$PB_PID" ] && { kill "$PB_PID" 2>/dev/null; wait "$PB_PID" 2>/dev/null; }
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept namespace $NS, log $WORK/podbridge.log"
  else
    "$CLUSTER/namespace.sh" --delete "$NS" >/dev/null 2>&1
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
kc() { KUBECONFIG=$KUBECONFIG_NS kubectl -n "$NS" "$@"; }

# One worker: a bounded loop of the operations a SIGKILL may cut (runs, create + copy + start,
# execs); its errors are expected while podbridge is down.
worker() {
  local n=$1 i
  echo "chaos-$n" >"$WORK/payload-$n"
  for i in 1 2 3; do
    timeout 20 docker run -d --name "r$n-$i" busybox sleep 120 >/dev/null 2>&1
    timeout 20 docker create --name "c$n-$i" busybox sleep 120 >/dev/null 2>&1 &&
      timeout 20 docker cp "$WORK/payload-$n" "c$n-$i:/tmp/payload" >/dev/null 2>&1 &&
      timeout 20 docker start "c$n-$i" >/dev/null 2>&1
    timeout 20 docker exec "r$n-$i" sh -c 'echo exec' >/dev/null 2>&1
  done
}

# Invariants that must hold once podbridge is back and the dust settled.
invariants() {
  local states bad pods specs dup orphan
  states=$(docker ps -a --format '{{.Names}} {{.State}}') || { echo "docker ps failed"; return 1; }
  bad=$(grep -Ev ' (created|running|exited|restarting)$' <<<"$states")
  [ -z "$bad" ] || { echo "containers in no state Docker reports:"; echo "$bad"; return 1; }
  pods=$(kc get pods -l podbridge.io/instance=chaos,podbridge.io/role=container \
    -o jsonpath='{range .items[*]}{.metadata.labels.podbridge\.io/container-id}{"\n"}{end}' | sort)
  specs=$(kc get configmaps -l podbridge.io/instance=chaos,podbridge.io/role=container-spec \
    -o jsonpath='{range .items[*]}{.metadata.labels.podbridge\.io/container-id}{"\n"}{end}' | sort)
  dup=$(uniq -d <<<"$pods")
  [ -z "$dup" ] || { echo "containers with two pods: $dup"; return 1; }
  orphan=$(comm -23 <(grep . <<<"$pods") <(grep . <<<"$specs"))
  [ -z "$orphan" ] || { echo "pods without their container record: $orphan"; return 1; }
  # every record Docker lists, and nothing Docker does not list
  expect_eq "$(grep -c . <<<"$specs")" "$(docker ps -aq | wc -l)"
}

t_sigkill_round() {
  local round=$1 n pids=()
  for n in 1 2 3 4; do worker "$round$n" & pids+=($!); done
  sleep "$(python3 -c "import random; print(round(random.uniform(1.5, 4.0), 2))")"
  kill -9 "$PB_PID"; wait "$PB_PID" 2>/dev/null; PB_PID=
  start_pb || return 1
  for n in "${pids[@]}"; do wait "$n"; done
  sleep 3
  [ "$(docker ps -aq | wc -l)" -gt 0 ] || { echo "no container was made before the kill: the round tested nothing"; return 1; }
  invariants || return 1
  # everything can be removed, and then nothing is left
  local all; all=$(docker ps -aq)
  [ -z "$all" ] || timeout 120 docker rm -f $all >/dev/null || { echo "rm -f failed"; return 1; }
  wait_gone 60 kc get pods,configmaps,services -l podbridge.io/instance=chaos -o name
}

t_apiserver_restart() {
  # a client waits on a container and follows its events while the API server goes away and
  # comes back: the wait returns the exit code, the die is seen, and podbridge serves on
  docker run -d --name waited busybox sh -c 'sleep 12; exit 7' >/dev/null || return 1
  local since; since=$(date +%s)
  (timeout 120 docker wait waited >"$WORK/wait.out" 2>&1) & local waiter=$!
  (timeout 90 docker events --since "$since" --filter container=waited --format '{{.Action}}' >"$WORK/events.out" 2>&1) &
  local follower=$!
  sleep 2
  # shellcheck source=tests/cluster/lib.sh
  local apiserver; apiserver=$(. "$CLUSTER/lib.sh" && pid_of kube-apiserver)
  [ -n "$apiserver" ] || { echo "no API server pid"; return 1; }
  kill -9 "$apiserver"
  for _ in $(seq 300); do kill -0 "$apiserver" 2>/dev/null || break; sleep 0.1; done
  sleep 2
  "$CLUSTER/up.sh" >"$WORK/up.out" 2>&1 || { echo "cluster did not come back"; tail -15 "$WORK/up.out"; return 1; }
  wait "$waiter"
  expect_eq "$(cat "$WORK/wait.out")" 7 || return 1
  for _ in $(seq 60); do grep -qx die "$WORK/events.out" && break; sleep 1; done
  kill "$follower" 2>/dev/null; wait "$follower" 2>/dev/null
  grep -qx die "$WORK/events.out" || { echo "events seen:"; cat "$WORK/events.out"; return 1; }
  expect_eq "$(docker inspect waited --format '{{.State.Status}} {{.State.ExitCode}}')" "exited 7" &&
    expect_eq "$(timeout 120 docker run --rm busybox echo after)" after &&
    docker rm waited >/dev/null
}

start_pb || fail_setup "podbridge did not start"
for round in $(seq "$ROUNDS"); do
  check "SIGKILL mid-operation, round $round: reportable states, every pod owned, one pod per container, all removable" t_sigkill_round "$round"
done
check "API server restarted while a client waits: wait returns 7, die seen, serving goes on" t_apiserver_restart
check "leak accounting: no podbridge object left behind by the checks" leaks kc
finish "$WORK/podbridge.log"
