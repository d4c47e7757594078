#!/bin/bash
# End-to-end lifecycle checks: the reaper, the namespace lease lock and the dry-run server.
#
#   tests/e2e/lifecycle.sh      build podbridge, run every check, print "N passed, M failed"
#
# The reaper and lock checks need the cluster of tests/cluster (up.sh) and use fresh namespaces
# from tests/cluster/namespace.sh (minimal Role); the dry-run check needs no cluster at all.
# Environment: E2E_BIN (a built podbridge; skips the build), E2E_KEEP=1 (keep namespaces and
# logs), E2E_ONLY=regex (run matching checks only).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/offline.sh
. "$ROOT/tests/e2e/offline.sh"
# shellcheck source=tests/e2e/checks.sh
. "$ROOT/tests/e2e/checks.sh"
CHECK_TAIL=25
CLUSTER=$ROOT/tests/cluster
# docker-py and compose v2, installed by run.sh and clients.sh (tests/run.sh runs those first)
VENV=${E2E_VENV:-${TMPDIR:-/tmp}/podbridge-e2e-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
PASSED=0
FAILED=0
FAILURES=()
PIDS=()
NAMESPACES=()

log() { printf '[lifecycle] %s\n' "$*" >&2; }

if [ -z "${E2E_BIN:-}" ]; then
  log "building podbridge"
  (cd "$ROOT" && cargo build --quiet --offline 2>&1 || cargo build --quiet) >&2 || { echo "0 passed, 1 failed"; exit 1; }
  E2E_BIN=$CARGO_TARGET_DIR/debug/podbridge
fi
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept namespaces ${NAMESPACES[*]}, logs in $WORK"
  else
    for ns in "${NAMESPACES[@]}"; do "$CLUSTER/namespace.sh" --delete "$ns" >/dev/null 2>&1; done
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

ping_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "127.0.0.1:$1/_ping"; }
# wait_ping PORT [TENTHS]: until /_ping answers 200
wait_ping() {
  for _ in $(seq "${2:-300}"); do [ "$(ping_code "$1")" = 200 ] && return 0; sleep 0.1; done
  return 1
}
# new_namespace: a fresh namespace with the minimal Role; sets NS and KCFG
new_namespace() {
  NS=pb-lc-$$-$RANDOM
  KCFG=$("$CLUSTER/namespace.sh" "$NS" 2>/dev/null | tail -1)
  NAMESPACES+=("$NS")
  [ -f "$KCFG" ]
}
# serve NAME PORT ARGS...: start podbridge in the background (log $WORK/NAME.log); sets PID
serve() {
  local name=$1 port=$2; shift 2
  PODBRIDGE_LISTEN=127.0.0.1:$port PODBRIDGE_READINESS_LISTEN=127.0.0.1:$(free_port) NO_COLOR=1 PODBRIDGE_LOG=info,kube=warn \
    "$E2E_BIN" serve "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PID=$!
  PIDS+=("$PID")
}
# count NS SELECTOR: objects of every kind the reaper handles, plus Leases, matching SELECTOR
count() {
  KUBECONFIG=$KCFG kubectl -n "$1" get pods,services,configmaps,secrets,persistentvolumeclaims,leases \
    -l "$2" -o name 2>/dev/null | wc -l
}


# logged NAME PATTERN: the log of NAME (colours stripped) matches PATTERN
logged() { sed 's/\x1b\[[0-9;]*m//g' "$WORK/$1.log" | grep -Eq "$2"; }

cluster_up() {
  curl -sf -m 3 127.0.0.1:${PODBRIDGE_READY_PORT:-2476}/kubernetes-ready >/dev/null ||
    { echo "no cluster: run tests/cluster/up.sh first"; return 1; }
}

# Instance A is killed with SIGKILL (no cleanup); B, with a 5 s idle time, reaps A's objects and
# Lease but keeps its own.
t_reaper() {
  cluster_up && new_namespace || return 1
  local pa pb a b
  pa=$(free_port); pb=$(free_port)
  KUBECONFIG=$KCFG serve reaper-a "$pa" --namespace "$NS" --instance lc-a; a=$PID
  wait_ping "$pa" || { echo "A did not start"; cat "$WORK/reaper-a.log"; return 1; }
  DOCKER_HOST=tcp://127.0.0.1:$pa timeout 120 docker run -d --name a1 busybox sleep 600 >/dev/null &&
    DOCKER_HOST=tcp://127.0.0.1:$pa docker create --name a2 busybox true >/dev/null || return 1
  local before; before=$(count "$NS" podbridge.io/instance=lc-a)
  [ "$before" -ge 3 ] || { echo "A has only $before objects"; return 1; }
  kill -9 "$a"
  PODBRIDGE_REAPER_IDLE_SECONDS=5 KUBECONFIG=$KCFG serve reaper-b "$pb" --namespace "$NS" --instance lc-b; b=$PID
  wait_ping "$pb" || { echo "B did not start"; cat "$WORK/reaper-b.log"; return 1; }
  DOCKER_HOST=tcp://127.0.0.1:$pb docker create --name b1 busybox true >/dev/null || return 1
  local left=$before
  for _ in $(seq 60); do
    left=$(count "$NS" podbridge.io/instance=lc-a)
    [ "$left" = 0 ] && break
    sleep 1
  done
  expect_eq "$left" 0 || { KUBECONFIG=$KCFG kubectl -n "$NS" get all,cm,leases --show-labels; tail "$WORK/reaper-b.log"; return 1; }
  # B's own objects (container spec and Lease) stay, well past its idle time
  sleep 7
  [ "$(count "$NS" podbridge.io/instance=lc-b)" -ge 2 ] || { echo "B lost its own objects"; return 1; }
  expect_eq "$(DOCKER_HOST=tcp://127.0.0.1:$pb docker ps -a --format '{{.Names}}')" b1 &&
    logged reaper-b 'Reaped the objects of a gone instance.*lc-a' && kill "$b"
}

# Two instances with --lock on one namespace: the second answers /_ping only after the first
# exits (SIGTERM: released at once); a third takes over from a SIGKILLed holder once its Lease
# expires.
t_lock() {
  cluster_up && new_namespace || return 1
  local pa pb pc a b c
  pa=$(free_port); pb=$(free_port); pc=$(free_port)
  KUBECONFIG=$KCFG serve lock-a "$pa" --namespace "$NS" --instance lock-a --lock; a=$PID
  wait_ping "$pa" || { echo "A did not start"; cat "$WORK/lock-a.log"; return 1; }
  KUBECONFIG=$KCFG serve lock-b "$pb" --namespace "$NS" --instance lock-b --lock; b=$PID
  sleep 4
  expect_eq "$(ping_code "$pb")" 000 || return 1
  logged lock-b 'Waiting for the namespace lock.*holder=lock-a' ||
    { echo "B does not say who holds the lock"; cat "$WORK/lock-b.log"; return 1; }
  expect_eq "$(KUBECONFIG=$KCFG kubectl -n "$NS" get lease podbridge-lock -o jsonpath='{.spec.holderIdentity}')" lock-a || return 1
  kill "$a"; wait "$a" 2>/dev/null
  wait_ping "$pb" 100 || { echo "B did not take over within 10 s of A's exit"; cat "$WORK/lock-b.log"; return 1; }
  logged lock-a 'Namespace lock released' || { echo "A did not release"; cat "$WORK/lock-a.log"; return 1; }
  KUBECONFIG=$KCFG serve lock-c "$pc" --namespace "$NS" --instance lock-c --lock; c=$PID
  sleep 3
  expect_eq "$(ping_code "$pc")" 000 || return 1
  kill -9 "$b"
  wait_ping "$pc" 300 || { echo "C did not take over within 30 s of B's SIGKILL"; cat "$WORK/lock-c.log"; return 1; }
  expect_eq "$(KUBECONFIG=$KCFG kubectl -n "$NS" get lease podbridge-lock -o jsonpath='{.spec.holderIdentity}')" lock-c &&
    kill "$c"
}

# No cluster at all: create translates, start prints, logs/ps/rm work, a policy refusal is a 403.
t_dry_run() {
  local port; port=$(free_port)
  KUBECONFIG=/nonexistent serve dry-run "$port" --dry-run
  wait_ping "$port" 100 || { echo "dry-run server did not start"; cat "$WORK/dry-run.log"; return 1; }
  export DOCKER_HOST=tcp://127.0.0.1:$port
  local id logs
  id=$(timeout 30 docker run --name web -d busybox sleep 1) || return 1
  logs=$(docker logs web) || return 1
  grep -q '^kind: Pod$' <<<"$logs" && grep -q '# policy rules:' <<<"$logs" && grep -q 'security-context' <<<"$logs" ||
    { echo "logs lack the objects or the explanation:"; echo "$logs"; return 1; }
  grep -q '^kind: Pod$' "$WORK/dry-run.out" || { echo "start printed nothing on stdout"; return 1; }
  expect_eq "$(docker ps -a --format '{{.Names}} {{.Image}} {{.State}}')" "web busybox exited" &&
    expect_eq "$(docker ps -q)" "" &&
    expect_eq "$(docker inspect web --format '{{.Id}} {{.State.ExitCode}}')" "$id 0" &&
    expect_eq "$(timeout 10 docker wait web)" 0 || return 1
  grep -q 'kind: Pod' <<<"$(timeout 30 docker run --rm busybox echo hi)" || { echo "attached run printed no objects"; return 1; }
  docker rm web >/dev/null && expect_eq "$(docker ps -aq)" "" || return 1
  # compose inspects and creates named volumes first
  docker volume create dryvol >/dev/null && expect_eq "$(docker volume ls -q)" dryvol &&
    expect_eq "$(docker volume inspect dryvol --format '{{.Name}} {{.Driver}}')" "dryvol local" &&
    grep -q 'persistentVolumeClaim' <<<"$(timeout 30 docker run --rm -v dryvol:/data busybox true)" &&
    docker volume rm dryvol >/dev/null && expect_eq "$(docker volume ls -q)" "" || return 1
  # a whole compose file: the healthchecked service runs healthy, so the one that waits for it
  # (depends_on: service_healthy) starts too, and every service's pod is printed
  if [ -x "$VENV/bin/docker-compose" ]; then
    local compose_out
    compose_out=$(timeout 60 "$VENV/bin/docker-compose" -p dry -f "$ROOT/tests/e2e/compose/compose.yaml" up -d 2>&1) ||
      { echo "compose up against the dry run: $compose_out"; return 1; }
    expect_eq "$(grep -E '^  name: podbridge-dry-(redis|client|web)-1-' "$WORK/dry-run.out" | sort -u | wc -l)" 3 &&
      expect_eq "$(docker inspect dry-redis-1 --format '{{.State.Status}} {{.State.Health.Status}}')" "running healthy" &&
      timeout 60 "$VENV/bin/docker-compose" -p dry -f "$ROOT/tests/e2e/compose/compose.yaml" down -v >/dev/null 2>&1 &&
      expect_eq "$(docker ps -aq)" "" || return 1
  else
    echo "no compose in $VENV: run tests/e2e/clients.sh first"; return 1
  fi
  local refused
  refused=$(timeout 30 docker run --privileged busybox true 2>&1)
  grep -q 'blocked by policy' <<<"$refused" || { echo "privileged run not refused:"; echo "$refused"; return 1; }
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    -d '{"Image":"busybox","HostConfig":{"Privileged":true}}' "127.0.0.1:$port/v1.44/containers/create")" 403 || return 1
  unset DOCKER_HOST
  KUBECONFIG=/nonexistent "$E2E_BIN" serve >"$WORK/nocluster.out" 2>&1
  local code=$?
  [ "$code" != 0 ] && tail -1 "$WORK/nocluster.out" | grep -q -- '--dry-run' && tail -1 "$WORK/nocluster.out" | grep -q 'tests/cluster/up.sh' ||
    { echo "serve without a cluster (exit $code):"; cat "$WORK/nocluster.out"; return 1; }
}

wait_port() { for _ in $(seq 50); do (: >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# Bad input gets Docker's status and {"message"}; the Kubernetes API (behind a TCP proxy) is cut
# in the middle of a start and while idle; podbridge answers with errors, then carries on.
t_bad_input() {
  cluster_up && new_namespace || return 1
  local kport proxy id
  kport=$(free_port); API_PORT=$(free_port)
  python3 "$ROOT/tests/e2e/tcp_proxy.py" "$kport" 127.0.0.1 6443 & proxy=$!; PIDS+=("$proxy")
  wait_port "$kport" || { echo "proxy did not start"; return 1; }
  sed "s#server: https://127.0.0.1:6443#server: https://127.0.0.1:$kport#" "$KCFG" >"$WORK/proxied.kubeconfig"
  grep -q "127.0.0.1:$kport" "$WORK/proxied.kubeconfig" || { echo "kubeconfig server not rewritten"; return 1; }
  PODBRIDGE_START_TIMEOUT_SECONDS=8 KUBECONFIG=$WORK/proxied.kubeconfig serve bad "$API_PORT" --namespace "$NS" --instance lc-bad
  wait_ping "$API_PORT" || { echo "podbridge did not start"; cat "$WORK/bad.log"; return 1; }
  head -c 3000000 /dev/zero | tr '\0' ' ' >"$WORK/big.json"
  expect_error 400 'invalid JSON' POST /v1.44/containers/create -d '{"Image": "busybox",' &&
    expect_error 400 '^Invalid container name \(bad/name\)' POST '/containers/create?name=bad/name' -d '{"Image":"busybox"}' &&
    expect_error 404 '^No such container: nope$' GET /containers/nope/json &&
    expect_error 404 '^No such container: nope$' POST /containers/nope/start &&
    expect_error 404 '^No such exec instance: nope$' GET /exec/nope/json &&
    expect_error 404 '^No such exec instance: nope$' POST /exec/nope/start -d '{}' &&
    expect_error 413 'larger than' POST /containers/create --data-binary @"$WORK/big.json" &&
    expect_error 403 'blocked by policy' POST /containers/create -d '{"Image":"busybox","HostConfig":{"Privileged":true}}' &&
    expect_error 400 '[Ii]mage is required' POST /containers/create -d '{}' || return 1
  # the cluster goes away while a start is waiting for its pod (a node selector no node has keeps
  # it pending, so the start is still waiting when the connection is cut, however fast the node)
  id=$(api_call POST /containers/create -d '{"Image":"busybox","Cmd":["sleep","600"],"Labels":{"podbridge.io/node-selector":"lc-bad=nowhere"}}' | sed 's/^201 //' | jq -r .Id)
  [ -n "$id" ] && [ "$id" != null ] || { echo "create failed"; return 1; }
  api_call POST "/containers/$id/start" >"$WORK/start.out" &
  local start=$!
  sleep 0.3
  kill -9 "$proxy"; wait "$proxy" 2>/dev/null
  wait "$start"
  grep -Eq '^5[0-9][0-9] \{"message":"..+"\}$' "$WORK/start.out" ||
    { echo "start during the outage: $(cat "$WORK/start.out")"; return 1; }
  # while it is away: writes fail fast with a message, reads come from the watch cache
  expect_error '5[0-9][0-9]' '.' POST /containers/create -d '{"Image":"busybox"}' &&
    expect_eq "$(api_call GET /containers/json?all=1 | cut -c1-3)" 200 || return 1
  # it comes back: podbridge carries on without a restart
  python3 "$ROOT/tests/e2e/tcp_proxy.py" "$kport" 127.0.0.1 6443 & proxy=$!; PIDS+=("$proxy")
  wait_port "$kport" || { echo "proxy did not restart"; return 1; }
  export DOCKER_HOST=tcp://127.0.0.1:$API_PORT
  local out="" tries=""
  for _ in $(seq 30); do
    out=$(timeout 60 docker run --rm busybox echo back 2>&1) && break
    tries+="$out"$'\n'
    sleep 1
  done
  [ -z "$tries" ] || printf 'attempts before the cluster was back:\n%s' "$tries"
  expect_eq "$out" back && docker rm -f "$id" >/dev/null &&
    expect_eq "$(docker ps -aq)" "" && kill -0 "$PID"
  local rc=$?
  unset DOCKER_HOST
  return $rc
}

# Two instances share a namespace: same container names, same alias; each keeps its own
# containers, and the alias stays with the instance that took it first (no hijacking).
t_two_instances() {
  cluster_up && new_namespace || return 1
  local pa pb out
  pa=$(free_port); pb=$(free_port)
  KUBECONFIG=$KCFG serve two-a "$pa" --namespace "$NS" --instance two-a
  KUBECONFIG=$KCFG serve two-b "$pb" --namespace "$NS" --instance two-b
  wait_ping "$pa" && wait_ping "$pb" || { echo "instances did not start"; return 1; }
  for side in a b; do
    local port=$pa; [ $side = b ] && port=$pb
    DOCKER_HOST=tcp://127.0.0.1:$port docker network create net >/dev/null || return 1
    DOCKER_HOST=tcp://127.0.0.1:$port timeout 120 docker run -d --name web --network net --network-alias shared busybox \
      sh -c "mkdir /w && echo from-$side >/w/i && httpd -f -p 8080 -h /w" >/dev/null || { echo "run on $side failed"; return 1; }
  done
  expect_eq "$(DOCKER_HOST=tcp://127.0.0.1:$pa docker ps --format '{{.Names}}')" web &&
    expect_eq "$(DOCKER_HOST=tcp://127.0.0.1:$pb docker ps --format '{{.Names}}')" web || return 1
  for _ in $(seq 20); do
    out=$(DOCKER_HOST=tcp://127.0.0.1:$pa timeout 60 docker run --rm --network net busybox wget -qO- http://shared:8080/i 2>&1)
    [ "$out" = from-a ] && break; sleep 1
  done
  expect_eq "$out" from-a || return 1
  logged two-b "Service name taken by an object this podbridge does not own.*service=shared owner=owned by podbridge instance two-a" ||
    { echo "B did not report the taken alias"; tail -5 "$WORK/two-b.log"; return 1; }
  # removing B's container leaves A's Service alone
  DOCKER_HOST=tcp://127.0.0.1:$pb docker rm -f web >/dev/null &&
    expect_eq "$(KUBECONFIG=$KCFG kubectl -n "$NS" get service shared -o jsonpath='{.metadata.labels.podbridge\.io/instance}')" two-a
}

# The built-in Ryuk survives a SIGKILL of podbridge: the same port is served again with the filters
# it had acknowledged; the restart is not taken for the client leaving (nothing is pruned within
# the grace), and the next client that connects and leaves ends the session as Ryuk would. Hostile
# lines (unknown keys, an empty filter, a line past the cap) are not acknowledged and prune nothing.
ryuk_send() { # PORT LINE...: send lines, print the replies, close
  python3 - "$@" <<'PY'
import socket, sys
port, lines = int(sys.argv[1]), sys.argv[2:]
with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    s.settimeout(2)
    replies = []
    for line in lines:
        s.sendall(line.encode() + b"\n")
        try:
            replies.append(s.recv(16).decode().strip())
        except socket.timeout:
            replies.append("none")
    print(" ".join(replies))
PY
}
t_builtin_ryuk_restart() {
  cluster_up && new_namespace || return 1
  local p ryuk rport out
  p=$(free_port)
  KUBECONFIG=$KCFG serve ryuk-a "$p" --namespace "$NS" --instance ryuk
  wait_ping "$p" || { echo "podbridge did not start"; return 1; }
  export DOCKER_HOST=tcp://127.0.0.1:$p
  ryuk=$(docker create -e RYUK_RECONNECTION_TIMEOUT=2s -l org.testcontainers.session-id=S1 -p 8080 testcontainers/ryuk:0.8.1) &&
    docker start "$ryuk" >/dev/null || return 1
  rport=$(docker port "$ryuk" 8080/tcp | head -1 | sed 's/.*://')
  docker run -d --name victim -l org.testcontainers.session-id=S1 busybox sleep 300 >/dev/null &&
    docker run -d --name bystander busybox sleep 300 >/dev/null || return 1
  expect_eq "$(docker logs "$ryuk")" "podbridge built-in Ryuk: Started! (serving 127.0.0.1:$rport)" || return 1
  expect_eq "$(ryuk_send "$rport" "volume=x" "label=" "name=")" "none none none" || return 1
  # a line past the 4 KiB cap closes the connection
  expect_eq "$(ryuk_send "$rport" "name=$(head -c 5000 /dev/zero | tr '\0' a)")" "" || return 1
  expect_eq "$(ryuk_send "$rport" "label=org.testcontainers.session-id=S1")" ACK || return 1
  # the client left; 2 s later Ryuk would prune, but podbridge dies first
  kill -9 "$PID"; wait "$PID" 2>/dev/null
  KUBECONFIG=$KCFG PODBRIDGE_RYUK_RESTART_GRACE_SECONDS=600 serve ryuk-b "$p" --namespace "$NS" --instance ryuk
  wait_ping "$p" || { echo "podbridge did not restart"; return 1; }
  sleep 4
  expect_eq "$(docker ps --format '{{.Names}}' | sort | tr '\n' ' ')" \
    "$(printf '%s\n' bystander victim "$(docker inspect -f '{{.Name}}' "$ryuk" | tr -d /)" | sort | tr '\n' ' ')" &&
    expect_eq "$(docker port "$ryuk" 8080/tcp | head -1)" "127.0.0.1:$rport" || return 1
  # a client comes back and leaves: the session ends as Ryuk ends it
  expect_eq "$(ryuk_send "$rport" "label=org.testcontainers.session-id=S1")" ACK || return 1
  wait_gone 30 sh -c "docker ps -aq --filter name=victim" &&
    wait_gone 30 sh -c "docker ps -aq --filter id=$ryuk" &&
    expect_eq "$(docker ps --format '{{.Names}}')" bystander &&
    docker rm -f bystander >/dev/null
}

# TLS with client certificates, as dockerd --tlsverify: the docker CLI, docker-py and compose with
# DOCKER_TLS_VERIFY/DOCKER_CERT_PATH work (a hijacked exec too); without a client certificate, or
# with one from another CA, the handshake is refused; a listener off loopback without TLS is
# refused at start unless insecure_tcp says otherwise.
make_certs() { # DIR: ca.pem, server cert/key for 127.0.0.1, client cert/key (Docker's file names)
  local d=$1
  mkdir -p "$d/client" "$d/rogue" && cd "$d" || return 1
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=pb-test-ca 2>/dev/null &&
    openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1 2>/dev/null &&
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 2 -extfile server.ext 2>/dev/null &&
    openssl req -newkey rsa:2048 -nodes -keyout client/key.pem -out client.csr -subj /CN=ci-job 2>/dev/null &&
    printf 'extendedKeyUsage=clientAuth\n' >client.ext &&
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out client/cert.pem -days 2 -extfile client.ext 2>/dev/null &&
    cp ca.pem client/ca.pem &&
    openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue/key.pem -out rogue/cert.pem -days 2 -subj /CN=rogue 2>/dev/null &&
    cp ca.pem rogue/ca.pem
  local rc=$?; cd - >/dev/null; return $rc
}
t_tls() {
  cluster_up && new_namespace || return 1
  [ -x "$VENV/bin/docker-compose" ] && "$VENV/bin/python" -c 'import docker' ||
    { echo "no docker-py/compose in $VENV: run tests/e2e/clients.sh first"; return 1; }
  local p d=$WORK/tls out
  make_certs "$d" || { echo "openssl failed"; return 1; }
  # off loopback without TLS: refused at start, with the way forward
  out=$(KUBECONFIG=$KCFG PODBRIDGE_LISTEN=10.244.0.1:0 timeout 20 "$E2E_BIN" serve --namespace "$NS" --instance tls 2>&1)
  grep -q "is not a loopback address and the Docker API has no authentication" <<<"$out" || { echo "$out"; return 1; }
  p=$(free_port)
  KUBECONFIG=$KCFG PODBRIDGE_TLS_CERT=$d/server-cert.pem PODBRIDGE_TLS_KEY=$d/server-key.pem PODBRIDGE_TLS_CA=$d/ca.pem \
    serve tls "$p" --namespace "$NS" --instance tls
  for _ in $(seq 100); do
    curl -s -o /dev/null --cacert "$d/ca.pem" --cert "$d/client/cert.pem" --key "$d/client/key.pem" "https://127.0.0.1:$p/_ping" && break
    sleep 0.1
  done
  (
    export DOCKER_HOST=tcp://127.0.0.1:$p DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$d/client
    expect_eq "$(timeout 120 docker run --rm busybox echo tls-ok)" tls-ok &&
      docker run -d --name tlsc busybox sleep 300 >/dev/null &&
      expect_eq "$(echo piped | docker exec -i tlsc cat)" piped &&
      # (requests lets REQUESTS_CA_BUNDLE override docker-py's DOCKER_CERT_PATH/ca.pem: not ours)
      expect_eq "$(env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE "$VENV/bin/python" -c 'import docker; c=docker.from_env(); print(c.containers.get("tlsc").exec_run(["echo","py-tls"]).output.decode().strip())')" py-tls &&
      expect_eq "$(timeout 120 "$VENV/bin/docker-compose" -p tlsp -f "$ROOT/tests/e2e/compose/oneshot.yaml" ps -q 2>&1 | wc -l)" 0 &&
      docker rm -f tlsc >/dev/null
  ) || return 1
  # refused: no client certificate, a certificate of another CA, plain HTTP
  curl -s -m 5 -o /dev/null --cacert "$d/ca.pem" "https://127.0.0.1:$p/_ping" && { echo "no client cert accepted"; return 1; }
  curl -s -m 5 -o /dev/null --cacert "$d/ca.pem" --cert "$d/rogue/cert.pem" --key "$d/rogue/key.pem" "https://127.0.0.1:$p/_ping" &&
    { echo "rogue client cert accepted"; return 1; }
  out=$(DOCKER_HOST=tcp://127.0.0.1:$p DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$d/rogue timeout 20 docker ps 2>&1) &&
    { echo "docker with a rogue cert: $out"; return 1; }
  [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/_ping")" != 200 ] || { echo "plain HTTP answered"; return 1; }
}

check "dry-run server without a cluster; serve without one says so" t_dry_run
check "reaper removes a SIGKILLed instance's objects, keeps its own" t_reaper
check "namespace lock: second instance serves only after the first" t_lock
check "bad input and a cluster cut mid-request get Docker errors; serving goes on" t_bad_input
check "two instances in one namespace: own containers, an alias is not hijacked" t_two_instances
check "built-in Ryuk: same port and filters after a SIGKILL restart; hostile lines refused" t_builtin_ryuk_restart
check "TLS with client certificates (docker CLI, docker-py, compose); refused without" t_tls

finish
