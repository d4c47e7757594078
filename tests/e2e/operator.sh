#!/usr/bin/env bash
# operator.sh - end-to-end test of `podbridge operator` on the real test cluster.
#
# Builds podbridge, installs the BridgeSession CRD, runs the operator against the admin kubeconfig
# and checks: two concurrent sessions get isolated namespaces with the objects and a working,
# namespace-limited kubeconfig; the same pod and Service names in both; `podbridge serve` with each
# session's kubeconfig and the same Docker container name in both; deleting a session removes
# its namespace only; TTL expiry; job pod deletion; operator restart; the readiness endpoints; the
# operator's /metrics; leader election (two operators, one reconciles, the other takes over when
# the leader is killed).
# Closing line: "N passed, M failed"; exit status non-zero on any failure. Cleans up after itself.
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
# the leadership Lease's namespace (the in-cluster operator's is podbridge-system: never shared)
lease_ns=pb-test-leader-$run
declare -A elected_pid=()
operator_pid=
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
readiness_pid=
declare -A serve_pid=()
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { local desc=$1; shift; if "$@" >"$tmp/out" 2>&1; then ok "$desc"; else fail "$desc"; sed 's/^/     /' "$tmp/out" | tail -n 5; fi; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

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
    "$bin" operator --metrics-listen "127.0.0.1:$metrics_port" >>"$tmp/operator.log" 2>&1 &
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
    kubectl delete namespace "$jobs_ns" --wait=false >/dev/null 2>&1
    # the operator removes the namespaces and finalizers; give it a moment, then force
    poll 60 bash -c "! kubectl get bridgesession -l podbridge.test/e2e=$run -o name 2>/dev/null | grep -q ."
    for s in $(kubectl get bridgesession -l "podbridge.test/e2e=$run" -o name 2>/dev/null); do
        kubectl patch "$s" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
    done
    stop_operator
    for ns in $(kubectl get ns -o name | grep "namespace/pb-$run-"); do
        kubectl delete "$ns" --wait=false >/dev/null 2>&1
    done
    kubectl delete namespace "$lease_ns" --wait=false >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== build and install"
check "cargo build" cargo build --quiet
check "CRD applies (deploy/crd.yaml)" kubectl apply -f deploy/crd.yaml
kubectl wait --for condition=established crd/bridgesessions.podbridge.io --timeout=30s >/dev/null
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

echo "== the same names in both namespaces"
pod_yaml() {
    cat <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/busybox:latest
    imagePullPolicy: IfNotPresent
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

echo "== Docker API: podbridge serve in each session, the same container name"
declare -A port
for s in "$a" "$b"; do
    port[$s]=$((20000 + RANDOM % 20000))
    KUBECONFIG=$tmp/$s.kubeconfig PODBRIDGE_LISTEN=127.0.0.1:${port[$s]} PODBRIDGE_LOG=warn \
        "$bin" serve --namespace "pb-$s" --instance "e2e-$s" >"$tmp/serve-$s.log" 2>&1 &
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

echo "== deleting one session"
t0=$(date +%s%N)
kubectl delete bridgesession "$a" --wait=false >/dev/null
check "namespace pb-$a gone" poll 90 ns_gone "pb-$a"
echo "     gone after $(ms_since "$t0") ms"
check "session $a gone (finalizer released)" poll 30 session_gone "$a"
check "pod web in pb-$b still running" pod_running "$tmp/$b.kubeconfig" web

echo "== TTL"
c=$run-c
t0=$(date +%s%N)
session "$c" "ttlSeconds: 6"
check "short-TTL session $c Ready" poll 30 is_ready "$c"
check "expiresAt in status" bash -c "kubectl get bridgesession $c -o jsonpath='{.status.expiresAt}' | grep -q T"
check "session $c expires and pb-$c goes" poll 90 bash -c "! kubectl get bridgesession $c && ! kubectl get ns pb-$c"
echo "     gone $(ms_since "$t0") ms after creation (ttl 6 s)"

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

echo "== operator restart"
stop_operator
e=$run-e
session "$e"
sleep 2
check "session $e not Ready while the operator is down" bash -c "[ -z \"\$(kubectl get bridgesession $e -o jsonpath='{.status.phase}')\" ]"
start_operator
check "session $e Ready after restart" poll 60 is_ready "$e"
check "session $b still Ready after restart" is_ready "$b"
check "operator did not log errors" bash -c "! grep -E ' ERROR ' $tmp/operator.log"

echo "== leader election: two operators, one reconciles"
stop_operator
kubectl create namespace "$lease_ns" >/dev/null
declare -A elected_port=()
start_elected() { # NAME: an operator standing for the Lease in $lease_ns as NAME
    elected_port[$1]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin" operator --metrics-listen "127.0.0.1:${elected_port[$1]}" \
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
check "... within 22 s" test "$takeover_ms" -le 22000
check "the Lease names the second" holds two
check "the second reports leader 1" leads two
check "one transition recorded on the Lease" bash -c \
    "[ \"\$(kubectl -n $lease_ns get lease podbridge-operator -o jsonpath='{.spec.leaseTransitions}')\" = 1 ]"
kill "${elected_pid[two]}"; wait "${elected_pid[two]}" 2>/dev/null; unset 'elected_pid[two]'
check "a leader stopped by SIGTERM releases the Lease" bash -c \
    "! kubectl -n $lease_ns get lease podbridge-operator -o name 2>/dev/null | grep -q ."
check "elected operators did not log errors" bash -c "! cat $tmp/elected-*.log | grep -E ' ERROR '"

echo
if [ "$failed" -gt 0 ]; then
    echo "--- operator log (tail)"; tail -n 30 "$tmp/operator.log"
    for log in "$tmp"/elected-*.log; do [ -f "$log" ] && { echo "--- $log (tail)"; tail -n 15 "$log"; }; done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
