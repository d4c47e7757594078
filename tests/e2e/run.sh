#!/bin/bash
# End-to-end: the real docker CLI and docker-py against podbridge against the real test cluster.
#
#   tests/e2e/run.sh            build podbridge, run every check, print "N passed, M failed"
#
# Needs the cluster of tests/cluster (up.sh). Starts podbridge on a free loopback port against a
# fresh namespace made by tests/cluster/namespace.sh (minimal Role), and deletes it afterwards.
# Environment: E2E_BIN (a built podbridge; skips the build), E2E_VENV (venv with the `docker` package; made
# if missing), E2E_KEEP=1 (keep namespace and log), E2E_ONLY=regex (run matching checks only).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=$ROOT/tests/cluster
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${E2E_VENV:-${TMPDIR:-/tmp}/podbridge-e2e-venv}
NS=pb-e2e-$$-$RANDOM
WORK=$(mktemp -d)
PASSED=0
FAILED=0
FAILURES=()

log() { printf '[e2e] %s\n' "$*" >&2; }

curl -sf -m 3 127.0.0.1:${PODBRIDGE_READY_PORT:-2476}/kubernetes-ready >/dev/null ||
  { echo "no cluster: run tests/cluster/up.sh first"; echo "0 passed, 1 failed"; exit 1; }

if [ -z "${E2E_BIN:-}" ]; then
  log "building podbridge"
  (cd "$ROOT" && cargo build --quiet --offline 2>&1 || cargo build --quiet) >&2 || { echo "0 passed, 1 failed"; exit 1; }
  E2E_BIN=$CARGO_TARGET_DIR/debug/podbridge
fi

KUBECONFIG_NS=$("$CLUSTER/namespace.sh" "$NS" 2>/dev/null | tail -1)
[ -f "$KUBECONFIG_NS" ] || { echo "namespace.sh $NS failed"; echo "0 passed, 1 failed"; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export DOCKER_HOST=tcp://127.0.0.1:$PORT
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=127.0.0.1:$PORT PODBRIDGE_LOG=info,kube=warn PODBRIDGE_CLEANUP_ON_EXIT=false \
  PODBRIDGE_UNIX_SOCKET=$WORK/docker.sock "$E2E_BIN" serve --namespace "$NS" --instance e2e >"$WORK/podbridge.log" 2>&1 &
PB_PID=$!

cleanup() {
  kill "$PB_PID" 2>/dev/null; wait "$PB_PID" 2>/dev/null
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept namespace $NS, log $WORK/podbridge.log"
  else
    "$CLUSTER/namespace.sh" --delete "$NS" >/dev/null 2>&1
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$PORT/_ping")" = 200 ] && break
  sleep 0.1
done

kc() { KUBECONFIG=$KUBECONFIG_NS kubectl -n "$NS" "$@"; }

# check NAME COMMAND...: runs the command (a shell function), records pass/fail.
check() {
  local name=$1; shift
  if [ -n "${E2E_ONLY:-}" ] && ! [[ $name =~ $E2E_ONLY ]]; then return; fi
  local out=$WORK/check.out
  if "$@" >"$out" 2>&1; then
    PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$name"
  else
    FAILED=$((FAILED + 1)); FAILURES+=("$name"); printf 'FAIL %s\n' "$name"; sed 's/^/     | /' "$out" | tail -15
  fi
}

expect_eq() { [ "$1" = "$2" ] || { echo "expected [$2], got [$1]"; return 1; }; }

t_ping() {
  local headers; headers=$(curl -sI "127.0.0.1:$PORT/_ping")
  grep -qi '^Api-Version: 1.51' <<<"$headers" && grep -qi '^Ostype: linux' <<<"$headers" &&
    expect_eq "$(curl -s "127.0.0.1:$PORT/v1.53/_ping")" OK &&
    curl -s "127.0.0.1:$PORT/v1.12/version" | grep -q 'too old'
}
t_version() { docker version --format '{{.Server.APIVersion}}' | grep -qx 1.51; }
t_unix_socket() { expect_eq "$(DOCKER_HOST=unix://$WORK/docker.sock timeout 120 docker run --rm busybox echo via-unix)" via-unix; }
t_start_failure() {
  # An image the cluster cannot pull: start reports the kubelet's reason; --rm still removes.
  local out; out=$(timeout 120 docker run --rm example.invalid/nope:1 true 2>&1)
  grep -Eq 'ErrImagePull|ImagePullBackOff|InvalidImageName' <<<"$out" || { echo "$out"; return 1; }
  sleep 1; expect_eq "$(docker ps -aq | wc -l)" 0
}
t_run_stdin() {
  expect_eq "$(seq 1 1000 | timeout -s KILL 120 docker run -i --rm busybox wc -l | tr -d ' ')" 1000 &&
    expect_eq "$( (echo one; sleep 2; echo two) | timeout -s KILL 120 docker run -i --rm busybox cat | tr '\n' ' ')" "one two "
}
t_run_rm() {
  expect_eq "$(timeout 120 docker run --rm busybox echo hi)" hi || return 1
  sleep 1; expect_eq "$(docker ps -aq | wc -l)" 0
}
t_run_exit_code() { timeout 120 docker run --rm busybox sh -c 'echo out; echo err >&2; exit 3'; expect_eq $? 3; }
t_run_stderr() { expect_eq "$(timeout 120 docker run --rm busybox sh -c 'echo err >&2' 2>&1)" err; }
t_run_detached() {
  docker run -d --name web -l e2e=yes busybox sh -c 'echo started; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done' >/dev/null &&
    expect_eq "$(docker inspect web --format '{{.State.Status}} {{.State.Running}}')" "running true"
}
t_ps_filters() {
  expect_eq "$(docker ps --filter label=e2e=yes --format '{{.Names}}')" web &&
    expect_eq "$(docker ps --filter label=e2e --format '{{.Names}}')" web &&
    expect_eq "$(docker ps --filter name=we --format '{{.Names}}')" web &&
    expect_eq "$(docker ps --filter status=exited --format '{{.Names}}')" "" &&
    expect_eq "$(docker ps -q --no-trunc | cut -c1-12)" "$(docker inspect web --format '{{.Id}}' | cut -c1-12)"
}
t_inspect() {
  expect_eq "$(docker inspect web --format '{{.Name}} {{.Config.Image}} {{.HostConfig.LogConfig.Type}} {{json .NetworkSettings.Ports}}')" "/web busybox json-file {}" &&
    docker inspect web --format '{{.NetworkSettings.IPAddress}}' | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$'
}
t_logs() {
  local all last stamped
  all=$(docker logs web) && last=$(docker logs --tail 1 web) && stamped=$(docker logs -t web) || return 1
  grep -qx started <<<"$all" && grep -q '^tick' <<<"$last" && expect_eq "$(wc -l <<<"$last")" 1 &&
    grep -Eq '^20[0-9-]+T[0-9:.]+Z started$' <<<"$(head -1 <<<"$stamped")"
}
# The exec checks share `web`; with E2E_ONLY they start it themselves.
need_web() {
  docker inspect web >/dev/null 2>&1 ||
    docker run -d --name web -l e2e=yes busybox sh -c 'echo started; while true; do sleep 1; done' >/dev/null
}
t_exec() {
  need_web || return 1
  expect_eq "$(docker exec web sh -c 'echo in-exec')" in-exec &&
    { docker exec web sh -c 'exit 5'; expect_eq $? 5; } &&
    expect_eq "$(docker exec -e FOO=bar -w /tmp web sh -c 'echo $FOO $(pwd)')" "bar /tmp"
}
t_exec_tty() { need_web && expect_eq "$(docker exec -t web echo tty | tr -d '\r')" tty; }
t_exec_stdin_eof() {
  # stdin ends with the pipe (SPDY half-close), so cat and wc finish on their own.
  need_web || return 1
  expect_eq "$(echo hello | timeout -s KILL 60 docker exec -i web cat)" hello &&
    expect_eq "$(printf 'a\nb\n' | timeout -s KILL 60 docker exec -i web wc -l | tr -d ' ')" 2 &&
    { echo in | timeout -s KILL 60 docker exec -i web sh -c 'cat >/dev/null; exit 6'; expect_eq $? 6; }
}
t_exec_stdin_large() {
  need_web || return 1
  head -c 3000000 /dev/urandom >"$WORK/big.bin" || return 1
  expect_eq "$(timeout -s KILL 120 docker exec -i web cat <"$WORK/big.bin" | sha256sum)" "$(sha256sum <"$WORK/big.bin")" &&
    expect_eq "$(timeout -s KILL 120 docker exec -i web sh -c 'cat >/tmp/big.bin; sha256sum </tmp/big.bin' <"$WORK/big.bin" | cut -d' ' -f1)" \
      "$(sha256sum <"$WORK/big.bin" | cut -d' ' -f1)"
}
t_exec_resize() {
  need_web || return 1
  if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV" && "$VENV/bin/pip" install -q docker || return 1; fi
  "$VENV/bin/python" "$ROOT/tests/e2e/exec_tty.py" cli web && "$VENV/bin/python" "$ROOT/tests/e2e/exec_tty.py" resize web
}
t_cp_in() {
  echo hello-cp >"$WORK/up.txt" && docker cp "$WORK/up.txt" web:/tmp/up.txt &&
    expect_eq "$(docker exec web cat /tmp/up.txt)" hello-cp &&
    mkdir -p "$WORK/dd" && echo f >"$WORK/dd/f" && docker cp "$WORK/dd" web:/tmp/ &&
    expect_eq "$(docker exec web cat /tmp/dd/f)" f
}
t_cp_out() {
  docker exec web sh -c 'mkdir -p /data && echo a > /data/a.txt' &&
    docker cp web:/data "$WORK/data-out" && expect_eq "$(cat "$WORK/data-out/a.txt")" a &&
    docker cp web:/etc/hostname "$WORK/hostname" && [ -s "$WORK/hostname" ] &&
    ! docker cp web:/missing "$WORK/missing" 2>/dev/null
}
t_stop_start() {
  docker stop -t 1 web >/dev/null &&
    expect_eq "$(docker inspect web --format '{{.State.Status}} {{.State.ExitCode}}')" "exited 137" &&
    docker start web >/dev/null && expect_eq "$(docker inspect web --format '{{.State.Running}}')" true
}
t_rename() { docker rename web web2 && expect_eq "$(docker ps --format '{{.Names}}')" web2; }
t_rm_running_refused() { ! docker rm web2 2>/dev/null; }
t_rm_force() {
  docker rm -f web2 >/dev/null || return 1
  expect_eq "$(docker ps -aq | wc -l)" 0 &&
    expect_eq "$(kc get pods,configmaps,services -l podbridge.io/instance=e2e -o name | wc -l)" 0
}
t_wait_exit_code() {
  local id; id=$(docker run -d busybox sh -c 'sleep 2; exit 7') || return 1
  expect_eq "$(timeout 60 docker wait "$id")" 7 &&
    expect_eq "$(docker inspect "$id" --format '{{.State.Status}} {{.State.ExitCode}}')" "exited 7" &&
    docker rm "$id" >/dev/null
}
t_logs_follow_ends() {
  local id; id=$(docker run -d busybox sh -c 'for i in 1 2 3; do echo line $i; sleep 1; done') || return 1
  expect_eq "$(timeout 60 docker logs -f "$id" | tr '\n' ' ')" "line 1 line 2 line 3 " && docker rm "$id" >/dev/null
}
t_create_start_attach() {
  docker create --name made busybox echo from-created >/dev/null &&
    expect_eq "$(docker ps -a --filter name=made --format '{{.Status}}')" Created &&
    expect_eq "$(timeout 60 docker start -a made)" from-created &&
    expect_eq "$(timeout 60 docker start -a made)" from-created && docker rm made >/dev/null
}
t_name_conflict() {
  docker create --name dup busybox true >/dev/null && ! docker create --name dup busybox true 2>"$WORK/err" &&
    grep -q 'is already in use' "$WORK/err" && docker rm dup >/dev/null
}
t_no_such_container() {
  local out
  out=$(docker container inspect nope 2>&1); grep -q 'No such container: nope' <<<"$out" || { echo "$out"; return 1; }
  out=$(docker inspect nope 2>&1); grep -q 'No such object: nope' <<<"$out" || { echo "$out"; return 1; }
}
t_pull_images() { docker pull busybox >/dev/null && docker images --format '{{.Repository}}:{{.Tag}}' | grep -qx 'busybox:latest'; }
t_registry_image_config() {
  # The config comes from the loopback registry: inspect shows it and -P publishes the image's ports.
  local image=127.0.0.1:5000/library/redis:latest out port
  docker pull "$image" >/dev/null || return 1
  expect_eq "$(docker image inspect "$image" --format '{{json .Config.ExposedPorts}} {{json .Config.Cmd}}')" '{"6379/tcp":{}} ["redis-server"]' &&
    docker image inspect "$image" --format '{{.Id}}' | grep -Eq '^sha256:[0-9a-f]{64}$' || return 1
  out=$(docker pull 127.0.0.1:5000/library/nope:1 2>&1) && { echo "pull of a missing image succeeded: $out"; return 1; }
  grep -q 'not found' <<<"$out" || { echo "$out"; return 1; }
  local started=$SECONDS
  docker create --name hubcfg redis:7 >/dev/null && docker rm hubcfg >/dev/null &&
    [ $((SECONDS - started)) -lt 5 ] || { echo "create with a docker.io image took $((SECONDS - started))s"; return 1; }
  docker run -d --name rds -P "$image" >/dev/null || return 1
  port=$(docker port rds 6379/tcp | head -1 | sed 's/.*://')
  [ -n "$port" ] || { echo "6379 not published"; docker inspect rds --format '{{json .NetworkSettings.Ports}}'; return 1; }
  for _ in $(seq 60); do
    out=$(python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=3); s.sendall(b"PING\r\n"); print(s.recv(64).decode().strip())' "$port" 2>/dev/null)
    [ "$out" = +PONG ] && break; sleep 1
  done
  expect_eq "$out" +PONG && docker rm -f rds >/dev/null
}
t_networks_volumes() {
  docker network create e2enet >/dev/null && docker network ls --format '{{.Name}}' | grep -qx e2enet &&
    docker network inspect e2enet --format '{{.Name}}' | grep -qx e2enet && docker network rm e2enet >/dev/null &&
    docker volume create e2evol >/dev/null && docker volume ls -q | grep -qx e2evol && docker volume rm e2evol >/dev/null
}
t_events() {
  (timeout 20 docker events --filter type=container --format '{{.Action}} {{.Actor.Attributes.name}}' >"$WORK/events" 2>/dev/null &)
  sleep 1
  timeout 60 docker run --rm --name evt busybox true >/dev/null
  sleep 2
  grep -q '^start evt' "$WORK/events" && grep -q '^die evt' "$WORK/events" && grep -q '^destroy evt' "$WORK/events"
}
t_restart_podbridge() {
  # State lives in the cluster: a restarted podbridge still knows its containers.
  docker create --name survivor -l keep=1 busybox sleep 300 >/dev/null || return 1
  kill "$PB_PID"; wait "$PB_PID" 2>/dev/null
  KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=127.0.0.1:$PORT "$E2E_BIN" serve --namespace "$NS" --instance e2e >>"$WORK/podbridge.log" 2>&1 &
  PB_PID=$!
  for _ in $(seq 100); do [ "$(curl -s "127.0.0.1:$PORT/_ping")" = OK ] && break; sleep 0.1; done
  expect_eq "$(docker ps -a --filter label=keep=1 --format '{{.Names}} {{.Status}}')" "survivor Created" &&
    docker start survivor >/dev/null && expect_eq "$(docker inspect survivor --format '{{.State.Running}}')" true &&
    docker rm -f survivor >/dev/null
}
t_ports() {
  docker run -d --name www -p 80 busybox sh -c 'echo hello-http > /tmp/index.html; httpd -f -p 80 -h /tmp' >/dev/null || return 1
  local port; port=$(docker port www 80/tcp | head -1 | sed 's/.*://')
  [ -n "$port" ] && expect_eq "$(curl -s -m 5 "127.0.0.1:$port/index.html")" hello-http &&
    docker inspect www --format '{{json .NetworkSettings.Ports}}' | grep -q "\"HostPort\":\"$port\"" &&
    docker rm -f www >/dev/null
}
t_ports_udp() {
  # busybox's nc has no -u: a static UDP echo is copied in before start.
  cc -static -O2 -o "$WORK/udp-echo" "$ROOT/tests/e2e/udp_echo.c" || return 1
  docker create --name udpecho -p 127.0.0.1::9999/udp busybox /udp-echo 9999 >/dev/null &&
    docker cp "$WORK/udp-echo" udpecho:/udp-echo && docker start udpecho >/dev/null || return 1
  local host; host=$(docker port udpecho 9999/udp | head -1)
  expect_eq "${host%:*}" 127.0.0.1 &&
    docker inspect udpecho --format '{{json .NetworkSettings.Ports}}' |
      grep -qF "\"9999/udp\":[{\"HostIp\":\"127.0.0.1\",\"HostPort\":\"${host##*:}\"}]" &&
    expect_eq "$(python3 "$ROOT/tests/e2e/udp_send.py" 127.0.0.1 "${host##*:}" udp-echo-ok)" udp-echo-ok &&
    docker rm -f udpecho >/dev/null
}
t_binds() {
  mkdir -p "$WORK/bind/sub" && echo bound >"$WORK/bind/x" && echo deep >"$WORK/bind/sub/y" && echo one >"$WORK/one.txt" &&
    expect_eq "$(timeout 120 docker run --rm -v "$WORK/bind:/data" -v "$WORK/one.txt:/etc/one.txt:ro" busybox \
      sh -c 'cat /data/x /data/sub/y /etc/one.txt' | tr '\n' ' ')" "bound deep one "
}
t_cp_before_start() {
  docker create --name pre busybox sh -c 'cat /etc/pre.conf /opt/app/dd/f; ls /etc/passwd' >/dev/null || return 1
  echo pre-content >"$WORK/pre.conf" && mkdir -p "$WORK/ddx" && echo inner >"$WORK/ddx/f" &&
    docker cp "$WORK/pre.conf" pre:/etc && docker cp "$WORK/ddx" pre:/opt/app/dd &&
    expect_eq "$(timeout 120 docker start -a pre | tr '\n' ' ')" "pre-content inner /etc/passwd " &&
    docker rm pre >/dev/null
}
t_cleanup_on_exit() {
  # cleanup_on_exit (the default): stopping podbridge deletes everything of its instance.
  docker run -d --name leftover busybox sleep 300 >/dev/null || return 1
  expect_eq "$(kc get pods -l podbridge.io/instance=e2e -o name | wc -l)" 1 || return 1
  kill "$PB_PID"; wait "$PB_PID" 2>/dev/null
  expect_eq "$(kc get pods,configmaps,services -l podbridge.io/instance=e2e -o name | wc -l)" 0
}
t_docker_py() {
  if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV" && "$VENV/bin/pip" install -q docker || return 1; fi
  "$VENV/bin/python" "$ROOT/tests/e2e/docker_py_checks.py"
}

check "ping headers and version prefixes" t_ping
check "docker version" t_version
check "docker run --rm busybox echo hi" t_run_rm
check "docker run exit code" t_run_exit_code
check "unix socket" t_unix_socket
check "start failure is reported and --rm cleans up" t_start_failure
check "docker run stderr" t_run_stderr
check "docker run -i with piped stdin" t_run_stdin
check "docker run -d" t_run_detached
check "docker ps filters" t_ps_filters
check "docker inspect" t_inspect
check "docker logs" t_logs
check "docker exec (exit code, -e, -w)" t_exec
check "docker exec -t" t_exec_tty
check "docker exec -i: piped stdin reaches EOF (cat, wc -l, exit code)" t_exec_stdin_eof
check "docker exec -i: 3 MB stdin round trip, same checksum" t_exec_stdin_large
check "docker exec -it: terminal size from the CLI and from exec resize" t_exec_resize
check "docker cp into container" t_cp_in
check "docker cp out of container" t_cp_out
check "docker stop / start" t_stop_start
check "docker rename" t_rename
check "docker rm of running container refused" t_rm_running_refused
check "docker rm -f removes pod, spec and services" t_rm_force
check "docker wait exit code" t_wait_exit_code
check "docker logs -f ends with the container" t_logs_follow_ends
check "docker create + start -a" t_create_start_attach
check "duplicate name is 409" t_name_conflict
check "No such container" t_no_such_container
check "docker pull / images" t_pull_images
check "image config from the registry (pull, inspect, -P, redis PING)" t_registry_image_config
check "networks and volumes" t_networks_volumes
check "docker events" t_events
check "podbridge restart keeps containers" t_restart_podbridge
check "published ports (-p 80)" t_ports
check "published UDP port (-p 127.0.0.1::9999/udp)" t_ports_udp
check "bind mounts (directory and file)" t_binds
check "docker cp before start" t_cp_before_start
check "docker-py" t_docker_py
check "cleanup on exit" t_cleanup_on_exit

if [ "$FAILED" -gt 0 ]; then log "failed: ${FAILURES[*]}"; log "podbridge log tail:"; tail -20 "$WORK/podbridge.log" >&2; fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
