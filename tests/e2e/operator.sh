#!/usr/bin/env bash
# operator.sh - end-to-end test of `podbridge operator` on the real test cluster.
#
# Builds podbridge, installs the BridgeSession CRD, runs the operator against the admin kubeconfig
# and checks: two concurrent sessions get isolated namespaces with the objects and a working,
# namespace-limited kubeconfig; the same pod and Service names in both; `podbridge serve` with each
# session's kubeconfig and the same Docker container name in both; deleting a session removes
# its namespace only; TTL expiry; job pod deletion; operator restart; the readiness endpoints; the
# operator's /metrics; the admission webhook (served by the operator as a host process at
# https://10.244.0.1:<port>, registered by URL): hostile pods and NodePort Services refused with
# the session's kubeconfig, compliant ones and everything `podbridge serve` writes admitted, other
# namespaces untouched, the caBundle verifying the served certificate; leader election (two
# operators, one reconciles, the other takes over when the leader is killed).
# Environment: E2E_ONLY=regex runs only the sections whose title matches (the build and the two
# sessions always run; "readiness" needs "Docker API", "deleting" needs "same names").
# Closing line: "N passed, M failed"; exit status non-zero on any failure. Cleans up after itself,
# the webhook configuration included (a Fail webhook pointing at a stopped process would block
# this run's session namespaces).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
# shellcheck source=tests/e2e/offline.sh
. tests/e2e/offline.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

admin=$(tests/cluster/up.sh 2>/dev/null | tail -n 1)
[ -f "$admin" ] || { echo "no cluster (tests/cluster/up.sh failed)"; echo "0 passed, 1 failed"; exit 1; }
export KUBECONFIG=$admin
run=op$(printf '%04x' $((RANDOM % 65536)))
tmp=$(mktemp -d)
bin=$CARGO_TARGET_DIR/debug/podbridge
jobs_ns=pb-test-jobs-$run
# the session broker's runner (a BridgeRunner) and its namespace
runner=$run-runner
runner_ns=pb-test-runner-$run
# the leadership Lease's namespace (the in-cluster operator's is podbridge-system: never shared)
lease_ns=pb-test-leader-$run
declare -A elected_pid=()
operator_pid=
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# the admission webhook: on the cni0 address, which the API server reaches
webhook_host=10.244.0.1
webhook_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("10.244.0.1",0)); print(s.getsockname()[1])')
operator_id=e2e-$run
webhook_config=podbridge-sessions-$operator_id
tls_ns=pb-test-op-$run
readiness_pid=
declare -A serve_pid=()
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { local desc=$1; shift; if "$@" >"$tmp/out" 2>&1; then ok "$desc"; else fail "$desc"; sed 's/^/     /' "$tmp/out" | tail -n 5; fi; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
# want SECTION: whether E2E_ONLY (a regex over section titles) selects it
want() { [ -z "${E2E_ONLY:-}" ] || [[ $1 =~ $E2E_ONLY ]]; }

# poll CMD every 0.2 s for up to SECONDS
poll() { local seconds=$1 i; shift; for ((i = 0; i < seconds * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
phase() { kubectl get bridgesession "$1" -o jsonpath='{.status.phase}' 2>/dev/null; }
is_ready() { [ "$(phase "$1")" = Ready ]; }
ns_gone() { ! kubectl get namespace "$1" >/dev/null 2>&1; }
session_gone() { ! kubectl get bridgesession "$1" >/dev/null 2>&1; }
# operator_metric SERIES: its value on the operator's /metrics, 0 when absent
operator_metric() { curl -s -m 5 "http://127.0.0.1:$metrics_port/metrics" | awk -v s="$1" '$1 == s { v = $2 } END { print v + 0 }'; }
operator_metrics_moved() {
    curl -s -m 5 "http://127.0.0.1:$metrics_port/metrics" | grep -qx '# TYPE podbridge_operator_sessions gauge' &&
        [ "$(operator_metric 'podbridge_operator_sessions{phase="Ready"}')" -ge 2 ] &&
        [ "$(operator_metric 'podbridge_operator_reconciles_total{result="success"}')" -ge 2 ]
}
pod_running() { [ "$(kubectl --kubeconfig "$1" get pod "$2" -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]; }

start_operator() {
    "$bin" operator --metrics-listen "127.0.0.1:$metrics_port" --operator-id "$operator_id" \
        --webhook-listen "$webhook_host:$webhook_port" --webhook-url "https://$webhook_host:$webhook_port" \
        --tls-secret "$tls_ns/podbridge-operator-tls" --tls-extra-san "$webhook_host" \
        >>"$tmp/operator.log" 2>&1 &
    operator_pid=$!
}
stop_operator() {
    [ -n "$operator_pid" ] || return 0
    kill "$operator_pid" 2>/dev/null
    wait "$operator_pid" 2>/dev/null
    operator_pid=
}

session() { # NAME [extra spec lines...]
    local name=$1; shift
    {
        printf 'apiVersion: podbridge.io/v1alpha1\nkind: BridgeSession\n'
        printf 'metadata: {name: %s, labels: {podbridge.test/e2e: "%s"}}\n' "$name" "$run"
        printf 'spec:\n  project: e2e/%s\n  jobId: "%s"\n' "$run" "$name"
        for line in "$@"; do printf '  %s\n' "$line"; done
    } | kubectl apply -f - >/dev/null
}

kubeconfig_of() { # SESSION FILE: the kubeconfig from the Secret the status names
    local ns name
    ns=$(kubectl get bridgesession "$1" -o jsonpath='{.status.kubeconfigSecret.namespace}')
    name=$(kubectl get bridgesession "$1" -o jsonpath='{.status.kubeconfigSecret.name}')
    kubectl -n "$ns" get secret "$name" -o jsonpath='{.data.kubeconfig}' | base64 -d >"$2"
    [ -s "$2" ]
}

cleanup() {
    [ -n "$readiness_pid" ] && kill "$readiness_pid" 2>/dev/null
    for p in "${serve_pid[@]:-}" "${elected_pid[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    if [ -z "$operator_pid" ]; then start_operator; fi
    kubectl delete bridgesession -l "podbridge.test/e2e=$run" --wait=false >/dev/null 2>&1
    kubectl delete bridgesession -l "podbridge.io/runner=$runner" --wait=false >/dev/null 2>&1
    kubectl delete bridgerunner "$runner" --ignore-not-found >/dev/null 2>&1
    kubectl delete namespace "$jobs_ns" "$runner_ns" --wait=false >/dev/null 2>&1
    # the operator removes the namespaces and finalizers; give it a moment, then force
    poll 60 bash -c "! kubectl get bridgesession -l podbridge.test/e2e=$run -o name 2>/dev/null | grep -q ."
    poll 60 bash -c "! kubectl get bridgesession -l podbridge.io/runner=$runner -o name 2>/dev/null | grep -q ."
    for s in $(kubectl get bridgesession -l "podbridge.test/e2e=$run" -o name 2>/dev/null) \
        $(kubectl get bridgesession -l "podbridge.io/runner=$runner" -o name 2>/dev/null); do
        kubectl patch "$s" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
    done
    stop_operator
    # the operator is stopped: nothing recreates the webhook configuration now
    kubectl delete validatingwebhookconfiguration "$webhook_config" --ignore-not-found >/dev/null 2>&1 ||
        echo "WARNING: could not delete validatingwebhookconfiguration $webhook_config: delete it by hand"
    kubectl delete namespace "$tls_ns" --wait=false >/dev/null 2>&1
    for ns in $(kubectl get ns -o name | grep "namespace/pb-$run-"); do
        kubectl delete "$ns" --wait=false >/dev/null 2>&1
    done
    kubectl delete namespace "$lease_ns" --wait=false >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== build and install"
check "cargo build" cargo build --quiet
check "CRD applies (deploy/base/crd.yaml)" kubectl apply -f deploy/base/crd.yaml
kubectl wait --for condition=established crd/bridgesessions.podbridge.io crd/bridgerunners.podbridge.io --timeout=30s >/dev/null
kubectl create namespace "$tls_ns" >/dev/null
# overlay_runners OVERLAY: the BridgeRunners an overlay ships, as kustomize builds them
overlay_runners() {
    kubectl kustomize "deploy/overlays/$1" |
        awk 'BEGIN { RS = "\n---\n" } /\nkind: BridgeRunner\n|^kind: BridgeRunner\n/ { print "---"; print }' | grep .
}
for overlay in gitlab tekton; do
    check "deploy/overlays/$overlay builds; its BridgeRunner passes the CRD's schema (server dry run)" bash -c \
        "$(declare -f overlay_runners); overlay_runners $overlay | kubectl apply --dry-run=server -f -"
done
start_operator

echo "== two sessions at once"
a=$run-a b=$run-b
t0=$(date +%s%N)
session "$a" "ttlSeconds: 3600" &
create_a=$!
session "$b" "policy: restricted" &
create_b=$!
wait "$create_a" "$create_b"
check "session $a Ready" poll 60 is_ready "$a"
check "session $b Ready" poll 60 is_ready "$b"
echo "     both Ready after $(ms_since "$t0") ms"
for s in "$a" "$b"; do
    ns=pb-$s
    check "$ns has sa/role/rolebinding/quota/limitrange/networkpolicy" \
        kubectl -n "$ns" get serviceaccount/podbridge role/podbridge rolebinding/podbridge \
        resourcequota/podbridge limitrange/podbridge networkpolicy/podbridge
    check "$ns has the session labels" bash -c \
        "kubectl get ns $ns -o jsonpath='{.metadata.labels}' | grep -q '\"podbridge.io/session\":\"$s\"'"
    check "kubeconfig Secret of $s" kubeconfig_of "$s" "$tmp/$s.kubeconfig"
done
check "operator /metrics: sessions by phase (>= 2 Ready), reconciles counted" operator_metrics_moved
check "restricted profile labels pb-$b" bash -c \
    "kubectl get ns pb-$b -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}' | grep -qx restricted"

if want "the same names"; then
echo "== the same names in both namespaces"
pod_yaml() {
    cat <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  # compliant with the restricted profile of session b (the webhook enforces it)
  securityContext: {runAsNonRoot: true, runAsUser: 65534, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: main
    image: docker.io/library/busybox:latest
    imagePullPolicy: IfNotPresent
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: web}
  ports: [{port: 6379}]
YAML
}
for s in "$a" "$b"; do
    check "pod web + service db created with $s's kubeconfig" \
        bash -c "$(declare -f pod_yaml); pod_yaml | kubectl --kubeconfig $tmp/$s.kubeconfig apply -f -"
done
for s in "$a" "$b"; do
    check "pod web running in pb-$s" poll 60 pod_running "$tmp/$s.kubeconfig" web
done
check "$a's kubeconfig: kube-system is Forbidden" bash -c \
    "kubectl --kubeconfig $tmp/$a.kubeconfig -n kube-system get pods 2>&1 | grep -q Forbidden"
check "$a's kubeconfig: pb-$b is Forbidden" bash -c \
    "kubectl --kubeconfig $tmp/$a.kubeconfig -n pb-$b get pods 2>&1 | grep -q Forbidden"
check "$b's kubeconfig: pb-$a is Forbidden" bash -c \
    "kubectl --kubeconfig $tmp/$b.kubeconfig -n pb-$a get pods 2>&1 | grep -q Forbidden"
check "$a's kubeconfig: namespaces are Forbidden" bash -c \
    "kubectl --kubeconfig $tmp/$a.kubeconfig get namespaces 2>&1 | grep -q Forbidden"
fi

declare -A port
if want "Docker API|readiness|admission webhook"; then
echo "== Docker API: podbridge serve in each session, the same container name"
# $b is a restricted session: its podbridge runs the restricted policies, as the webhook demands
declare -A policies=([$a]="--policies policies/baseline" [$b]="--policies policies/baseline --policies policies/restricted")
for s in "$a" "$b"; do
    port[$s]=$((20000 + RANDOM % 20000))
    # shellcheck disable=SC2086
    KUBECONFIG=$tmp/$s.kubeconfig PODBRIDGE_LISTEN=127.0.0.1:${port[$s]} PODBRIDGE_LOG=warn \
        PODBRIDGE_BIND_ROOTS="[\"$tmp\"]" "$bin" serve --namespace "pb-$s" --instance "e2e-$s" ${policies[$s]} >"$tmp/serve-$s.log" 2>&1 &
    serve_pid[$s]=$!
done
for s in "$a" "$b"; do
    check "podbridge serve answers /_ping in pb-$s" poll 30 curl -sf "http://127.0.0.1:${port[$s]}/_ping"
    check "docker run --name cache in pb-$s" \
        docker -H "tcp://127.0.0.1:${port[$s]}" run -d --name cache docker.io/library/busybox:latest sleep 300
done
for s in "$a" "$b"; do
    check "docker ps shows cache running in pb-$s" bash -c \
        "docker -H tcp://127.0.0.1:${port[$s]} ps --format '{{.Names}} {{.State}}' | grep -qx 'cache running'"
done

fi

if want "admission webhook"; then
echo "== admission webhook (operator $operator_id, https://$webhook_host:$webhook_port)"
vwc_field() { kubectl get validatingwebhookconfiguration "$webhook_config" -o jsonpath="$1"; }
check "webhook configuration $webhook_config: Fail, v1, <= 5 s, selects this operator's sessions" bash -c "
    [ \"\$(kubectl get validatingwebhookconfiguration $webhook_config -o jsonpath='{.webhooks[0].failurePolicy} {.webhooks[0].sideEffects} {.webhooks[0].admissionReviewVersions} {.webhooks[0].namespaceSelector.matchLabels}')\" = \
      'Fail None [\"v1\"] {\"podbridge.io/operator\":\"$operator_id\"}' ] &&
    [ \"\$(kubectl get validatingwebhookconfiguration $webhook_config -o jsonpath='{.webhooks[0].timeoutSeconds}')\" -le 5 ]"
check "session namespaces carry podbridge.io/operator=$operator_id" bash -c \
    "[ \"\$(kubectl get ns -l podbridge.io/operator=$operator_id -o name | grep -c 'namespace/pb-$run-')\" -ge 2 ]"
vwc_field '{.webhooks[0].clientConfig.caBundle}' | base64 -d >"$tmp/webhook-ca.pem"
check "the caBundle verifies the served certificate (curl --cacert)" bash -c \
    "[ \$(curl -s -o /dev/null -w '%{http_code}' --cacert $tmp/webhook-ca.pem -X POST -H 'content-type: application/json' -d '{}' https://$webhook_host:$webhook_port/validate/sessions) = 200 ]"
check "without the caBundle the certificate is not trusted" bash -c \
    "! curl -s -o /dev/null -X POST -d '{}' https://$webhook_host:$webhook_port/validate/sessions"
ka="kubectl --kubeconfig $tmp/$a.kubeconfig"
# refused: the message names the policy file, the rule and the field
refused() { # NAME OVERRIDES EXPECTED...
    local name=$1 overrides=$2 out; shift 2
    out=$($ka run "$name" --image=docker.io/library/busybox:latest --restart=Never \
        --overrides="$overrides" -- sleep 5 2>&1) && { echo "admitted: $out"; return 1; }
    echo "$out"
    for expected in "$@"; do grep -qF -- "$expected" <<<"$out" || { echo "missing: $expected"; return 1; }; done
    ! $ka get pod "$name" >/dev/null 2>&1
}
check "kubectl run privileged (session token) refused naming file, rule, field" refused priv \
    '{"spec":{"containers":[{"name":"priv","image":"docker.io/library/busybox:latest","args":["sleep","5"],"securityContext":{"privileged":true}}]}}' \
    'denied the request' 'policy pod-security, rule standard' '90-pod-security.yaml' '/spec/containers/0/securityContext/privileged'
check "kubectl run hostPID refused" refused hostpid '{"spec":{"hostPID":true}}' 'Host Namespaces' '/spec/hostPID'
check "kubectl run hostPath refused (policy mounts, rule no-host-paths)" refused hostpath \
    '{"spec":{"volumes":[{"name":"root","hostPath":{"path":"/"}}],"containers":[{"name":"hostpath","image":"docker.io/library/busybox:latest","args":["sleep","5"],"volumeMounts":[{"name":"root","mountPath":"/host"}]}]}}' \
    'policy mounts, rule no-host-paths' '/spec/volumes/0/hostPath'
check "kubectl run compliant pod admitted" $ka run plain --image=docker.io/library/busybox:latest \
    --image-pull-policy=IfNotPresent --restart=Never -- sleep 5
check "restricted session $b: a plain pod is refused by its profile" bash -c \
    "kubectl --kubeconfig $tmp/$b.kubeconfig run plain --image=docker.io/library/busybox:latest --restart=Never -- sleep 5 2>&1 | grep -q 'session profile \"restricted\"'"
check "NodePort Service refused" bash -c \
    "$ka create service nodeport np --tcp=80:80 2>&1 | grep -q 'type NodePort is not allowed'"
check "ClusterIP Service admitted" $ka create service clusterip cip --tcp=80:80
check "a namespace that is no session is unaffected (privileged pod, server dry run)" \
    kubectl -n "$tls_ns" run priv --image=docker.io/library/busybox:latest --restart=Never --dry-run=server \
    --overrides='{"spec":{"containers":[{"name":"priv","image":"docker.io/library/busybox:latest","securityContext":{"privileged":true}}]}}'
check "denials logged by the operator" grep -q 'Admission denied' "$tmp/operator.log"
if [ -n "${port[$a]:-}" ]; then
    dk="docker -H tcp://127.0.0.1:${port[$a]}"
    echo "hello" >"$tmp/bind.txt"
    check "docker run -p (webhook on)" $dk run -d --name web -p 18080:80 docker.io/library/busybox:latest sleep 300
    check "docker run -v bind mount (webhook on)" $dk run --rm -v "$tmp/bind.txt:/in/bind.txt" \
        docker.io/library/busybox:latest cat /in/bind.txt
    check "docker volume + named volume mount (webhook on)" bash -c \
        "$dk volume create wh-data >/dev/null && $dk run --rm -v wh-data:/data docker.io/library/busybox:latest sh -c 'echo x > /data/x'"
    check "docker network + alias (webhook on)" bash -c \
        "$dk network create wh-net >/dev/null && $dk run -d --name wh-db --network wh-net --network-alias wh-database docker.io/library/busybox:latest sleep 300"
    check "docker run --health-cmd (webhook on)" $dk run -d --name healthy --health-cmd true \
        --health-interval 2s docker.io/library/busybox:latest sleep 300
    check "restricted session: docker run with the restricted policies (webhook on)" \
        docker -H "tcp://127.0.0.1:${port[$b]}" run --rm docker.io/library/busybox:latest true
fi
fi

if want "readiness"; then
echo "== readiness endpoints (podbridge readiness, with $b's kubeconfig)"
KUBECONFIG=$tmp/$b.kubeconfig "$bin" readiness --readiness-listen 127.0.0.1:2478 \
    --docker "127.0.0.1:${port[$b]}" -n "pb-$b" >"$tmp/readiness.log" 2>&1 &
readiness_pid=$!
poll 30 curl -s -o /dev/null http://127.0.0.1:2478/docker-ready
check "/kubernetes-ready 200 for pb-$b" bash -c \
    "curl -sf http://127.0.0.1:2478/kubernetes-ready | grep -q 'namespace pb-$b'"
check "/docker-ready 200 while podbridge serve runs" curl -sf http://127.0.0.1:2478/docker-ready
check "no credentials on the readiness port (/kubeconfig is 404)" bash -c \
    "[ \$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:2478/kubeconfig) = 404 ]"
for s in "$a" "$b"; do
    kill "${serve_pid[$s]}" 2>/dev/null; wait "${serve_pid[$s]}" 2>/dev/null
done
check "/docker-ready 503 once podbridge serve stopped" bash -c \
    "[ \$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:2478/docker-ready) = 503 ]"
kill "$readiness_pid" 2>/dev/null; wait "$readiness_pid" 2>/dev/null; readiness_pid=
fi
for s in "${!serve_pid[@]}"; do kill "${serve_pid[$s]}" 2>/dev/null; wait "${serve_pid[$s]}" 2>/dev/null; done

if want "deleting one session"; then
echo "== deleting one session"
t0=$(date +%s%N)
kubectl delete bridgesession "$a" --wait=false >/dev/null
check "namespace pb-$a gone" poll 90 ns_gone "pb-$a"
echo "     gone after $(ms_since "$t0") ms"
check "session $a gone (finalizer released)" poll 30 session_gone "$a"
check "pod web in pb-$b still running" pod_running "$tmp/$b.kubeconfig" web
fi

if want "TTL"; then
echo "== TTL"
c=$run-c
t0=$(date +%s%N)
session "$c" "ttlSeconds: 6"
check "short-TTL session $c Ready" poll 30 is_ready "$c"
check "expiresAt in status" bash -c "kubectl get bridgesession $c -o jsonpath='{.status.expiresAt}' | grep -q T"
check "session $c expires and pb-$c goes" poll 90 bash -c "! kubectl get bridgesession $c && ! kubectl get ns pb-$c"
echo "     gone $(ms_since "$t0") ms after creation (ttl 6 s)"
fi

if want "job pod"; then
echo "== job pod"
d=$run-d
kubectl create namespace "$jobs_ns" >/dev/null
poll 30 kubectl -n "$jobs_ns" get serviceaccount default
kubectl -n "$jobs_ns" run job --image=docker.io/library/busybox:latest --image-pull-policy=IfNotPresent \
    --labels=app=ci-job --restart=Never -- sh -c 'trap "exit 0" TERM; while true; do sleep 1; done' >/dev/null
session "$d" "jobPod: {namespace: $jobs_ns, name: job}"
check "session $d (with job pod) Ready" poll 60 is_ready "$d"
check "kubeconfig Secret in the job's namespace" \
    kubectl -n "$jobs_ns" get secret "podbridge-kubeconfig-$d"
check "network policy admits the job pod's namespace/labels" bash -c \
    "kubectl -n pb-$d get networkpolicy podbridge -o json | grep -q '\"app\": \"ci-job\"'"
check "network policy egress: anywhere but the cloud metadata address" bash -c \
    "kubectl -n pb-$d get networkpolicy podbridge -o jsonpath='{.spec.policyTypes} {.spec.egress[0].to[0].ipBlock.except}' | grep -q 'Egress.*169.254.169.254/32'"
t0=$(date +%s%N)
kubectl -n "$jobs_ns" delete pod job --grace-period=0 --force >/dev/null 2>&1
check "job pod deleted: pb-$d goes" poll 90 ns_gone "pb-$d"
check "job pod deleted: session $d goes" poll 30 session_gone "$d"
check "kubeconfig Secret in the job's namespace removed" bash -c \
    "! kubectl -n $jobs_ns get secret podbridge-kubeconfig-$d"
echo "     cleaned up $(ms_since "$t0") ms after the job pod was deleted"
fi

if want "session broker"; then
echo "== session broker: the platform's BridgeRunner, a job pod's token, podbridge with nothing else"
kubectl create namespace "$runner_ns" >/dev/null
poll 30 kubectl -n "$runner_ns" get serviceaccount default
kubectl -n "$runner_ns" create serviceaccount podbridge-job >/dev/null
cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: podbridge.io/v1alpha1
kind: BridgeRunner
metadata: {name: $runner}
spec:
  namespace: $runner_ns
  serviceAccounts: [podbridge-job]
  project: {fromLabel: ci/project}
  policy: restricted
  ttlSeconds: 600
YAML
# job_pod NAME SA LABELS: a pod standing for a job pod (only its identity matters here)
job_pod() {
    kubectl -n "$runner_ns" run "$1" --image=docker.io/library/busybox:latest --image-pull-policy=IfNotPresent \
        --restart=Never --labels="$3" \
        --overrides="{\"spec\":{\"serviceAccountName\":\"$2\",\"automountServiceAccountToken\":false}}" \
        -- sh -c 'trap "exit 0" TERM; while true; do sleep 1; done' >/dev/null
}
# pod_token POD SA AUDIENCE: a token bound to the pod, from the TokenRequest API (as the kubelet
# projects it)
pod_token() {
    local uid; uid=$(kubectl -n "$runner_ns" get pod "$1" -o jsonpath='{.metadata.uid}')
    printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"audiences":["%s"],"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"%s","uid":"%s"}}}' \
        "$3" "$1" "$uid" >"$tmp/tokenrequest.json"
    kubectl create --raw "/api/v1/namespaces/$runner_ns/serviceaccounts/$2/token" -f "$tmp/tokenrequest.json" | jq -r .status.token
}
broker=https://$webhook_host:$webhook_port/v1/session
broker_status() { # TOKEN: the HTTP status of a grant request
    curl -s -o "$tmp/broker.out" -w '%{http_code}' -m 100 --cacert "$tmp/broker-ca.crt" \
        ${1:+-H "Authorization: Bearer $1"} -X POST "$broker"
}
job_pod job podbridge-job ci/project=p42
job_pod stranger default ci/project=p42
check "the operator publishes its CA in the runner namespace" poll 30 \
    kubectl -n "$runner_ns" get configmap podbridge-operator-ca
kubectl -n "$runner_ns" get configmap podbridge-operator-ca -o jsonpath='{.data.ca\.crt}' >"$tmp/broker-ca.crt"
pod_token job podbridge-job podbridge.io >"$tmp/broker.token"
bport=$((20000 + RANDOM % 20000))
start_broker_serve() {
    PODBRIDGE_SESSION_BROKER=$broker PODBRIDGE_SESSION_BROKER_CA=$tmp/broker-ca.crt \
        PODBRIDGE_SESSION_TOKEN_FILE=$tmp/broker.token KUBECONFIG=$tmp/no-kubeconfig \
        PODBRIDGE_LISTEN=127.0.0.1:$bport PODBRIDGE_READINESS_LISTEN=127.0.0.1:0 PODBRIDGE_LOG=info \
        "$bin" serve --instance e2e-broker >>"$tmp/serve-broker.log" 2>&1 &
    serve_pid[broker]=$!
}
t0=$(date +%s%N)
start_broker_serve
check "podbridge serve with the broker token alone (no kubeconfig) answers /_ping" \
    poll 120 curl -sf "http://127.0.0.1:$bport/_ping"
echo "     granted and serving $(ms_since "$t0") ms after start"
grant=job-$(kubectl -n "$runner_ns" get pod job -o jsonpath='{.metadata.uid}')
check "session $grant on the runner's terms (project from the pod label, restricted, TTL, Broker)" bash -c \
    "[ \"\$(kubectl get bridgesession $grant -o jsonpath='{.spec.project} {.spec.policy} {.spec.ttlSeconds} {.spec.credentials} {.metadata.labels.podbridge\.io/runner}')\" = 'p42 restricted 600 Broker $runner' ]"
no_secret_in_runner_ns() { ! kubectl -n "$runner_ns" get secrets -o name | grep -q podbridge-kubeconfig; }
check "no credentials written into the runner namespace" no_secret_in_runner_ns
granted_run_is_restricted() {
    docker -H "tcp://127.0.0.1:$bport" run -d --name granted docker.io/library/busybox:latest sleep 300 >/dev/null || return 1
    local nonroot
    nonroot=$(kubectl -n "pb-$grant" get pods -l app.kubernetes.io/managed-by=podbridge \
        -o jsonpath='{.items[0].spec.securityContext.runAsNonRoot}{.items[0].spec.containers[0].securityContext.runAsNonRoot}')
    [ "$nonroot" = true ] || { kubectl -n "pb-$grant" get pods -o yaml | grep -A8 -i securitycontext; return 1; }
}
check "docker run in pb-$grant under the restricted policies it was granted (webhook on)" granted_run_is_restricted
refuses() { # STATUS [TOKEN]
    local status; status=$(broker_status "${2:-}")
    [ "$status" = "$1" ] || { echo "status $status: $(cat "$tmp/broker.out")"; return 1; }
}
check "the broker refuses a request without a token (401)" refuses 401
check "the broker refuses a token for the API server (401)" \
    refuses 401 "$(pod_token job podbridge-job https://kubernetes.default.svc.cluster.local)"
check "the broker refuses a pod of a ServiceAccount no runner names (403)" \
    refuses 403 "$(pod_token stranger default podbridge.io)"
check "... saying why" grep -q 'no BridgeRunner covers' "$tmp/broker.out"
kill "${serve_pid[broker]}" 2>/dev/null; wait "${serve_pid[broker]}" 2>/dev/null
start_broker_serve
same_session_after_restart() {
    # (the first one removed its containers on exit: cleanup_on_exit)
    poll 60 curl -sf "http://127.0.0.1:$bport/_ping" || return 1
    [ "$(kubectl get bridgesession -l "podbridge.io/runner=$runner" -o name)" = "bridgesession.podbridge.io/$grant" ] &&
        docker -H "tcp://127.0.0.1:$bport" run --rm docker.io/library/busybox:latest true
}
check "a restarted podbridge gets the same session" same_session_after_restart
kill "${serve_pid[broker]}" 2>/dev/null; wait "${serve_pid[broker]}" 2>/dev/null
PODBRIDGE_SESSION_BROKER=$broker PODBRIDGE_SESSION_BROKER_CA=$tmp/broker-ca.crt \
    PODBRIDGE_SESSION_TOKEN_FILE=$tmp/broker.token KUBECONFIG=$tmp/no-kubeconfig PODBRIDGE_PROJECT=other/team \
    PODBRIDGE_LISTEN=127.0.0.1:$bport PODBRIDGE_READINESS_LISTEN=127.0.0.1:0 \
    timeout 120 "$bin" serve >"$tmp/serve-other.log" 2>&1
check "a podbridge told another project stops, naming it" grep -q 'the session broker decides the project' "$tmp/serve-other.log"
kubectl -n "$runner_ns" delete pod job --grace-period=0 --force >/dev/null 2>&1
check "job pod deleted: the granted session and pb-$grant go" poll 90 bash -c \
    "! kubectl get bridgesession $grant && ! kubectl get ns pb-$grant"
fi

if want "operator restart"; then
echo "== operator restart"
stop_operator
e=$run-e
session "$e"
sleep 2
check "session $e not Ready while the operator is down" bash -c "[ -z \"\$(kubectl get bridgesession $e -o jsonpath='{.status.phase}')\" ]"
start_operator
check "session $e Ready after restart" poll 60 is_ready "$e"
check "session $b still Ready after restart" is_ready "$b"
fi
check "operator did not log errors" bash -c "! grep -E ' ERROR ' $tmp/operator.log"

if want "leader election"; then
echo "== leader election: two operators, one reconciles"
stop_operator
kubectl create namespace "$lease_ns" >/dev/null
declare -A elected_port=()
start_elected() { # NAME: an operator standing for the Lease in $lease_ns as NAME
    elected_port[$1]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin" operator --metrics-listen "127.0.0.1:${elected_port[$1]}" --operator-id "$operator_id" \
        --leader-election-namespace "$lease_ns" --leader-election-identity "$1" >>"$tmp/elected-$1.log" 2>&1 &
    elected_pid[$1]=$!
}
holder() { kubectl -n "$lease_ns" get lease podbridge-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
holds() { [ "$(holder)" = "$1" ]; }
# elected_metric NAME SERIES
elected_metric() { curl -s -m 5 "http://127.0.0.1:${elected_port[$1]}/metrics" | awk -v s="$2" '$1 == s { v = $2 } END { print v + 0 }'; }
leads() { [ "$(elected_metric "$1" podbridge_operator_leader)" = 1 ]; }
start_elected one
check "the first operator takes the Lease in $lease_ns" poll 30 holds one
start_elected two
check "the second stands by and serves /metrics (leader 0)" poll 30 bash -c \
    "curl -sf http://127.0.0.1:${elected_port[two]}/metrics | grep -qx 'podbridge_operator_leader 0'"
check "the first reports leader 1" leads one
f=$run-f
session "$f"
check "session $f Ready (reconciled by the leader)" poll 60 is_ready "$f"
sleep 2
standby_idle() {
    curl -sf "http://127.0.0.1:${elected_port[two]}/metrics" | grep -qx 'podbridge_operator_reconciles_total{result="success"} 0'
}
check "the standby reconciled nothing" standby_idle
check "the Lease still names the first" holds one

echo "== leader election: the leader dies without releasing, the standby takes over"
kill -9 "${elected_pid[one]}"; wait "${elected_pid[one]}" 2>/dev/null; unset 'elected_pid[one]'
t0=$(date +%s%N)
g=$run-g
session "$g"
check "session $g Ready after the leader's death (the standby took over)" poll 60 is_ready "$g"
takeover_ms=$(ms_since "$t0")
echo "     Ready $takeover_ms ms after kill -9 of the leader (Lease 15 s, retry 2 s)"
check "the Lease names the second" holds two
check "the second reports leader 1" leads two
check "one transition recorded on the Lease" bash -c \
    "[ \"\$(kubectl -n $lease_ns get lease podbridge-operator -o jsonpath='{.spec.leaseTransitions}')\" = 1 ]"
kill "${elected_pid[two]}"; wait "${elected_pid[two]}" 2>/dev/null; unset 'elected_pid[two]'
check "a leader stopped by SIGTERM releases the Lease" bash -c \
    "! kubectl -n $lease_ns get lease podbridge-operator -o name 2>/dev/null | grep -q ."
check "elected operators did not log errors" bash -c "! cat $tmp/elected-*.log | grep -E ' ERROR '"
fi

echo
if [ "$failed" -gt 0 ]; then
    echo "--- operator log (tail)"; tail -n 30 "$tmp/operator.log"
    for log in "$tmp"/elected-*.log; do [ -f "$log" ] && { echo "--- $log (tail)"; tail -n 15 "$log"; }; done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
