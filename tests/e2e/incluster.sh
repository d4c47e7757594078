#!/bin/bash
# End-to-end, deployed as users deploy it (issue 10): podbridge's image made from the release
# binary (deploy/image/build.sh), the operator as a Deployment from `kubectl apply -k`, and a job
# pod shaped like GitLab's Kubernetes executor: a build container with the docker CLI and
# podbridge as its sidecar on 127.0.0.1:2475, in the session namespace the in-cluster operator
# made for it. Then what the job container can and cannot reach, and the session's end with the
# job pod.
#
#   tests/e2e/incluster.sh        print "N passed, M failed"
#
# Environment: E2E_KEEP=1 keeps what was made; E2E_ONLY=regex runs a subset.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/checks.sh
. "$ROOT/tests/e2e/checks.sh"
CLUSTER=$ROOT/tests/cluster
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export KUBECONFIG=/var/lib/podbridge-cluster/admin.kubeconfig
RUNNER=pb-e2e-runner-$$
SESSION=incluster-$$
SESSION_NS=pb-$SESSION
WORK=$(mktemp -d)
PASSED=0
FAILED=0
FAILURES=()

log() { printf '[e2e-incluster] %s\n' "$*" >&2; }
fail_setup() { echo "$*"; echo "0 passed, 1 failed"; exit 1; }

curl -sf -m 3 127.0.0.1:${PODBRIDGE_READY_PORT:-2476}/kubernetes-ready >/dev/null || fail_setup "no cluster: run tests/cluster/up.sh first"

# --- images: podbridge's own, and a job image (busybox + the docker CLI, a static binary) ------
log "building podbridge's image (release build)"
"$ROOT/deploy/image/build.sh" --import --push 127.0.0.1:5000 >&2 || fail_setup "deploy/image/build.sh failed"
job_image() {
  local r=$WORK/job-rootfs
  mkdir -p "$r/bin" "$r/usr/local/bin" "$r/tmp" "$r/etc" "$r/root"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  cp "$(command -v docker)" "$r/usr/local/bin/docker"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
  python3 "$CLUSTER/mkimage.py" "$r" "$WORK/job.tar" --tag docker.io/podbridge/ci-job:dev --cmd '["sh"]' &&
    ctr -n k8s.io images import "$WORK/job.tar" >/dev/null &&
    python3 "$CLUSTER/regpush.py" "$WORK/job.tar" http://127.0.0.1:5000 podbridge/ci-job:dev "$WORK/blobs" >/dev/null
}
job_image || fail_setup "job image failed"

cleanup() {
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept: namespace $RUNNER, session $SESSION, the operator Deployment"
  else
    kubectl delete namespace "$RUNNER" --wait=false >/dev/null 2>&1
    # sessions first, while the operator still runs to finish them (their finalizer is its)
    kubectl delete bridgesession "$SESSION" --wait=true --timeout=60s >/dev/null 2>&1
    kubectl delete -k "$ROOT/tests/e2e/incluster" --wait=true --timeout=120s >/dev/null 2>&1
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# --- the operator, deployed ---------------------------------------------------------------------
t_operator_deployment() {
  kubectl apply -k "$ROOT/tests/e2e/incluster" >"$WORK/apply.out" 2>&1 || { cat "$WORK/apply.out"; return 1; }
  kubectl -n podbridge-system rollout status deployment/podbridge-operator --timeout=120s >/dev/null 2>&1 ||
    { kubectl -n podbridge-system get pods -o wide; kubectl -n podbridge-system logs deployment/podbridge-operator --tail=20; return 1; }
  # non-root, read-only root filesystem, as the manifest asks
  expect_eq "$(kubectl -n podbridge-system get pods -l app.kubernetes.io/name=podbridge-operator \
    -o jsonpath='{.items[0].spec.securityContext.runAsUser} {.items[0].spec.containers[0].securityContext.readOnlyRootFilesystem}')" "65532 true"
}

# --- a GitLab-shaped job pod with podbridge beside it ------------------------------------------
job_pod() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: job
  namespace: $RUNNER
  labels: {podbridge.io/ci-job: "$$"}
spec:
  restartPolicy: Never
  # the job container gets no Kubernetes token; the session's credentials reach only the
  # podbridge container (a volume mounted there alone)
  automountServiceAccountToken: false
  securityContext: {fsGroup: 65532}
  volumes:
  - name: session
    secret: {secretName: podbridge-kubeconfig-$SESSION, defaultMode: 0440}
  containers:
  - name: build
    image: docker.io/podbridge/ci-job:dev
    command: [sh, -c, "sleep 900"]
    env: [{name: DOCKER_HOST, value: "tcp://127.0.0.1:2475"}]
    resources: {requests: {cpu: 10m, memory: 32Mi}}
  - name: podbridge
    image: docker.io/podbridge/podbridge:dev
    args: [serve, --namespace, $SESSION_NS, --instance, job-$$]
    env:
    - {name: KUBECONFIG, value: /var/run/podbridge/kubeconfig}
    - {name: PODBRIDGE_LISTEN, value: "127.0.0.1:2475"}
    - {name: PODBRIDGE_READINESS_LISTEN, value: "127.0.0.1:2477"}
    - {name: PODBRIDGE_LOG, value: "info,kube=warn"}
    - {name: PODBRIDGE_REGISTRY_LOOKUP, value: "off"}
    volumeMounts: [{name: session, mountPath: /var/run/podbridge, readOnly: true}]
    resources: {requests: {cpu: 10m, memory: 32Mi}}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
YAML
}
in_job() { kubectl -n "$RUNNER" exec job -c build -- "$@"; }
t_job_pod_and_session() {
  kubectl create namespace "$RUNNER" >/dev/null || return 1
  local t0; t0=$(date +%s%N)
  job_pod | kubectl apply -f - >/dev/null || return 1
  # the platform (here the test, as the runner would) names the job pod in a session
  local uid; uid=$(kubectl -n "$RUNNER" get pod job -o jsonpath='{.metadata.uid}')
  cat <<YAML | kubectl apply -f - >/dev/null || return 1
apiVersion: podbridge.io/v1alpha1
kind: BridgeSession
metadata: {name: $SESSION}
spec:
  project: e2e/incluster
  jobId: "$$"
  jobPod: {namespace: $RUNNER, name: job, uid: $uid}
  ttlSeconds: 900
YAML
  kubectl wait --for=condition=Ready "pod/job" -n "$RUNNER" --timeout=180s >/dev/null ||
    { kubectl -n "$RUNNER" describe pod job | tail -15; kubectl get bridgesession "$SESSION" -o yaml | tail -20; return 1; }
  local i
  for i in $(seq 120); do in_job wget -qO- 127.0.0.1:2477/docker-ready >/dev/null 2>&1 && break; sleep 0.5; done
  in_job wget -qO- 127.0.0.1:2477/docker-ready >/dev/null 2>&1 ||
    { kubectl -n "$RUNNER" logs job -c podbridge --tail=20; return 1; }
  log "job pod applied -> session Ready and podbridge docker-ready: $(( ($(date +%s%N) - t0) / 1000000 )) ms (includes the kubelet's retry of the Secret volume)"
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
  # no token in the job container, no credentials over HTTP, no Secret readable without one
  in_job sh -c '! ls /var/run/secrets/kubernetes.io/serviceaccount/token 2>/dev/null && ! ls /var/run/podbridge 2>/dev/null' || { echo "credentials visible"; return 1; }
  local code; code=$(in_job sh -c 'wget -S -qO- 127.0.0.1:2477/kubeconfig 2>&1 | head -1')
  grep -q '404\|Not Found' <<<"$code" || { echo "readiness /kubeconfig: $code"; return 1; }
  # the policy shaped what the job ran (the Docker API, not the pod spec, is all it has)
  local out; out=$(in_job docker run --rm --privileged busybox true 2>&1) && { echo "privileged ran: $out"; return 1; }
  grep -q 'blocked by policy' <<<"$out" || { echo "$out"; return 1; }
}
t_session_ends_with_the_job() {
  kubectl -n "$RUNNER" delete pod job --wait=false >/dev/null
  wait_gone 120 sh -c "kubectl get namespace $SESSION_NS -o name 2>/dev/null" &&
    wait_gone 30 sh -c "kubectl get bridgesession $SESSION -o name 2>/dev/null"
}

check "operator Deployment Ready from kubectl apply -k (non-root, read-only root)" t_operator_deployment
check "job pod with podbridge as sidecar, session from the in-cluster operator" t_job_pod_and_session
check "docker run from the job container, inside the cluster" t_docker_run_in_cluster
check "published port reached from the job container" t_published_port_in_pod
check "the job container holds no credentials; the policy applies" t_job_holds_no_credentials
check "the session namespace goes with the job pod" t_session_ends_with_the_job

finish
