#!/bin/bash
# namespace.sh - a namespace with production-like, namespace-scoped access for podbridge tests.
#
#   namespace.sh NAME            create namespace NAME, ServiceAccount "podbridge", the Role of
#                                podbridge-role.yaml and a RoleBinding; write a kubeconfig with
#                                the ServiceAccount's token; print its path:
#                                $PODBRIDGE_CLUSTER_STATE/namespaces/NAME/kubeconfig
#   namespace.sh --delete NAME   force-delete the pods, delete the namespace (no wait) and the kubeconfig
#
# Idempotent. The token may do nothing outside NAME (kubectl -n kube-system get pods: Forbidden).
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"

usage() { die "usage: $0 NAME | $0 --delete NAME"; }
[ $# -ge 1 ] || usage
[ -f "$ADMIN_KUBECONFIG" ] || die "no cluster: run tests/cluster/up.sh first"

if [ "$1" = --delete ]; then
  [ $# = 2 ] || usage
  ns=$2
  kc -n "$ns" delete pods --all --force --grace-period=0 >/dev/null 2>&1 || true
  kc delete namespace "$ns" --wait=false --ignore-not-found >/dev/null
  rm -rf "${STATE:?}/namespaces/$ns"
  log "namespace $ns deleted"
  exit 0
fi
[ $# = 1 ] || usage
ns=$1
[[ $ns =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "invalid namespace name: $ns"

# a namespace still terminating from an earlier --delete cannot take new objects: wait for it
for ((i = 0; i < 600; i++)); do
  phase=$(api "/api/v1/namespaces/$ns" | jq -r .status.phase 2>/dev/null || true)
  [ "$phase" = Terminating ] || break
  sleep 0.1
done
[ "${phase:-}" = Terminating ] && die "namespace $ns is still terminating"

{
  cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $ns, labels: {podbridge.test/harness: "true"}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: podbridge, namespace: $ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: podbridge, namespace: $ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: podbridge}
subjects: [{kind: ServiceAccount, name: podbridge, namespace: $ns}]
---
YAML
  sed "s/^  name: podbridge$/  name: podbridge\n  namespace: $ns/" "$CLUSTER_DIR/podbridge-role.yaml"
} | kc apply -f - >/dev/null

# v1.20: the token controller creates a secret for the ServiceAccount; wait for it
secret=
for ((i = 0; i < 300; i++)); do
  secret=$(api "/api/v1/namespaces/$ns/serviceaccounts/podbridge" | jq -r '.secrets[0].name // empty' || true)
  [ -n "$secret" ] && break
  sleep 0.1
done
[ -n "$secret" ] || die "no token secret for serviceaccount $ns/podbridge (is kube-controller-manager running? see $LOGS/kube-controller-manager.log)"
token=$(api "/api/v1/namespaces/$ns/secrets/$secret" | jq -r .data.token | base64 -d)
[ -n "$token" ] || die "empty token in secret $ns/$secret"

mkdir -p "$STATE/namespaces/$ns"
kubeconfig "$STATE/namespaces/$ns/kubeconfig" "podbridge@$ns" "$token" "$ns"
echo "$STATE/namespaces/$ns/kubeconfig"
