#!/bin/bash
# End-to-end `docker build` (issue 11): images built from Dockerfiles by a builder pod on the test
# cluster (buildah from Debian, tests/e2e/builder-image.sh), pushed to the cluster's registry and
# run, with the docker CLI, docker-py, testcontainers-python/-node and compose, each with its
# defaults (DOCKER_HOST only; compose with DOCKER_BUILDKIT=0, as the README says). Then what a
# hostile job tries: a build that never ends (the client hangs up), another instance's tags, a
# privileged BuildKit container, a restricted policy; and the cluster is read afterwards.
#
#   tests/e2e/build.sh        build podbridge, run every check, print "N passed, M failed"
#
# The builder pod pushes to the registry at 10.244.0.1:5000 (tests/cluster: registry-node, the
# same storage as 127.0.0.1:5000), and the nodes pull the result from 127.0.0.1:5000.
# Environment: as run.sh (E2E_BIN, E2E_VENV, E2E_NODE_DIR, E2E_KEEP=1, E2E_ONLY=regex).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/offline.sh
. "$ROOT/tests/e2e/offline.sh"
# shellcheck source=tests/e2e/checks.sh
. "$ROOT/tests/e2e/checks.sh"
CLUSTER=$ROOT/tests/cluster
HERE=$ROOT/tests/e2e
CTX=$HERE/build
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${E2E_VENV:-${TMPDIR:-/tmp}/podbridge-e2e-venv}
NODE_DIR=${E2E_NODE_DIR:-${TMPDIR:-/tmp}/podbridge-e2e-node}
NS=pb-e2e-build-$$-$RANDOM
NS2=$NS-other
WORK=$(mktemp -d)
PASSED=0
FAILED=0
FAILURES=()

log() { printf '[e2e-build] %s\n' "$*" >&2; }
fail_setup() { echo "$*"; echo "0 passed, 1 failed"; exit 1; }

curl -sf -m 3 127.0.0.1:${PODBRIDGE_READY_PORT:-2476}/kubernetes-ready >/dev/null || fail_setup "no cluster: run tests/cluster/up.sh first"
if [ -z "${E2E_BIN:-}" ]; then
  log "building podbridge"
  (cd "$ROOT" && cargo build --quiet --offline 2>&1 || cargo build --quiet) >&2 || fail_setup "build failed"
  E2E_BIN=$CARGO_TARGET_DIR/debug/podbridge
fi
"$HERE/builder-image.sh" >&2 || fail_setup "builder image failed"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV" || fail_setup "venv failed"; fi
"$VENV/bin/python" -c 'import docker, testcontainers' 2>/dev/null ||
  "$VENV/bin/pip" install -q docker testcontainers >&2 || fail_setup "pip install testcontainers failed"
if [ ! -d "$NODE_DIR/node_modules/testcontainers" ]; then
  mkdir -p "$NODE_DIR" && (cd "$NODE_DIR" && npm init -y >/dev/null && npm install -q testcontainers@11 >&2) ||
    fail_setup "npm install testcontainers failed"
fi
cp "$HERE/build_tc_node.mjs" "$NODE_DIR/"
# compose v2 (docker-compose in the venv), installed as clients.sh installs it
COMPOSE=$VENV/bin/docker-compose
. "$HERE/compose_v2.sh"
install_compose_v2 "$VENV" "$WORK" || fail_setup "compose v2 install failed"

# --- a registry over TLS (a CA of this test's own) with basic auth, where pods reach it ---------
# (the node address of the pod network): the target of docker push, and a FROM source
TLS=$WORK/tlsreg
mkdir -p "$TLS"
TREG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("10.244.0.1",0)); print(s.getsockname()[1])')
TREG=10.244.0.1:$TREG_PORT
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=e2e-build-ca -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null &&
  openssl req -newkey rsa:2048 -nodes -subj /CN=10.244.0.1 -keyout "$TLS/tls.key" -out "$TLS/tls.csr" 2>/dev/null &&
  printf 'subjectAltName=IP:10.244.0.1\n' >"$TLS/ext" &&
  openssl x509 -req -in "$TLS/tls.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial -days 1 \
    -extfile "$TLS/ext" -out "$TLS/tls.crt" 2>/dev/null &&
  htpasswd -Bbn e2e s3cret >"$TLS/htpasswd" || fail_setup "TLS registry certificates failed"
cat >"$TLS/registry.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $TLS/storage}
http: {addr: "$TREG", tls: {certificate: $TLS/tls.crt, key: $TLS/tls.key}}
auth: {htpasswd: {realm: e2e, path: $TLS/htpasswd}}
YAML
docker-registry serve "$TLS/registry.yml" >"$TLS/registry.log" 2>&1 & TREG_PID=$!
export PODBRIDGE_REGISTRY_CA_FILES="[\"$TLS/ca.crt\"]"

# --- podbridge on loopback, with a build registry ------------------------------------------------
export PODBRIDGE_BUILD_IMAGE=docker.io/podbridge/buildah:1.28
export PODBRIDGE_BUILD_REGISTRY=10.244.0.1:5000/podbridge-builds
export PODBRIDGE_BUILD_PULL_REGISTRY=127.0.0.1:5000/podbridge-builds
export PODBRIDGE_BUILD_REGISTRY_INSECURE=true
serve() {  # serve NAMESPACE INSTANCE PORT LOG [extra env...]
  local ns=$1 instance=$2 port=$3 logfile=$4 kubeconfig; shift 4
  kubeconfig=$("$CLUSTER/namespace.sh" "$ns" 2>/dev/null | tail -1)
  [ -f "$kubeconfig" ] || return 1
  env KUBECONFIG="$kubeconfig" PODBRIDGE_LISTEN=127.0.0.1:$port PODBRIDGE_LOG=info,kube=warn \
    PODBRIDGE_READINESS_LISTEN=127.0.0.1:0 "$@" \
    "$E2E_BIN" serve --namespace "$ns" --instance "$instance" >"$logfile" 2>&1 &
  echo $!
}
PORT=$(free_port)
PB_PID=$(serve "$NS" e2e-build "$PORT" "$WORK/podbridge.log") || fail_setup "namespace.sh $NS failed"
PB2_PID=
export DOCKER_HOST=tcp://127.0.0.1:$PORT
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH DOCKER_BUILDKIT
mkdir -p "$WORK/docker-config/cli-plugins" && ln -s "$COMPOSE" "$WORK/docker-config/cli-plugins/docker-compose"
export DOCKER_CONFIG=$WORK/docker-config
# as after `docker login $TREG` (podbridge's /auth does not contact that registry here, lookups
# stay on loopback): the CLI sends these as X-Registry-Auth (push) and X-Registry-Config (build)
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$TREG" "$(printf e2e:s3cret | base64)" >"$DOCKER_CONFIG/config.json"
mkdir -p "$WORK/no-login" && echo '{}' >"$WORK/no-login/config.json"

cleanup() {
  kill "$PB_PID" $PB2_PID "$TREG_PID" 2>/dev/null; wait "$PB_PID" $PB2_PID "$TREG_PID" 2>/dev/null
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept namespace $NS, log $WORK/podbridge.log"
  else
    "$CLUSTER/namespace.sh" --delete "$NS" >/dev/null 2>&1
    "$CLUSTER/namespace.sh" --delete "$NS2" >/dev/null 2>&1
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$PORT/_ping")" = 200 ] && break
  sleep 0.1
done

kc() { KUBECONFIG=$CLUSTER_ADMIN kubectl -n "$NS" "$@"; }
CLUSTER_ADMIN=/var/lib/podbridge-cluster/admin.kubeconfig
builder_pods() { kc get pods -o name | grep build-; }

# --- docker CLI ----------------------------------------------------------------------------------
t_cli_build_run() {
  local start=$SECONDS
  docker build -t pbbuild-cli:1 -t pbbuild-cli:latest --build-arg GREETING=cli --target final \
    --label built.by=cli "$CTX/app" >"$WORK/build.out" 2>&1 || { cat "$WORK/build.out"; return 1; }
  log "first build: $((SECONDS - start))s"
  grep -q '^Successfully built [0-9a-f]\{12\}$' "$WORK/build.out" &&
    grep -q '^Successfully tagged pbbuild-cli:1$' "$WORK/build.out" &&
    grep -q '^Successfully tagged pbbuild-cli:latest$' "$WORK/build.out" || { cat "$WORK/build.out"; return 1; }
  local out; out=$(docker run --rm pbbuild-cli:1)
  expect_eq "$out" "cli from the builder stage
files: Dockerfile kept.txt
mode=built user=65534 dir=/srv"
}
t_cli_image_config() {
  # the image's real config, as inspect shows it; the pod pulls the pushed digest
  expect_eq "$(docker inspect pbbuild-cli:1 --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.User}} {{.Config.WorkingDir}} {{json .Config.ExposedPorts}} {{index .Config.Labels "org.example.purpose"}} {{index .Config.Labels "built.by"}} {{json .Config.Healthcheck.Test}}')" \
    '["sh","-c"] ["cat /srv/greeting; echo files: $(cat /srv/context-files); echo mode=$APP_MODE user=$(id -u) dir=$(pwd)"] nobody /srv {"8080/tcp":{}} podbridge-e2e cli ["CMD-SHELL","test -f /srv/greeting"]' &&
    docker inspect pbbuild-cli:1 --format '{{json .Config.Env}}' | grep -q 'APP_MODE=built' &&
    expect_eq "$(docker inspect pbbuild-cli:1 --format '{{.Id}}')" "$(docker inspect pbbuild-cli:latest --format '{{.Id}}')" &&
    grep -q '^pbbuild-cli:1 [0-9a-f]\{12\}$' <<<"$(docker images --format '{{.Repository}}:{{.Tag}} {{.ID}}')" &&
    # Size: the layers as the builder stored them (busybox alone is about 4 MB)
    [ "$(docker inspect pbbuild-cli:1 --format '{{.Size}}')" -gt 1000000 ] &&
    grep -q '^pbbuild-cli:1 [0-9.]*MB$' <<<"$(docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}')" &&
    docker run -d --name pbbuild-health pbbuild-cli:1 'sleep 60' >/dev/null &&
    expect_eq "$(kc get pods -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | grep podbridge-builds | head -1)" \
      "127.0.0.1:5000/podbridge-builds/$NS/e2e-build@$(curl -s -I -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://127.0.0.1:5000/v2/podbridge-builds/$NS/e2e-build/manifests/$(docker inspect pbbuild-cli:1 --format '{{.Id}}' | cut -c8-19)" |
        tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')" &&
    for _ in $(seq 30); do [ "$(docker inspect pbbuild-health --format '{{.State.Health.Status}}')" = healthy ] && break; sleep 1; done &&
    expect_eq "$(docker inspect pbbuild-health --format '{{.State.Health.Status}}')" healthy &&
    docker rm -f pbbuild-health >/dev/null
}
t_cli_target_and_tag() {
  docker build -q -t pbbuild-cli:debug --target debug "$CTX/app" >"$WORK/q.out" 2>"$WORK/q.err" || { cat "$WORK/q.out" "$WORK/q.err"; return 1; }
  grep -q '^sha256:[0-9a-f]\{64\}$' "$WORK/q.out" || { cat "$WORK/q.out"; return 1; }
  expect_eq "$(docker run --rm pbbuild-cli:debug)" "debug target" &&
    docker tag pbbuild-cli:debug pbbuild-cli:renamed &&
    expect_eq "$(docker run --rm pbbuild-cli:renamed)" "debug target" &&
    docker rmi pbbuild-cli:renamed >/dev/null &&
    expect_eq "$(docker images -q pbbuild-cli:debug | wc -l)" 1 &&
    ! docker image inspect pbbuild-cli:renamed >/dev/null 2>&1
}
t_cli_cache() {
  # the second build of the same context reuses every layer (registry-backed cache)
  local start=$SECONDS
  docker build -t pbbuild-cli:again --build-arg GREETING=cli --target final "$CTX/app" >"$WORK/again.out" 2>&1 ||
    { cat "$WORK/again.out"; return 1; }
  log "cached build: $((SECONDS - start))s"
  grep -q 'Using cache' "$WORK/again.out" || { cat "$WORK/again.out"; return 1; }
  expect_eq "$(docker inspect pbbuild-cli:again --format '{{.Id}}')" "$(docker inspect pbbuild-cli:1 --format '{{.Id}}')"
}
t_push_tls_auth() {
  # docker tag + docker push to a TLS registry with basic auth: refused without credentials,
  # pushed with them (the registry then serves the image under its config digest), and used back
  # as a FROM base (credentials from X-Registry-Config, the CA from registry_ca_files)
  local out id manifest
  docker tag pbbuild-cli:1 "$TREG/team/app:1" || return 1
  out=$(DOCKER_CONFIG=$WORK/no-login docker push "$TREG/team/app:1" 2>&1) && { echo "pushed without credentials: $out"; return 1; }
  grep -qi 'unauthorized\|authentication required' <<<"$out" || { echo "$out"; return 1; }
  docker push "$TREG/team/app:1" >"$WORK/push.out" 2>&1 || { cat "$WORK/push.out"; return 1; }
  grep -q "^1: digest: sha256:[0-9a-f]\{64\}" "$WORK/push.out" || { cat "$WORK/push.out"; return 1; }
  id=$(docker inspect pbbuild-cli:1 --format '{{.Id}}')
  manifest=$(curl -s --cacert "$TLS/ca.crt" -u e2e:s3cret -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "https://$TREG/v2/team/app/manifests/1")
  expect_eq "$(jq -r .config.digest <<<"$manifest")" "$id" || return 1
  printf 'ARG BASE\nFROM ${BASE}\nRUN cp /srv/greeting /tmp/pulled-back\nCMD ["cat /tmp/pulled-back"]\n' >"$WORK/Dockerfile.back"
  mkdir -p "$WORK/back" && cp "$WORK/Dockerfile.back" "$WORK/back/Dockerfile"
  docker build -t pbbuild-back:1 --build-arg "BASE=$TREG/team/app:1" "$WORK/back" >"$WORK/back.out" 2>&1 || { cat "$WORK/back.out"; return 1; }
  expect_eq "$(docker run --rm pbbuild-back:1)" "cli from the builder stage" || return 1
  # a pulled image, tagged for the registry, is pushed from its source
  docker pull busybox >/dev/null 2>&1 && docker tag busybox "$TREG/team/busybox:1" &&
    docker push "$TREG/team/busybox:1" >"$WORK/push2.out" 2>&1 || { cat "$WORK/push2.out"; return 1; }
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$TLS/ca.crt" -u e2e:s3cret \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "https://$TREG/v2/team/busybox/manifests/1")" 200 &&
    wait_gone 30 builder_pods
}
t_cli_failing_step() {
  local rc
  docker build -t pbbuild-cli:fail "$CTX/fail" >"$WORK/fail.out" 2>&1; rc=$?
  expect_eq "$rc" 7 && grep -q 'about to fail' "$WORK/fail.out" &&
    grep -q "The command '/bin/sh -c echo about to fail && exit 7' returned a non-zero code: 7" "$WORK/fail.out" ||
    { cat "$WORK/fail.out"; return 1; }
  ! docker image inspect pbbuild-cli:fail >/dev/null 2>&1 && wait_gone 30 builder_pods
}
t_from_built_image() {
  # FROM an image this session built: the builder loads it from this instance's repository
  docker build -q -t pbbuild-base:1 "$CTX/web" >/dev/null 2>"$WORK/base.err" || { cat "$WORK/base.err"; return 1; }
  docker build -t pbbuild-derived:1 "$CTX/derived" >"$WORK/derived.out" 2>&1 || { cat "$WORK/derived.out"; return 1; }
  expect_eq "$(docker run --rm pbbuild-derived:1)" derived
}
t_bad_dockerfiles() {
  # a Dockerfile that does not parse, a base image that does not exist: the CLI fails with the
  # builder's message, nothing is recorded, no builder is left
  local rc
  docker build -t pbbuild-bad:1 "$CTX/bad-syntax" >"$WORK/bad.out" 2>&1; rc=$?
  [ "$rc" != 0 ] && grep -q 'Unknown instruction: "NOTANINSTRUCTION"' "$WORK/bad.out" || { echo "rc=$rc"; cat "$WORK/bad.out"; return 1; }
  docker build -t pbbuild-bad:2 "$CTX/missing-base" >"$WORK/missing.out" 2>&1; rc=$?
  [ "$rc" != 0 ] && grep -q 'no-such-image-anywhere.*manifest unknown' "$WORK/missing.out" || { echo "rc=$rc"; cat "$WORK/missing.out"; return 1; }
  ! docker image inspect pbbuild-bad:1 >/dev/null 2>&1 && ! docker image inspect pbbuild-bad:2 >/dev/null 2>&1 &&
    wait_gone 30 builder_pods
}
t_cli_bad_requests() {
  local tarball=$WORK/ctx.tar
  tar -C "$CTX/app" -cf "$tarball" .
  expect_error 400 'within the build context' POST '/v1.51/build?dockerfile=../../etc/passwd' --data-binary "@$tarball" &&
    expect_error 400 'BuildKit' POST '/v1.51/build?version=2' --data-binary "@$tarball" &&
    expect_error 400 'context is empty' POST '/v1.51/build' &&
    expect_error 400 'could not be unpacked' POST '/v1.51/build' --data-binary 'not a tar archive at all' &&
    wait_gone 30 builder_pods
}

# --- other clients -------------------------------------------------------------------------------
t_docker_py() { timeout 300 "$VENV/bin/python" "$HERE/build_clients.py" docker-py "$CTX/app"; }
t_tc_python() { timeout 300 "$VENV/bin/python" "$HERE/build_clients.py" tc-python "$CTX/app" "$CTX/web"; }
t_tc_node() { (cd "$NODE_DIR" && timeout 300 node build_tc_node.mjs "$CTX/app" "$CTX/web"); }
t_compose_build() {
  local out rc=0
  out=$(DOCKER_BUILDKIT=0 timeout 300 "$COMPOSE" --ansi never -p pbbuild -f "$CTX/compose.yaml" up --build -d 2>&1) || { echo "$out"; rc=1; }
  if [ "$rc" = 0 ]; then
    # the logs are read whole, then searched: `docker logs | grep -q` under pipefail fails
    # whenever grep stops reading before the CLI has written everything (SIGPIPE)
    local logs=""
    for _ in $(seq 60); do logs=$(docker logs pbbuild-app-1 2>&1); grep -q 'reached-web' <<<"$logs" && break; sleep 1; done
    expect_eq "$(docker inspect pbbuild-app:compose --format '{{.Config.User}}')" nobody &&
      grep -q 'compose from the builder stage' <<<"$logs" &&
      grep -q 'hello from the built web image' <<<"$logs" &&
      grep -q 'reached-web' <<<"$logs" || { echo "$logs"; rc=1; }
  fi
  timeout 120 "$COMPOSE" -p pbbuild -f "$CTX/compose.yaml" down --rmi all >"$WORK/down.out" 2>&1 || { cat "$WORK/down.out"; rc=1; }
  [ "$rc" = 0 ] && ! docker image inspect pbbuild-app:compose >/dev/null 2>&1 && ! docker image inspect pbbuild-web:compose >/dev/null 2>&1
}

# --- hostile ------------------------------------------------------------------------------------
t_hang_up_ends_the_build() {
  # a client that leaves mid-build: its builder pod is deleted, nothing is recorded
  tar -C "$CTX/slow" -cf "$WORK/slow.tar" .
  curl -s -m 15 -o /dev/null -X POST -H 'Content-Type: application/x-tar' --data-binary "@$WORK/slow.tar" \
    "127.0.0.1:$PORT/v1.51/build?t=pbbuild-slow" || true
  wait_gone 60 builder_pods && ! docker image inspect pbbuild-slow >/dev/null 2>&1
}
t_tags_stay_in_their_session() {
  # another instance (another job's namespace) neither sees nor runs this one's tags
  local port2; port2=$(free_port)
  PB2_PID=$(serve "$NS2" e2e-build-other "$port2" "$WORK/podbridge2.log" PODBRIDGE_MAX_ARCHIVE_BYTES=65536)
  for _ in $(seq 100); do curl -sf -o /dev/null "127.0.0.1:$port2/_ping" && break; sleep 0.1; done
  local out
  out=$(DOCKER_HOST=tcp://127.0.0.1:$port2 docker run --rm pbbuild-cli:1 2>&1) && { echo "ran: $out"; return 1; }
  grep -q 'No such image\|not found\|manifest unknown' <<<"$out" || { echo "$out"; return 1; }
  expect_eq "$(DOCKER_HOST=tcp://127.0.0.1:$port2 docker images -q pbbuild-cli | wc -l)" 0 || return 1
  # that instance caps bodies at 64 KiB: a larger context is Docker's 413, and no builder stays
  head -c 200000 /dev/urandom >"$WORK/big.bin" && tar -C "$WORK" -cf "$WORK/big.tar" big.bin -C "$CTX/app" Dockerfile &&
    API_PORT=$port2 expect_error 413 'larger than 65536 bytes.*max_archive_bytes' POST '/v1.51/build?t=big' --data-binary "@$WORK/big.tar" &&
    wait_gone 30 sh -c "KUBECONFIG=$CLUSTER_ADMIN kubectl -n $NS2 get pods -o name"
}
t_buildkit_container_refused() {
  # buildx's docker-container driver: the policy says what to do instead (the image stands in
  # for moby/buildkit in the local registry, so the request reaches the policy as in a cluster
  # that can pull it)
  python3 "$CLUSTER/regpush.py" "$(ls /var/cache/podbridge/images/busybox-*.tar | head -1)" http://127.0.0.1:5000 \
    moby/buildkit:buildx-stable-1 "$WORK/blobs" >/dev/null || return 1
  local out; out=$(docker run -d --privileged --name buildx_buildkit_default moby/buildkit:buildx-stable-1 2>&1) && { echo "$out"; return 1; }
  grep -q 'DOCKER_BUILDKIT=0' <<<"$out" || { echo "$out"; return 1; }
}
t_restricted_refuses_builds() {
  # under policies/restricted the builder (buildah runs as root) is refused before anything runs
  local port3 ns3=$NS-restricted pid3 got
  port3=$(free_port)
  pid3=$(serve "$ns3" e2e-build-restricted "$port3" "$WORK/podbridge3.log" PODBRIDGE_POLICIES='["'"$ROOT"'/policies/baseline","'"$ROOT"'/policies/restricted"]')
  for _ in $(seq 100); do curl -sf -o /dev/null "127.0.0.1:$port3/_ping" && break; sleep 0.1; done
  tar -C "$CTX/app" -cf "$WORK/ctx.tar" .
  got=$(API_PORT=$port3 expect_error 403 'docker build blocked by policy:\n  pod-security/standard .*restricted' POST '/v1.51/build?t=x' --data-binary "@$WORK/ctx.tar"); local rc=$?
  kill "$pid3"; wait "$pid3" 2>/dev/null
  local pods; pods=$(KUBECONFIG=$CLUSTER_ADMIN kubectl -n "$ns3" get pods -o name 2>&1)
  "$CLUSTER/namespace.sh" --delete "$ns3" >/dev/null 2>&1
  [ "$rc" = 0 ] || { echo "$got"; return 1; }
  expect_eq "$pods" ""
}
t_unschedulable_builder() {
  # a policy places builders on nodes that do not exist: the build fails after the start timeout
  # with the scheduler's reason, and the builder pod is gone
  local port4 ns4=$NS-unsched pid4 got
  mkdir -p "$WORK/policy-unsched"
  cat >"$WORK/policy-unsched/85-build-placement.yaml" <<'YAML'
apiVersion: podbridge.io/v1alpha1
kind: Policy
metadata: {name: build-placement}
spec:
  rules:
  - name: builders-on-build-nodes
    match:
      any:
      - purposes: [build]
    mutate:
      setDefaults:
        /spec/nodeSelector/podbridge-e2e-pool: builders
YAML
  port4=$(free_port)
  pid4=$(serve "$ns4" e2e-build-unsched "$port4" "$WORK/podbridge4.log" PODBRIDGE_START_TIMEOUT_SECONDS=5 \
    PODBRIDGE_POLICIES='["'"$ROOT"'/policies/baseline","'"$WORK"'/policy-unsched"]')
  for _ in $(seq 100); do curl -sf -o /dev/null "127.0.0.1:$port4/_ping" && break; sleep 0.1; done
  tar -C "$CTX/app" -cf "$WORK/ctx.tar" .
  got=$(DOCKER_HOST=tcp://127.0.0.1:$port4 docker build -t unsched "$CTX/app" 2>&1); local rc=$?
  sleep 1
  local pods; pods=$(KUBECONFIG=$CLUSTER_ADMIN kubectl -n "$ns4" get pods -o name 2>&1)
  kill "$pid4"; wait "$pid4" 2>/dev/null
  "$CLUSTER/namespace.sh" --delete "$ns4" >/dev/null 2>&1
  [ "$rc" != 0 ] || { echo "build succeeded: $got"; return 1; }
  grep -q "did not start within 5s: Unschedulable: 0/1 nodes are available: .*node" <<<"$got" || { echo "$got"; return 1; }
  expect_eq "$pods" ""
}
t_builder_pod_shape() {
  # the builder as the chain left it: no privilege, no added capability, no token, the named
  # seccomp exception only (read from a build held open)
  tar -C "$CTX/slow" -cf "$WORK/slow.tar" .
  curl -s -m 40 -o /dev/null -X POST --data-binary "@$WORK/slow.tar" "127.0.0.1:$PORT/v1.51/build" &
  local curl_pid=$! pod= spec
  for _ in $(seq 60); do
    pod=$(kc get pods -o json | jq -c '.items[] | select(.metadata.name | test("build-"))')
    [ -n "$pod" ] && break; sleep 0.5
  done
  kill "$curl_pid" 2>/dev/null; wait "$curl_pid" 2>/dev/null
  [ -n "$pod" ] || { echo "no builder pod seen"; return 1; }
  spec=$(jq -c .spec <<<"$pod")
  jq -e '.automountServiceAccountToken == false and (.securityContext.seccompProfile == null)
    and ([.containers[].securityContext.privileged // false] | any | not)
    and ([.containers[].securityContext.allowPrivilegeEscalation] | all(. == false))
    and ([.containers[].securityContext.capabilities.add // [] | length] | add == 0)
    and (.hostNetwork // false | not) and (.hostPID // false | not)' <<<"$spec" >/dev/null ||
    { echo "$spec"; return 1; }
  jq -r '.metadata.annotations["podbridge.io/applied-rules"]' <<<"$pod" | tr ',' '\n' | grep -qx 'builds/builder-seccomp' ||
    { echo "no builds/builder-seccomp in the applied rules:"; jq .metadata.annotations <<<"$pod"; return 1; }
  wait_gone 60 builder_pods
}
t_save_load() {
  # docker save of a built and a pulled image into one archive, read by skopeo (an independent
  # reader of Docker's format); the built image removed, then docker load brings both back, the
  # built one under its ID, and it runs; docker-py's save/load; then what a hostile job loads
  local id out
  id=$(docker inspect pbbuild-cli:1 --format '{{.Id}}')
  docker pull busybox >/dev/null 2>&1 || return 1
  docker save -o "$WORK/saved.tar" pbbuild-cli:1 busybox || return 1
  tar -xOf "$WORK/saved.tar" manifest.json | jq -e --arg id "${id#sha256:}" \
    '([.[].RepoTags[]] | sort == ["busybox:latest","pbbuild-cli:1"]) and ([.[].Config] | index($id + ".json") != null)' >/dev/null ||
    { tar -tvf "$WORK/saved.tar"; tar -xOf "$WORK/saved.tar" manifest.json; return 1; }
  expect_eq "$(skopeo inspect --config docker-archive:"$WORK/saved.tar":pbbuild-cli:1 | jq -r '.config.User + " " + .config.WorkingDir')" "nobody /srv" &&
    skopeo inspect docker-archive:"$WORK/saved.tar":busybox:latest >/dev/null || return 1
  docker rmi pbbuild-cli:1 >/dev/null && ! docker image inspect pbbuild-cli:1 >/dev/null 2>&1 || return 1
  out=$(docker load -i "$WORK/saved.tar" 2>&1) || { echo "$out"; return 1; }
  grep -qx 'Loaded image: pbbuild-cli:1' <<<"$out" && grep -qx 'Loaded image: busybox:latest' <<<"$out" || { echo "$out"; return 1; }
  expect_eq "$(docker inspect pbbuild-cli:1 --format '{{.Id}}')" "$id" &&
    expect_eq "$(docker run --rm pbbuild-cli:1 | head -1)" "cli from the builder stage" || return 1
  # docker-py: Image.save() and images.load()
  "$VENV/bin/python" - <<'PY' || return 1
import docker
client = docker.from_env()
image = client.images.get("pbbuild-cli:debug")
data = b"".join(image.save(named=True))
client.images.remove("pbbuild-cli:debug")
loaded = client.images.load(data)
assert [i.id for i in loaded] == [image.id], (loaded, image.id)
assert "pbbuild-cli:debug" in loaded[0].tags, loaded[0].tags
out = client.containers.run("pbbuild-cli:debug", remove=True)
assert out.strip() == b"debug target", out
PY
  # hostile: not an archive, a manifest naming nothing real, a tag that is not one: errors in
  # the stream, nothing recorded, no builder left
  out=$(printf 'not a tar archive' | docker load 2>&1) && { echo "loaded: $out"; return 1; }
  grep -q 'manifest.json' <<<"$out" || { echo "$out"; return 1; }
  mkdir -p "$WORK/evil" && printf '[{"Config":"../../etc/passwd","RepoTags":["evil:1"],"Layers":["/etc/shadow"]}]' >"$WORK/evil/manifest.json" &&
    tar -C "$WORK/evil" -cf "$WORK/evil.tar" manifest.json || return 1
  out=$(docker load -i "$WORK/evil.tar" 2>&1) && { echo "loaded: $out"; return 1; }
  printf '[{"Config":"a.json","RepoTags":["Not A Tag"],"Layers":[]}]' >"$WORK/evil/manifest.json" &&
    tar -C "$WORK/evil" -cf "$WORK/evil2.tar" manifest.json || return 1
  out=$(docker load -i "$WORK/evil2.tar" 2>&1) && { echo "loaded: $out"; return 1; }
  grep -q 'Not A Tag' <<<"$out" || { echo "$out"; return 1; }
  ! docker image inspect evil:1 >/dev/null 2>&1 && expect_error 404 'No such image' GET '/v1.51/images/get?names=no-such-image-here' &&
    wait_gone 30 builder_pods
}
t_remove_built_images() {
  # what the checks built and kept (testcontainers-node leaves its localhost/<uuid> tags):
  # removed by ID, their records go with them
  grep -q '^pbbuild' <<<"$(docker images --format '{{.Repository}}')" || { echo "no built image listed"; return 1; }
  local ids; ids=$(docker images -q | sort -u)
  docker rmi -f $ids >/dev/null &&
    expect_eq "$(docker images --format '{{.Repository}}' | grep -c '^pbbuild')" 0 &&
    wait_gone 10 kc get configmaps -l podbridge.io/role=built-image -o name
}

check "docker build (multi-stage, args, target, .dockerignore) then docker run" t_cli_build_run
check "built image: inspect shows its config, the pod pulls the pushed digest, healthcheck" t_cli_image_config
check "docker build -q --target, docker tag, docker rmi of a tag" t_cli_target_and_tag
check "second build reuses the cache" t_cli_cache
check "docker push to a TLS registry with auth, used back as a FROM base; a pulled image pushed" t_push_tls_auth
check "failing RUN: exit code and Docker's message" t_cli_failing_step
check "FROM an image built earlier in the session" t_from_built_image
check "bad build requests: Docker's status and message, no builder left" t_cli_bad_requests
check "a Dockerfile that does not parse, a base image that does not exist" t_bad_dockerfiles
check "docker-py images.build, run, BuildError, remove" t_docker_py
check "testcontainers-python DockerImage" t_tc_python
check "testcontainers-node GenericContainer.fromDockerfile" t_tc_node
check "docker save (built and pulled) read by skopeo; docker rmi; docker load runs it; docker-py; hostile archives" t_save_load
check "compose up --build (DOCKER_BUILDKIT=0): two built services, one reaching the other; down --rmi all" t_compose_build
check "builder pod shape: no privilege, no token, named seccomp exception" t_builder_pod_shape
check "client hang-up ends the build and removes its builder" t_hang_up_ends_the_build
check "tags stay in their session (another instance cannot run them); a context over its cap is 413" t_tags_stay_in_their_session
check "privileged BuildKit container refused with the way out" t_buildkit_container_refused
check "restricted policy refuses the builder (403, nothing applied)" t_restricted_refuses_builds
check "a builder no node can take: the scheduler's reason after the start timeout, no builder left" t_unschedulable_builder
check "docker rmi of every built image" t_remove_built_images
check "leak accounting: no podbridge object left behind by the checks" leaks kc

finish "$WORK/podbridge.log"
