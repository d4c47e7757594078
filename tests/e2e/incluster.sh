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
# set once the broker made the job pods' sessions (t_job_pod_and_session)
SESSION= SESSION_NS= SESSION2=
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
    log "kept: namespace $RUNNER, sessions $SESSION $SESSION2, the operator Deployment"
  else
    kubectl delete namespace "$RUNNER" --wait=false >/dev/null 2>&1
    # sessions first, while the operator still runs to finish them (their finalizer is its)
    kubectl delete bridgesession -l "podbridge.io/runner=$RUNNER" --wait=true --timeout=60s >/dev/null 2>&1
    kubectl delete bridgerunner "$RUNNER" >/dev/null 2>&1
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
    expect_eq "$(kubectl -n "$RUNNER" get secrets -o name | grep -c podbridge)" 0
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
  kubectl -n "$RUNNER" logs job3 -c podbridge | grep -q 'the session broker decides the project' ||
    { kubectl -n "$RUNNER" logs job3 -c podbridge | tail -5; return 1; }
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
check "the job's ServiceAccount cannot make, change or read sessions" t_job_cannot_touch_sessions
check "the broker refuses no token, an API token, a pod no runner covers" t_broker_refuses_strangers
check "a sidecar told another project refuses to start" t_project_cannot_be_chosen
check "one job reaches neither another's podbridge nor its session" t_jobs_are_apart
check "a privileged pod made with a session's token is refused by the webhook" t_webhook_refuses_direct_pods
check "the session namespace goes with the job pod" t_session_ends_with_the_job

finish
