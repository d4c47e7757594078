#!/usr/bin/env bash
# session_ready.sh - what a namespace per CI job costs through the operator.
#
#   benches/session_ready.sh [N]      (default N=10)
#
# With `podbridge operator` running against the test cluster, measures N sessions from
# `kubectl apply` of the BridgeSession to (1) status Ready and (2) kubernetes-ready: the session's
# kubeconfig (read from its Secret) lists pods in its namespace. Sequential, then N at once.
# Baseline in the same run: namespace + ServiceAccount + Role + RoleBinding applied directly, to
# the ServiceAccount token existing and listing pods with it. Prints median/p90 and the ratio.
# Polling is every 50 ms, so figures carry up to ~50 ms of polling granularity (both sides alike).
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
admin=$(tests/cluster/up.sh 2>/dev/null | tail -n 1)
export KUBECONFIG=$admin
run=bn$(printf '%04x' $((RANDOM % 65536)))
tmp=$(mktemp -d)
bin=$CARGO_TARGET_DIR/release/podbridge
[ -x "$bin" ] || bin=$CARGO_TARGET_DIR/debug/podbridge
[ -x "$bin" ] || { cargo build --quiet && bin=$CARGO_TARGET_DIR/debug/podbridge; }
kubectl apply -f deploy/base/crd.yaml >/dev/null
"$bin" operator >"$tmp/operator.log" 2>&1 &
operator_pid=$!
ca=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d)
printf '%s\n' "$ca" >"$tmp/ca.crt"
server=https://127.0.0.1:6443

cleanup() {
    kubectl delete bridgesession -l "podbridge.bench/run=$run" --wait=false >/dev/null 2>&1
    for ((i = 0; i < 300; i++)); do
        [ -z "$(kubectl get bridgesession -l "podbridge.bench/run=$run" -o name 2>/dev/null)" ] && break
        sleep 0.2
    done
    kill "$operator_pid" 2>/dev/null; wait "$operator_pid" 2>/dev/null
    kubectl get ns -o name | grep "namespace/base-$run-" | xargs -r kubectl delete --wait=false >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
now() { date +%s%N; }

# list pods in NS with TOKEN (curl: no kubectl start-up in the measurement)
lists_pods() { curl -sf -m 2 --cacert "$tmp/ca.crt" -H "Authorization: Bearer $2" \
    "$server/api/v1/namespaces/$1/pods?limit=1" >/dev/null; }

# one operator session: prints "ready_ms kubernetes_ready_ms"
session_once() {
    local name=$1 t0 t1 t2 token
    t0=$(now)
    printf 'apiVersion: podbridge.io/v1alpha1\nkind: BridgeSession\nmetadata: {name: %s, labels: {podbridge.bench/run: "%s"}}\nspec: {project: bench, jobId: "%s"}\n' \
        "$name" "$run" "$name" | kubectl apply -f - >/dev/null
    until [ "$(kubectl get bridgesession "$name" -o jsonpath='{.status.phase}' 2>/dev/null)" = Ready ]; do sleep 0.05; done
    t1=$(now)
    token=$(kubectl -n "pb-$name" get secret "podbridge-kubeconfig-$name" -o jsonpath='{.data.kubeconfig}' |
        base64 -d | sed -n 's/^ *token: //p')
    until lists_pods "pb-$name" "$token"; do sleep 0.05; done
    t2=$(now)
    echo "$(((t1 - t0) / 1000000)) $(((t2 - t0) / 1000000))"
}

# the baseline: the same access, applied directly
baseline_once() {
    local ns=$1 t0 t2 secret token
    t0=$(now)
    {
        printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\n' "$ns"
        printf 'apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: podbridge, namespace: %s}\n---\n' "$ns"
        sed "s/^  name: podbridge$/  name: podbridge\n  namespace: $ns/" tests/cluster/podbridge-role.yaml
        printf -- '---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: podbridge, namespace: %s}\n' "$ns"
        printf 'roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: podbridge}\n'
        printf 'subjects: [{kind: ServiceAccount, name: podbridge, namespace: %s}]\n' "$ns"
    } | kubectl apply -f - >/dev/null
    until secret=$(kubectl -n "$ns" get sa podbridge -o jsonpath='{.secrets[0].name}' 2>/dev/null) && [ -n "$secret" ]; do sleep 0.05; done
    token=$(kubectl -n "$ns" get secret "$secret" -o jsonpath='{.data.token}' | base64 -d)
    until lists_pods "$ns" "$token"; do sleep 0.05; done
    t2=$(now)
    echo "$(((t2 - t0) / 1000000)) $(((t2 - t0) / 1000000))"
}

stats() { # FILE COLUMN -> "median p90"
    cut -d' ' -f"$2" "$1" | sort -n | awk '{a[NR]=$1} END {
        m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
        p = a[int(NR*0.9 + 0.999)]; printf "%d %d", m, p }'
}

until kubectl get bridgesession >/dev/null 2>&1 && grep -q "Operator started" "$tmp/operator.log"; do sleep 0.1; done
echo "operator: $bin; N=$n; polling 50 ms"
# warm-up (first reconcile, caches)
session_once "$run-warm" >/dev/null

for ((i = 0; i < n; i++)); do baseline_once "base-$run-s$i"; done >"$tmp/base-seq"
for ((i = 0; i < n; i++)); do session_once "$run-s$i"; done >"$tmp/op-seq"
for ((i = 0; i < n; i++)); do baseline_once "base-$run-c$i" >"$tmp/base-c$i" & done; wait_all=$(jobs -p | grep -v "^$operator_pid$"); wait $wait_all
cat "$tmp"/base-c* >"$tmp/base-conc"
for ((i = 0; i < n; i++)); do session_once "$run-c$i" >"$tmp/op-c$i" & done; wait_all=$(jobs -p | grep -v "^$operator_pid$"); wait $wait_all
cat "$tmp"/op-c* >"$tmp/op-conc"

printf '\n%-28s %12s %12s %12s %12s\n' "" "Ready med" "Ready p90" "k8s-ready med" "k8s-ready p90"
for mode in seq conc; do
    read -r bm bp < <(stats "$tmp/base-$mode" 2)
    read -r rm rp < <(stats "$tmp/op-$mode" 1)
    read -r km kp < <(stats "$tmp/op-$mode" 2)
    label=$([ $mode = seq ] && echo sequential || echo "$n concurrent")
    printf '%-28s %12s %12s %12s %12s\n' "operator, $label" "${rm} ms" "${rp} ms" "${km} ms" "${kp} ms"
    printf '%-28s %12s %12s %12s %12s\n' "direct apply, $label" "-" "-" "${bm} ms" "${bp} ms"
    awk -v a="$km" -v b="$bm" 'BEGIN { printf "%-28s %51s\n", "  ratio operator/direct", sprintf("%.2fx (median)", a / b) }'
done
