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
# shellcheck source=tests/e2e/offline.sh
. "$ROOT/tests/e2e/offline.sh"
# shellcheck source=tests/e2e/checks.sh
. "$ROOT/tests/e2e/checks.sh"
CLUSTER=$ROOT/tests/cluster
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${E2E_VENV:-${TMPDIR:-/tmp}/podbridge-e2e-venv}
NS=pb-e2e-$$-$RANDOM
WORK=$(mktemp -d)
# Bind sources are copied from podbridge's filesystem only under declared roots: the work dir.
export PODBRIDGE_BIND_ROOTS="[\"$WORK\"]"
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

# docker-py for the checks that speak the API through it (made once, before any check needs it)
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import docker' 2>/dev/null; then
  log "making the docker-py venv"
  { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } && "$VENV/bin/pip" install -q docker >&2 ||
    { echo "docker-py venv failed"; echo "0 passed, 1 failed"; exit 1; }
fi

KUBECONFIG_NS=$("$CLUSTER/namespace.sh" "$NS" 2>/dev/null | tail -1)
[ -f "$KUBECONFIG_NS" ] || { echo "namespace.sh $NS failed"; echo "0 passed, 1 failed"; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export DOCKER_HOST=tcp://127.0.0.1:$PORT
# the readiness listener, which also serves /metrics
READY_PORT=$(free_port)
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=127.0.0.1:$PORT PODBRIDGE_LOG=info,kube=warn PODBRIDGE_CLEANUP_ON_EXIT=false \
  PODBRIDGE_READINESS_LISTEN=127.0.0.1:$READY_PORT PODBRIDGE_UNIX_SOCKET=$WORK/docker.sock "$E2E_BIN" serve --namespace "$NS" --instance e2e \
  --policies "$ROOT/policies/baseline" --policies "$ROOT/tests/e2e/policies" >"$WORK/podbridge.log" 2>&1 &
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


volume_claims() { kc get pvc -l podbridge.io/instance=e2e,podbridge.io/role=volume -o name; }

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
t_missing_image() {
  # An image its registry does not have: create answers 404 No such image, the CLI pulls, the
  # pull reports the registry's answer; nothing is created.
  local out rc; out=$(timeout 120 docker run --rm busybox-does-not-exist:1 true 2>&1); rc=$?
  expect_eq "$rc" 125 && grep -q "Unable to find image 'busybox-does-not-exist:1' locally" <<<"$out" &&
    grep -q 'manifest unknown' <<<"$out" || { echo "$out"; return 1; }
  expect_eq "$(docker ps -aq | wc -l)" 0 && expect_eq "$(kc get pods,configmaps -l podbridge.io/instance=e2e -o name | wc -l)" 0
}
t_image_ids() {
  # A container's Image is an ID /images/{id}/json resolves; ps shows the image as asked for; a
  # tag shares its source's ID.
  docker pull -q busybox >/dev/null && docker tag busybox e2e-tagged:t || return 1
  expect_eq "$(docker image inspect e2e-tagged:t -f '{{.Id}}')" "$(docker image inspect busybox -f '{{.Id}}')" || return 1
  docker run -d --name imgc busybox sleep 60 >/dev/null || return 1
  local id; id=$(docker inspect imgc -f '{{.Image}}')
  expect_eq "$(docker ps --filter name=imgc --format '{{.Image}}')" busybox &&
    expect_eq "$(docker image inspect "$id" -f '{{.Id}}')" "$id" &&
    expect_eq "$(docker image inspect busybox -f '{{.Id}}')" "$id" &&
    docker rm -f imgc >/dev/null && docker rmi e2e-tagged:t >/dev/null
}
t_restart_policy() {
  # --restart on-failure:1: the kubelet restarts once, then podbridge stops as Docker does and
  # keeps the last exit; between runs inspect says restarting with the count.
  docker run -d --name rp --restart on-failure:1 busybox sh -c 'exit 3' >/dev/null || return 1
  local state
  for _ in $(seq 90); do
    state=$(docker inspect rp --format '{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}')
    [ "$state" = "exited 3 1" ] && break; sleep 1
  done
  expect_eq "$state" "exited 3 1" &&
    expect_eq "$(docker inspect rp --format '{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}')" on-failure:1 &&
    wait_gone 30 kc get pods -l podbridge.io/container-id="$(docker inspect rp --format '{{.Id}}' | cut -c1-12)" -o name &&
    docker rm rp >/dev/null || return 1
  docker run -d --name ra --restart always busybox sh -c 'exit 4' >/dev/null || return 1
  for _ in $(seq 60); do
    state=$(docker inspect ra --format '{{.State.Status}} {{.State.Restarting}} {{.State.ExitCode}}')
    [ "$state" = "restarting true 4" ] && break; sleep 1
  done
  expect_eq "$state" "restarting true 4" &&
    docker ps --filter name=ra --format '{{.Status}}' | grep -q '^Restarting (4)' &&
    docker rm -f ra >/dev/null
}
t_unhealthy() {
  # a healthcheck that never passes: starting, then unhealthy after its retries, as in Docker;
  # top lists the container's processes and not podbridge's own ps
  docker run -d --name sick --health-cmd false --health-interval 1s --health-retries 2 busybox sleep 300 >/dev/null || return 1
  local health
  for _ in $(seq 30); do
    health=$(docker inspect sick --format '{{.State.Health.Status}}'); [ "$health" = unhealthy ] && break; sleep 1
  done
  expect_eq "$health" unhealthy && docker ps --filter name=sick --format '{{.Status}}' | grep -q '(unhealthy)' &&
    docker top sick | grep -q 'sleep 300' && ! docker top sick | grep -q 'ps -o' &&
    docker rm -f sick >/dev/null
}
t_cp_from_exited() {
  # a container's filesystem goes with its pod: copying from an exited container is refused
  # with why, not a 404
  docker run --name gone busybox sh -c 'echo x > /tmp/f' >/dev/null || return 1
  local out; out=$(docker cp gone:/tmp/f "$WORK/f" 2>&1) && { echo "cp succeeded: $out"; return 1; }
  grep -q "it has exited, and a container's filesystem does not outlive its pod" <<<"$out" || { echo "$out"; return 1; }
  docker rm gone >/dev/null
}
t_pod_deleted_behind_our_back() {
  # someone deletes the pod of a running container: it is reported exited (137, a die event),
  # not "created" again; a finished one keeps its own exit code
  docker run -d --name victim busybox sleep 300 >/dev/null && docker run -d --name done5 busybox sh -c 'exit 5' >/dev/null || return 1
  local since; since=$(date +%s)
  for _ in $(seq 30); do [ "$(docker inspect done5 --format '{{.State.Status}}')" = exited ] && break; sleep 0.5; done
  kc delete pod -l podbridge.io/container-id="$(docker inspect victim --format '{{.Id}}' | cut -c1-12)" --grace-period=1 --wait=false >/dev/null &&
    kc delete pod -l podbridge.io/container-id="$(docker inspect done5 --format '{{.Id}}' | cut -c1-12)" --wait=false >/dev/null || return 1
  local state
  for _ in $(seq 100); do
    state="$(docker inspect victim --format '{{.State.Status}} {{.State.ExitCode}}') $(docker inspect done5 --format '{{.State.Status}} {{.State.ExitCode}}')"
    [ "$state" = "exited 137 exited 5" ] && break; sleep 0.5
  done
  expect_eq "$state" "exited 137 exited 5" &&
    grep -qx die <<<"$(timeout 20 docker events --since "$since" --until "$(($(date +%s) + 1))" --filter container=victim --format '{{.Action}}')" &&
    docker rm victim done5 >/dev/null
}
t_oom_killed() {
  # the kernel OOM-kills the container's process: exit 137 and OOMKilled, as Docker reports it
  local rc; timeout 120 docker run --name oom -m 16m busybox tail /dev/zero >/dev/null 2>&1; rc=$?
  expect_eq "$rc" 137 &&
    expect_eq "$(docker inspect oom --format '{{.State.ExitCode}} {{.State.OOMKilled}}')" "137 true" &&
    docker rm oom >/dev/null
}
t_exec_user_workdir() {
  # exec -u by name, uid and name:group, switched inside the container (busybox: su); an unknown
  # user fails as Docker fails (126, its message); -w makes a missing directory; -e survives
  docker run -d --name exu busybox sleep 300 >/dev/null || return 1
  expect_eq "$(docker exec -u nobody exu id -u)" 65534 &&
    expect_eq "$(docker exec -u 65534 exu id -un)" nobody &&
    expect_eq "$(docker exec -u nobody:nogroup -w /tmp/made/by -e A=1 exu sh -c 'echo $A $(pwd) $(id -u):$(id -g)')" "1 /tmp/made/by 65534:65534" || return 1
  local out rc; out=$(docker exec -u postgres exu true 2>&1); rc=$?
  expect_eq "$rc" 126 && grep -q 'unable to find user postgres: no matching entries in passwd file' <<<"$out" || { echo "$out"; return 1; }
  # a detached exec runs (its side effect shows); the start's Tty decides the framing, as in
  # Docker: docker-py's exec_start(tty=False) of a TTY exec gets frames it can demux
  docker exec -d exu touch /tmp/detached && sleep 1 && docker exec exu ls /tmp/detached >/dev/null &&
    "$VENV/bin/python" -c '
import docker
c = docker.from_env().containers.get("exu")
r = c.exec_run(["sh", "-c", "echo out; echo err >&2"], tty=True, demux=True)
assert r.exit_code == 0 and r.output == (b"out\r\nerr\r\n", None), r
api = docker.from_env().api
e = api.exec_create("exu", ["echo", "raw"], tty=True)
assert api.exec_start(e["Id"], tty=False) == b"raw\r\n"
' && docker rm -f exu >/dev/null
}
t_attach_py() {
  # docker-py: attach(stream=False, logs=True) replays what was written and ends; with neither
  # it ends at once; 80 attach-and-cancel cycles do not use up the 64 stream slots
  docker run -d --name atp busybox sh -c 'echo one; echo two; sleep 300' >/dev/null || return 1
  for _ in $(seq 30); do [ "$(docker logs atp 2>&1 | wc -l)" = 2 ] && break; sleep 0.5; done
  timeout 120 "$VENV/bin/python" -c '
import docker
c = docker.from_env().containers.get("atp")
assert c.attach(stream=False, logs=True) == b"one\ntwo\n", c.attach(stream=False, logs=True)
assert c.attach(stream=False, logs=False) == b""
import time
for _ in range(80):
    c.attach(stream=True, logs=False).close()
    time.sleep(0.05)
assert c.attach(stream=False, logs=True) == b"one\ntwo\n"
' && docker rm -f atp >/dev/null
}
t_update() {
  # update: the restart policy is stored (Docker's answer), resources cannot change on a pod:
  # refused saying so, not a 200 that changed nothing
  docker run -d --name upd busybox sleep 300 >/dev/null || return 1
  docker update --restart on-failure:3 upd >/dev/null &&
    expect_eq "$(docker inspect upd --format '{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}')" on-failure:3 || return 1
  local out; out=$(docker update -m 100m upd 2>&1) && { echo "memory update accepted: $out"; return 1; }
  grep -q 'updating Memory is not supported' <<<"$out" || { echo "$out"; return 1; }
  docker rm -f upd >/dev/null
}
t_run_stdin() {
  expect_eq "$(seq 1 1000 | timeout -s KILL 120 docker run -i --rm busybox wc -l | tr -d ' ')" 1000 &&
    expect_eq "$( (echo one; sleep 2; echo two) | timeout -s KILL 120 docker run -i --rm busybox cat | tr '\n' ' ')" "one two "
}
t_run_rm() {
  expect_eq "$(timeout 120 docker run --rm busybox echo hi)" hi || return 1
  sleep 1; expect_eq "$(docker ps -aq | wc -l)" 0
}
# metric SERIES: its value on the readiness listener's /metrics, 0 when absent
metric() { curl -s -m 5 "127.0.0.1:$READY_PORT/metrics" | awk -v s="$1" '$1 == s { v = $2 } END { print v + 0 }'; }
t_metrics() {
  # /metrics on the readiness listener, not on the Docker API; requests by templated route and
  # status, containers by state, policy decisions, Applier write durations, watch restarts
  local create='podbridge_requests_total{method="POST",route="/containers/create",status="201"}'
  local decisions='podbridge_policy_decisions_total{policy="images",rule="pull-policy",result="applied"}'
  local pod_creates='podbridge_apply_duration_seconds_count{kind="Pod",operation="create"}'
  local before_create before_decisions before_pods id text
  before_create=$(metric "$create"); before_decisions=$(metric "$decisions"); before_pods=$(metric "$pod_creates")
  id=$(docker run -d --name metered busybox sleep 300) || return 1
  text=$(curl -s -m 5 "127.0.0.1:$READY_PORT/metrics") || return 1
  [ "$(metric "$create")" -gt "$before_create" ] || { echo "$create did not move"; return 1; }
  [ "$(metric "$decisions")" -gt "$before_decisions" ] || { echo "$decisions did not move"; return 1; }
  [ "$(metric "$pod_creates")" -gt "$before_pods" ] || { echo "$pod_creates did not move"; return 1; }
  [ "$(metric 'podbridge_containers{state="running"}')" -ge 1 ] || { echo "no running container counted"; return 1; }
  grep -q '^podbridge_requests_total{method="POST",route="/containers/{id}/start",status="204"} ' <<<"$text" &&
    grep -q '^podbridge_request_duration_seconds_bucket{method="POST",route="/containers/create",le="+Inf"} ' <<<"$text" &&
    grep -q '^podbridge_watch_restarts_total{kind="Pod"} ' <<<"$text" &&
    grep -qx '# TYPE podbridge_containers gauge' <<<"$text" &&
    grep -qx '# TYPE podbridge_request_duration_seconds histogram' <<<"$text" || { echo "$text" | grep -v _bucket; return 1; }
  # templated routes only: no container id or name in any label
  ! grep -e "${id:0:12}" -e metered <<<"$text" || return 1
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$PORT/metrics")" 404 &&
    docker rm -f metered >/dev/null
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
  "$VENV/bin/python" "$ROOT/tests/e2e/exec_tty.py" cli web && "$VENV/bin/python" "$ROOT/tests/e2e/exec_tty.py" resize web &&
    "$VENV/bin/python" "$ROOT/tests/e2e/exec_tty.py" run busybox
}
t_cp_in() {
  echo hello-cp >"$WORK/up.txt" && docker cp "$WORK/up.txt" web:/tmp/up.txt &&
    expect_eq "$(docker exec web cat /tmp/up.txt)" hello-cp &&
    mkdir -p "$WORK/dd" && echo f >"$WORK/dd/f" && docker cp "$WORK/dd" web:/tmp/ &&
    expect_eq "$(docker exec web cat /tmp/dd/f)" f || return 1
  # larger than the 2 MiB JSON body limit: archives have their own
  head -c 6000000 /dev/urandom >"$WORK/big.bin" && docker cp "$WORK/big.bin" web:/tmp/big.bin &&
    expect_eq "$(docker exec web md5sum /tmp/big.bin | cut -d' ' -f1)" "$(md5sum <"$WORK/big.bin" | cut -d' ' -f1)"
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
t_pull_images() { docker pull busybox >/dev/null && grep -qx 'busybox:latest' <<<"$(docker images --format '{{.Repository}}:{{.Tag}}')"; }
t_registry_image_config() {
  # The config comes from the loopback registry: inspect shows it and -P publishes the image's ports.
  local image=127.0.0.1:5000/library/redis:latest out port
  docker pull "$image" >/dev/null || return 1
  expect_eq "$(docker image inspect "$image" --format '{{json .Config.ExposedPorts}} {{json .Config.Cmd}}')" '{"6379/tcp":{}} ["redis-server"]' &&
    docker image inspect "$image" --format '{{.Id}}' | grep -Eq '^sha256:[0-9a-f]{64}$' || return 1
  out=$(docker pull 127.0.0.1:5000/library/nope:1 2>&1) && { echo "pull of a missing image succeeded: $out"; return 1; }
  grep -q 'not found' <<<"$out" || { echo "$out"; return 1; }
  local started=$SECONDS
  # a registry podbridge does not contact (registry_lookup = loopback): create goes on at once
  # without the config (the cluster's nodes may still pull it)
  docker create --name hubcfg quay.io/podbridge-e2e/absent:1 >/dev/null && docker rm hubcfg >/dev/null &&
    [ $((SECONDS - started)) -lt 5 ] || { echo "create with an uncontacted registry's image took $((SECONDS - started))s"; return 1; }
  docker run -d --name rds -P "$image" >/dev/null || return 1
  port=$(docker port rds 6379/tcp | head -1 | sed 's/.*://')
  [ -n "$port" ] || { echo "6379 not published"; docker inspect rds --format '{{json .NetworkSettings.Ports}}'; return 1; }
  for _ in $(seq 60); do
    out=$(python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=3); s.sendall(b"PING\r\n"); print(s.recv(64).decode().strip())' "$port" 2>/dev/null)
    [ "$out" = +PONG ] && break; sleep 1
  done
  expect_eq "$out" +PONG && docker rm -f rds >/dev/null
}
t_registry_tls_auth() {
  # A registry over TLS (a CA of this test's own) with basic auth stands in for docker.io through
  # a mirror, for a second podbridge: pull is refused until `docker login`, then the config is
  # the image's own; a wrong password is refused at login.
  local d=$WORK/tlsreg rport pport reg pb dh out
  mkdir -p "$d/docker" && rport=$(free_port) && pport=$(free_port)
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=e2e-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$d/tls.key" -out "$d/tls.csr" 2>/dev/null &&
    printf 'subjectAltName=IP:127.0.0.1\n' >"$d/ext" &&
    openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 1 \
      -extfile "$d/ext" -out "$d/tls.crt" 2>/dev/null &&
    htpasswd -Bbn e2e s3cret >"$d/htpasswd" || return 1
  cat >"$d/registry.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: ${PODBRIDGE_CLUSTER_STATE:-/var/lib/podbridge-cluster}/registry}
  maintenance: {readonly: {enabled: true}}
http: {addr: "127.0.0.1:$rport", tls: {certificate: $d/tls.crt, key: $d/tls.key}}
auth: {htpasswd: {realm: e2e, path: $d/htpasswd}}
YAML
  docker-registry serve "$d/registry.yml" >"$d/registry.log" 2>&1 & reg=$!
  for _ in $(seq 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$d/ca.crt" "https://127.0.0.1:$rport/v2/")" = 401 ] && break
    sleep 0.1
  done
  KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=127.0.0.1:$pport PODBRIDGE_READINESS_LISTEN=127.0.0.1:$(free_port) \
    PODBRIDGE_REGISTRY_MIRRORS="[\"docker.io=https://127.0.0.1:$rport\"]" PODBRIDGE_REGISTRY_CA_FILES="[\"$d/ca.crt\"]" \
    "$E2E_BIN" serve --namespace "$NS" --instance e2e-tls >"$d/podbridge.log" 2>&1 & pb=$!
  dh=tcp://127.0.0.1:$pport
  for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$pport/_ping")" = 200 ] && break; sleep 0.1; done
  (
    export DOCKER_HOST=$dh DOCKER_CONFIG=$d/docker
    out=$(docker pull redis 2>&1) && { echo "pull without credentials succeeded: $out"; exit 1; }
    grep -q "docker login" <<<"$out" || { echo "pull without credentials: $out"; exit 1; }
    out=$(docker login -u e2e --password-stdin <<<wrong 2>&1) && { echo "login with a wrong password succeeded: $out"; exit 1; }
    grep -q "401" <<<"$out" || { echo "wrong login: $out"; exit 1; }
    docker login -u e2e --password-stdin <<<s3cret >/dev/null 2>&1 || { echo "login failed"; exit 1; }
    docker pull redis >/dev/null || exit 1
    expect_eq "$(docker image inspect redis --format '{{json .Config.ExposedPorts}} {{json .Config.Cmd}}')" \
      '{"6379/tcp":{}} ["redis-server"]'
  )
  local rc=$?
  kill "$pb" "$reg" 2>/dev/null; wait "$pb" "$reg" 2>/dev/null
  [ $rc = 0 ] || { echo "--- podbridge log"; tail -5 "$d/podbridge.log"; }
  return $rc
}
t_stats() {
  # Stats come from the container's cgroup and network namespace: real memory, pids, CPU time.
  docker run -d --name st busybox sh -c 'head -c 50000000 /dev/urandom | md5sum; sleep 300' >/dev/null || return 1
  local out json
  out=$(timeout 60 docker stats --no-stream --format '{{.MemUsage}}|{{.PIDs}}' st) || return 1
  [[ $out =~ ^[0-9.]+[KMG]iB\ /\ [0-9.]+[KMG]iB\|[1-9] ]] || { echo "docker stats: $out"; return 1; }
  json=$(curl -s -m 30 "127.0.0.1:$PORT/containers/st/stats?stream=false")
  jq -e '.cpu_stats.cpu_usage.total_usage > 0 and .cpu_stats.system_cpu_usage > .precpu_stats.system_cpu_usage
         and .cpu_stats.online_cpus >= 1 and .memory_stats.usage > 0 and .pids_stats.current >= 1
         and (.networks.eth0.rx_packets >= 0)' <<<"$json" >/dev/null || { echo "stats: ${json:0:600}"; return 1; }
  docker rm -f st >/dev/null
}
t_alias_dns() {
  # A container with no ports is reached by its network alias and by its name (headless Services).
  docker network create aliasnet >/dev/null || return 1
  docker run -d --name dbsrv --network aliasnet --network-alias db busybox \
    sh -c 'mkdir /w && echo hello-from-db >/w/i && httpd -f -p 8080 -h /w' >/dev/null || return 1
  local out=""
  for _ in $(seq 20); do
    out=$(timeout 60 docker run --rm --network aliasnet busybox sh -c 'wget -qO- http://db:8080/i && wget -qO- http://dbsrv:8080/i' 2>&1 | tr '\n' ' ')
    [ "$out" = "hello-from-db hello-from-db " ] && break
    sleep 1
  done
  expect_eq "$out" "hello-from-db hello-from-db " && docker rm -f dbsrv >/dev/null && docker network rm aliasnet >/dev/null
}
t_service_refused() {
  # Services and the pod are written together at start: when the cluster refuses a Service
  # (a quota of none), the start fails with the API server's reason and no pod is left running.
  docker network create qnet >/dev/null || return 1
  # the job's Role cannot write quotas: the cluster's admin sets it, as a platform team would
  local admin=(kubectl --kubeconfig /var/lib/podbridge-cluster/admin.kubeconfig -n "$NS")
  "${admin[@]}" create quota e2e-no-services --hard=services=0 >/dev/null || return 1
  local out rc; out=$(timeout 120 docker run -d --name svcq --network qnet --network-alias q busybox sleep 600 2>&1); rc=$?
  "${admin[@]}" delete quota e2e-no-services >/dev/null
  [ "$rc" != 0 ] && grep -q 'exceeded quota' <<<"$out" || { echo "start with a refused Service (exit $rc): $out"; return 1; }
  local short; short=$(docker inspect svcq -f '{{.Id}}' | cut -c1-12)
  wait_gone 10 kc get pods -l podbridge.io/container-id="$short" -o name &&
    expect_eq "$(docker inspect svcq -f '{{.State.Running}}')" false &&
    docker rm -f svcq >/dev/null && docker network rm qnet >/dev/null
}
t_links() {
  # Legacy links on the default bridge, as dockerd answers them: the alias and the target's name
  # reach the target (the pod's /etc/hosts), the link variables are set, inspect and the list show
  # Docker's forms, `rm --link` removes a link, and a missing or stopped target is refused.
  docker run -d --name lnksrv -e GREETING=hi --expose 8080 busybox \
    sh -c 'mkdir /w && echo hello-from-srv >/w/i && httpd -f -p 8080 -h /w' >/dev/null || return 1
  local ip out=""; ip=$(docker inspect lnksrv --format '{{.NetworkSettings.IPAddress}}')
  [ -n "$ip" ] || { echo "lnksrv has no address"; return 1; }
  local script='echo "$DB_NAME $DB_PORT $DB_PORT_8080_TCP $DB_PORT_8080_TCP_ADDR $DB_PORT_8080_TCP_PORT $DB_PORT_8080_TCP_PROTO $DB_ENV_GREETING"; wget -qO- http://db:8080/i; wget -qO- http://lnksrv:8080/i'
  local want="^/[a-z0-9_]+/db tcp://$ip:8080 tcp://$ip:8080 $ip 8080 tcp hi hello-from-srv hello-from-srv $"
  for _ in $(seq 20); do
    out=$(timeout 120 docker run --rm --link lnksrv:db busybox sh -c "$script" 2>&1 | tr '\n' ' ')
    [[ $out =~ $want ]] && break
    sleep 1
  done
  [[ $out =~ $want ]] || { echo "linked container printed: $out"; return 1; }
  docker create --name lnkweb --link lnksrv:db --link lnksrv busybox sleep 300 >/dev/null &&
    expect_eq "$(docker inspect lnkweb --format '{{json .HostConfig.Links}}')" '["/lnksrv:/lnkweb/db","/lnksrv:/lnkweb/lnksrv"]' &&
    expect_eq "$(curl -s "127.0.0.1:$PORT/containers/json?filters=%7B%22name%22%3A%5B%22lnksrv%22%5D%7D" | jq -c '.[0].Names')" \
      '["/lnksrv","/lnkweb/db","/lnkweb/lnksrv"]' &&
    docker rm --link lnkweb/db >/dev/null &&
    expect_eq "$(docker inspect lnkweb --format '{{json .HostConfig.Links}}')" '["/lnksrv:/lnkweb/lnksrv"]' &&
    expect_error 404 '^No such container: lnkweb/db$' DELETE '/v1.51/containers/lnkweb/db?link=1' &&
    expect_error 500 '^Conflict, cannot remove the default link name of the container$' DELETE '/containers/lnksrv?link=1' &&
    expect_error 400 '^could not get container for nosuch: No such container: nosuch$' \
      POST /containers/create -d '{"Image":"busybox","HostConfig":{"Links":["nosuch:db"]}}' &&
    expect_error 400 '^bad format for links: a:b:c$' POST /containers/create -d '{"Image":"busybox","HostConfig":{"Links":["a:b:c"]}}' || return 1
  docker create --name lnkidle busybox true >/dev/null && docker create --name lnkweb2 --link lnkidle:idle busybox true >/dev/null &&
    expect_error 500 '^Cannot link to a non running container: /lnkidle AS /lnkweb2/idle$' POST /containers/lnkweb2/start &&
    expect_eq "$(docker inspect lnkweb2 --format '{{.State.Status}}')" created || return 1
  docker rm -f lnksrv lnkweb lnkidle lnkweb2 >/dev/null
}
t_networks_volumes() {
  docker network create e2enet >/dev/null && docker network ls --format '{{.Name}}' | grep -qx e2enet &&
    docker network inspect e2enet --format '{{.Name}}' | grep -qx e2enet && docker network rm e2enet >/dev/null &&
    docker volume create e2evol >/dev/null && docker volume ls -q | grep -qx e2evol && docker volume rm e2evol >/dev/null
}
t_network_endpoints() {
  # Docker's refusals around endpoints, and inspect lists only attached containers.
  docker network create epnet >/dev/null && docker create --name epc busybox sleep 300 >/dev/null || return 1
  local net_id; net_id=$(docker network inspect epnet --format '{{.Id}}')
  expect_error 403 'is not connected to the network epnet' POST "/v1.51/networks/epnet/disconnect" -d '{"Container":"epc"}' &&
    expect_eq "$(docker network inspect epnet --format '{{len .Containers}} {{json .Options}}')" "0 {}" &&
    docker network connect epnet epc && docker start epc >/dev/null &&
    expect_eq "$(docker network inspect epnet --format '{{len .Containers}}')" 1 &&
    expect_error 403 '^endpoint with name epc already exists in network epnet$' POST "/networks/$net_id/connect" -d '{"Container":"epc"}' &&
    docker network disconnect epnet epc &&
    expect_eq "$(docker network inspect epnet --format '{{len .Containers}}')" 0 &&
    expect_error 403 '^only one instance of "host" network is allowed$' POST /networks/create -d '{"Name":"h2","Driver":"host"}' &&
    expect_error 404 '^plugin "nope" not found$' POST /networks/create -d '{"Name":"n2","Driver":"nope"}' &&
    expect_error 404 '^plugin "nfs" not found$' POST /volumes/create -d '{"Name":"v2","Driver":"nfs"}' &&
    expect_error 501 '^container changes are not supported' GET /containers/epc/changes &&
    expect_error 400 "^logger: no log driver named 'nope' is registered$" POST /containers/create -d '{"Image":"busybox","HostConfig":{"LogConfig":{"Type":"nope"}}}' &&
    expect_error 400 "^invalid restart policy: unknown policy 'x'" POST /containers/create -d '{"Image":"busybox","HostConfig":{"RestartPolicy":{"Name":"x"}}}' || return 1
  # compose v1 re-attaches a created container to its NetworkMode network: disconnect, then connect.
  docker create --name epm --network epnet busybox sleep 300 >/dev/null && docker network disconnect epnet epm &&
    expect_eq "$(docker inspect epm --format '{{len .NetworkSettings.Networks}}')" 0 &&
    docker network connect --alias epalias epnet epm &&
    expect_eq "$(docker inspect epm --format '{{json .NetworkSettings.Networks.epnet.Aliases}}')" '["epalias"]' &&
    docker network connect --alias epalias2 epnet epm &&
    expect_eq "$(docker inspect epm --format '{{json .NetworkSettings.Networks.epnet.Aliases}}')" '["epalias","epalias2"]' || return 1
  docker rm -f epc epm >/dev/null && docker network rm epnet >/dev/null
}
t_swarm_plugins() {
  # A daemon outside any swarm, with no plugins: what docker-py and the CLI probe for.
  expect_error 503 'not a swarm manager. Use "docker swarm init"' GET /v1.51/nodes &&
    expect_error 503 'not a swarm manager' GET /services &&
    expect_error 503 '^This node is not part of a swarm$' POST '/v1.51/swarm/leave?force=1' &&
    expect_error 404 '^plugin "nope" not found$' GET /v1.51/plugins/nope/json &&
    expect_eq "$(docker plugin ls --format '{{.Name}}' | wc -l)" 0 &&
    expect_eq "$(docker info --format '{{.Swarm.LocalNodeState}}')" inactive
}
t_events() {
  (timeout 20 docker events --filter type=container --format '{{.Action}} {{.Actor.Attributes.name}}' >"$WORK/events" 2>/dev/null &)
  sleep 1
  timeout 60 docker run --rm --name evt busybox true >/dev/null
  sleep 2
  grep -q '^start evt' "$WORK/events" && grep -q '^die evt' "$WORK/events" && grep -q '^destroy evt' "$WORK/events"
}
t_events_objects_since() {
  # Network, volume and image events; `since` replays them, `until` ends the stream.
  local since; since=$(date +%s)
  docker pull busybox >/dev/null || return 1
  docker network create evnet >/dev/null && docker volume create evvol >/dev/null &&
    docker run -d --name evc busybox sleep 300 >/dev/null && docker network connect evnet evc &&
    docker network disconnect evnet evc && docker rm -f evc >/dev/null &&
    docker network rm evnet >/dev/null && docker volume rm evvol >/dev/null &&
    docker tag busybox evtag:1 && docker rmi evtag:1 >/dev/null || return 1
  sleep 2
  local got
  got=$(timeout 20 docker events --since "$since" --until "$(($(date +%s) + 1))" \
    --filter type=network --filter type=volume --filter type=image \
    --format '{{.Type}} {{.Action}} {{.Actor.Attributes.name}}')
  local want
  for want in "network create evnet" "network connect evnet" "network disconnect evnet" "network destroy evnet" \
    "volume create evvol" "volume destroy evvol" "image tag evtag:1" "image untag evtag:1" "image delete evtag:1"; do
    grep -qx "$want" <<<"$got" || { echo "missing [$want] in:"; echo "$got"; return 1; }
  done
  # filters by object
  got=$(timeout 20 docker events --since "$since" --until "$(($(date +%s) + 1))" --filter volume=evvol --format '{{.Action}}' | tr '\n' ' ')
  expect_eq "$got" "create destroy "
}
t_restart_podbridge() {
  # State lives in the cluster: a restarted podbridge still knows its containers.
  docker create --name survivor -l keep=1 busybox sleep 300 >/dev/null || return 1
  kill "$PB_PID"; wait "$PB_PID" 2>/dev/null
  KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=127.0.0.1:$PORT "$E2E_BIN" serve --namespace "$NS" --instance e2e --policies "$ROOT/policies/baseline" --policies "$ROOT/tests/e2e/policies" >>"$WORK/podbridge.log" 2>&1 &
  PB_PID=$!
  for _ in $(seq 100); do [ "$(curl -s "127.0.0.1:$PORT/_ping")" = OK ] && break; sleep 0.1; done
  expect_eq "$(docker ps -a --filter label=keep=1 --format '{{.Names}} {{.Status}}')" "survivor Created" &&
    docker start survivor >/dev/null && expect_eq "$(docker inspect survivor --format '{{.State.Running}}')" true &&
    docker rm -f survivor >/dev/null
}
t_restart_keeps_ports() {
  # Published ports are state in the cluster: after a SIGKILL the same host port reaches the
  # container; a recorded port someone took meanwhile is reported (State.Error), not moved, and
  # bound again once it is free.
  docker run -d --name keep -p 80 busybox sh -c 'echo kept-port > /tmp/index.html; httpd -f -p 80 -h /tmp' >/dev/null &&
    docker run -d --name squat -p 80 busybox sh -c 'echo squat-port > /tmp/index.html; httpd -f -p 80 -h /tmp' >/dev/null || return 1
  local kp sp squatter out
  kp=$(docker port keep 80/tcp | head -1 | sed 's/.*://'); sp=$(docker port squat 80/tcp | head -1 | sed 's/.*://')
  for _ in $(seq 50); do curl -s -m 2 "127.0.0.1:$kp/index.html" | grep -q kept-port && break; sleep 0.2; done
  for _ in $(seq 50); do
    [ "$(kc get cm -l podbridge.io/instance=e2e -o yaml | grep -c -e "127.0.0.1:$kp" -e "127.0.0.1:$sp")" = 2 ] && break; sleep 0.1
  done
  kill -9 "$PB_PID"; wait "$PB_PID" 2>/dev/null
  python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',$sp)); s.listen(); time.sleep(15)" & squatter=$!
  sleep 0.3
  KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=127.0.0.1:$PORT PODBRIDGE_CLEANUP_ON_EXIT=false "$E2E_BIN" serve --namespace "$NS" --instance e2e --policies "$ROOT/policies/baseline" --policies "$ROOT/tests/e2e/policies" >>"$WORK/podbridge.log" 2>&1 &
  PB_PID=$!
  for _ in $(seq 100); do [ "$(curl -s "127.0.0.1:$PORT/_ping")" = OK ] && break; sleep 0.1; done
  for _ in $(seq 50); do curl -s -m 2 "127.0.0.1:$kp/index.html" | grep -q kept-port && break; sleep 0.2; done
  expect_eq "$(curl -s -m 5 "127.0.0.1:$kp/index.html")" kept-port &&
    expect_eq "$(docker port keep 80/tcp | head -1)" "127.0.0.1:$kp" || { kill $squatter; return 1; }
  out=$(docker inspect squat --format '{{.State.Error}}')
  grep -q "published port 127.0.0.1:$sp for 80/tcp could not be bound again after a restart of podbridge" <<<"$out" ||
    { echo "State.Error: $out"; kill $squatter; return 1; }
  kill $squatter; wait $squatter 2>/dev/null
  for _ in $(seq 50); do curl -s -m 2 "127.0.0.1:$sp/index.html" | grep -q squat-port && break; sleep 0.2; done
  expect_eq "$(curl -s -m 5 "127.0.0.1:$sp/index.html")" squat-port &&
    expect_eq "$(docker inspect squat --format '{{.State.Error}}')" "" &&
    docker rm -f keep squat >/dev/null
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
t_binds_two_way() {
  # what the container writes to a writable bind is on this side once `docker run` returns (a
  # missing source is made, as Docker makes it); a read-only bind copies nothing back; a link
  # the container made comes back as a link, never followed
  rm -rf "$WORK/out" && mkdir -p "$WORK/out" && echo before >"$WORK/out/old" &&
    timeout 120 docker run --rm -v "$WORK/out:/out" -v "$WORK/made:/made" -v "$WORK/bind:/ro:ro" busybox \
      sh -c 'echo result > /out/new; mkdir -p /out/d; echo deep > /out/d/f; echo changed > /out/old; echo m > /made/f;
             echo no > /ro/x 2>/dev/null; ln -s /etc /out/etc-link' &&
    expect_eq "$(cat "$WORK/out/new" "$WORK/out/d/f" "$WORK/out/old" "$WORK/made/f" | tr '\n' ' ')" "result deep changed m " &&
    expect_eq "$(cat "$WORK/bind/x")" bound &&
    expect_eq "$(readlink "$WORK/out/etc-link")" /etc || return 1
  # docker wait reports the exit only after the copy; a stopped container copies back too
  local id; id=$(docker run -d -v "$WORK/out:/out" busybox sh -c 'trap "echo stopped > /out/stop; exit 0" TERM; while :; do sleep 0.1; done') || return 1
  sleep 2; docker stop "$id" >/dev/null && expect_eq "$(cat "$WORK/out/stop")" stopped &&
    expect_eq "$(docker inspect "$id" --format '{{.State.Status}} {{.State.ExitCode}}')" "exited 0" &&
    docker rm "$id" >/dev/null
}
t_cp_before_start() {
  docker create --name pre busybox sh -c 'cat /etc/pre.conf /opt/app/dd/f; ls /etc/passwd' >/dev/null || return 1
  echo pre-content >"$WORK/pre.conf" && mkdir -p "$WORK/ddx" && echo inner >"$WORK/ddx/f" &&
    docker cp "$WORK/pre.conf" pre:/etc && docker cp "$WORK/ddx" pre:/opt/app/dd &&
    expect_eq "$(timeout 120 docker start -a pre | tr '\n' ' ')" "pre-content inner /etc/passwd " &&
    docker rm pre >/dev/null
}
# --- named volumes: PersistentVolumeClaims, provisioned by the cluster's local-path provisioner ---
t_volume_survives_container() {
  docker volume create data >/dev/null &&
    expect_eq "$(docker volume inspect data --format '{{.Driver}} {{.Scope}}')" "local local" &&
    timeout 120 docker run --rm -v data:/d busybox sh -c 'echo one > /d/f' &&
    expect_eq "$(docker volume inspect data --format '{{.Status.Phase}}')" Bound &&
    expect_eq "$(timeout 120 docker run --rm -v data:/d busybox cat /d/f)" one
}
t_volume_shared() {
  # two containers at once: each sees what the other writes, while both run
  docker run -d --name vwriter -v data:/d busybox sh -c 'trap "exit 0" TERM; i=0; while :; do echo tick-$i > /d/live; i=$((i+1)); sleep 0.2; done' >/dev/null &&
    docker run -d --name vreader --mount type=volume,source=data,target=/shared busybox sh -c 'trap "exit 0" TERM; sleep 300 & wait' >/dev/null || return 1
  expect_eq "$(docker inspect vwriter vreader --format '{{.State.Running}}' | tr '\n' ' ')" "true true " || return 1
  local a b; a=$(docker exec vreader cat /shared/live) && sleep 1 && b=$(docker exec vreader cat /shared/live) || return 1
  grep -q '^tick-' <<<"$b" && [ "$a" != "$b" ] || { echo "reader saw [$a] then [$b]"; return 1; }
  docker exec vreader sh -c 'echo from-reader > /shared/back' && expect_eq "$(docker exec vwriter cat /d/back)" from-reader &&
    expect_eq "$(docker exec vreader cat /shared/f)" one
}
t_volume_rm_in_use() {
  local out; out=$(docker volume rm data 2>&1) && { echo "rm of a volume in use succeeded"; return 1; }
  grep -q 'volume is in use' <<<"$out" || { echo "$out"; return 1; }
  expect_eq "$(volume_claims | wc -l)" 1 &&
    docker rm -f vwriter vreader >/dev/null && docker volume rm data >/dev/null &&
    expect_eq "$(docker volume ls -q | grep -cx data)" 0 && wait_gone 30 volume_claims
}
t_volume_implicit_and_labels() {
  # a container creates the volumes it mounts; labels and options stay on the claim
  timeout 120 docker run --rm -v auto:/a busybox true &&
    expect_eq "$(docker volume ls -q | grep -x auto)" auto &&
    docker volume create --label team=blue -o size=2Gi labelled >/dev/null &&
    expect_eq "$(docker volume ls -q --filter label=team=blue)" labelled &&
    expect_eq "$(kc get pvc -l team=blue -o jsonpath='{.items[0].spec.resources.requests.storage}')" 2Gi &&
    expect_eq "$(docker volume inspect labelled --format '{{.Options.size}} {{.Labels.team}}')" "2Gi blue" &&
    expect_eq "$(docker volume prune -af --filter label=team=blue | grep -c labelled)" 1 || return 1
  # a volume created without a name is anonymous: prune takes it and leaves named ones, unless
  # the client speaks an API before 1.42 (then every unused volume goes, as Docker did)
  local anon; anon=$(docker volume create --label pr=1) && docker volume create --label pr=1 kept-named >/dev/null || return 1
  expect_eq "$(docker volume inspect "$anon" --format '{{json .Labels}}')" '{"com.docker.volume.anonymous":"","pr":"1"}' &&
    expect_eq "$(docker volume prune -f --filter label=pr=1 | grep -c -e "$anon" -e kept-named)" 1 &&
    expect_eq "$(docker volume ls -q --filter label=pr=1)" kept-named &&
    curl -s -X POST "127.0.0.1:$PORT/v1.41/volumes/prune?filters=%7B%22label%22%3A%5B%22pr%3D1%22%5D%7D" | grep -q '"VolumesDeleted":\["kept-named"\]' &&
    docker volume rm auto >/dev/null && wait_gone 30 volume_claims
}
t_volume_unbound_start_fails() {
  # a claim that cannot bind fails the start at once with the claim and Kubernetes' reason
  docker volume create -o storageclass=no-such-class stuck >/dev/null || return 1
  local t0=$SECONDS out; out=$(timeout 120 docker run --rm -v stuck:/s busybox true 2>&1) && { echo "started: $out"; return 1; }
  grep -q 'volume stuck: PersistentVolumeClaim podbridge-volume-stuck-[0-9a-f]* is not bound: ProvisioningFailed: .*no-such-class.* not found' <<<"$out" ||
    { echo "$out"; return 1; }
  [ $((SECONDS - t0)) -lt 30 ] || { echo "took $((SECONDS - t0))s"; return 1; }
  expect_eq "$(docker ps -aq | wc -l)" 0 && docker volume rm stuck >/dev/null && wait_gone 30 volume_claims
}
t_cleanup_on_exit() {
  # cleanup_on_exit (the default): stopping podbridge deletes everything of its instance,
  # volume claims included (here one still mounted by a running container).
  kill "$PB_PID"; wait "$PB_PID" 2>/dev/null
  KUBECONFIG=$KUBECONFIG_NS PODBRIDGE_LISTEN=127.0.0.1:$PORT PODBRIDGE_CLEANUP_ON_EXIT=true "$E2E_BIN" serve --namespace "$NS" --instance e2e --policies "$ROOT/policies/baseline" --policies "$ROOT/tests/e2e/policies" >>"$WORK/podbridge.log" 2>&1 &
  PB_PID=$!
  for _ in $(seq 100); do [ "$(curl -s "127.0.0.1:$PORT/_ping")" = OK ] && break; sleep 0.1; done
  docker run -d --name leftover -v kept:/k busybox sleep 300 >/dev/null || return 1
  expect_eq "$(kc get pods -l podbridge.io/instance=e2e -o name | wc -l)" 1 &&
    expect_eq "$(volume_claims | wc -l)" 1 || return 1
  kill "$PB_PID"; wait "$PB_PID" 2>/dev/null
  expect_eq "$(kc get pods,configmaps,services -l podbridge.io/instance=e2e -o name | wc -l)" 0 &&
    wait_gone 30 volume_claims
}
t_docker_py() {
  "$VENV/bin/python" "$ROOT/tests/e2e/docker_py_checks.py"
}
t_docker_py_daemon() {
  BIND_DIR=$WORK "$VENV/bin/python" "$ROOT/tests/e2e/docker_py_daemon.py"
}

check "ping headers and version prefixes" t_ping
check "docker version" t_version
check "docker run --rm busybox echo hi" t_run_rm
check "docker run exit code" t_run_exit_code
check "/metrics on the readiness listener: requests by route, containers, policy decisions" t_metrics
check "unix socket" t_unix_socket
check "start failure is reported and --rm cleans up" t_start_failure
check "an image the registry does not have: 404 at create, the pull says why" t_missing_image
check "image IDs: container Image resolves, ps shows the name asked for, a tag shares the ID" t_image_ids
check "restart policies: restarting between runs, on-failure:N stops after N" t_restart_policy
check "a failing healthcheck becomes unhealthy; top lists the container's processes" t_unhealthy
check "cp from an exited container is refused with the reason" t_cp_from_exited
check "a pod deleted behind podbridge's back: exited (137, die event), a finished one keeps its code" t_pod_deleted_behind_our_back
check "an OOM-killed container: exit 137, OOMKilled" t_oom_killed
check "exec: -u by name/uid/group, unknown user 126, -w made, -d runs, framing follows the start" t_exec_user_workdir
check "attach (docker-py): stream=False replays and ends; attach-and-cancel frees its slot" t_attach_py
check "update: restart policy stored, resources refused with the reason" t_update
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
check "docker exec -it / run -it: terminal size from the CLI and from resize" t_exec_resize
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
check "TLS registry with basic auth through a mirror (login, pull, inspect)" t_registry_tls_auth
check "networks and volumes" t_networks_volumes
check "network alias and name of a container without ports resolve" t_alias_dns
check "a Service the cluster refuses fails the start and leaves no pod" t_service_refused
check "legacy links: alias, variables, inspect, rm --link, missing and stopped targets" t_links
check "docker stats from the cgroup" t_stats
check "docker events" t_events
check "swarm and plugin routes answer as a daemon outside a swarm" t_swarm_plugins
check "network endpoints: connect, disconnect, inspect members, create refusals" t_network_endpoints
check "network, volume and image events; since and until" t_events_objects_since
check "podbridge restart keeps containers" t_restart_podbridge
check "SIGKILL restart keeps published ports; a taken one is reported, then bound again" t_restart_keeps_ports
check "published ports (-p 80)" t_ports
check "published UDP port (-p 127.0.0.1::9999/udp)" t_ports_udp
check "bind mounts (directory and file)" t_binds
check "bind mounts are two-way: written files come back at the exit" t_binds_two_way
check "docker cp before start" t_cp_before_start
check "docker-py" t_docker_py
check "docker-py exec, attach and binds as Docker answers them (issue 12)" t_docker_py_daemon
check "volume: data survives container removal" t_volume_survives_container
check "volume: shared by two running containers" t_volume_shared
check "volume: rm in use is refused, then removes the claim" t_volume_rm_in_use
check "volume: implicit create, labels and options on the claim, prune" t_volume_implicit_and_labels
check "volume: a claim that cannot bind fails start with the reason" t_volume_unbound_start_fails
check "leak accounting: no podbridge object left behind by the checks" leaks kc
check "cleanup on exit (volume claims too)" t_cleanup_on_exit

finish "$WORK/podbridge.log"
