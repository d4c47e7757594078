#!/bin/bash
# smoke.sh - prove the test cluster is real, with podbridge's namespace-scoped credentials.
#
# In a fresh namespace (namespace.sh) and using ONLY its ServiceAccount kubeconfig: pod runs,
# logs, exec (+ exit code), cp both ways, port-forward, Service by ClusterIP and by DNS name
# from another pod, in-cluster API access with the mounted token, redis answers PING, a real
# pull from the local registry (imagePullPolicy Always), and the token is Forbidden outside
# its namespace. Deletes the namespace at the end.
# Last line: "N passed, M failed"; exit 1 on any failure (with the relevant component logs).
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"

NS=${SMOKE_NAMESPACE:-smoke-$(date +%s)-$$}
BUSYBOX=docker.io/library/busybox:latest
W=$(mktemp -d)
pass=0 fail=0 PF=

cleanup() {
  [ -n "$PF" ] && kill "$PF" 2>/dev/null
  "$CLUSTER_DIR/namespace.sh" --delete "$NS" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

# on failure: what the pods say, and the logs of the components that would explain it
explain() {
  local c
  echo "  --- pods/events in $NS:"
  k get pods -o wide 2>&1 | sed 's/^/    /'
  kc -n "$NS" get events --sort-by=.lastTimestamp 2>&1 | tail -8 | sed 's/^/    /'
  for c in "$@"; do
    echo "  --- last lines of $LOGS/$c.log:"
    tail -n 15 "$LOGS/$c.log" 2>/dev/null | cut -c1-300 | sed 's/^/    /'
  done
}

# check DESC "COMPONENT..." CMD...: run CMD, count, explain failures
check() {
  local desc=$1 comps=$2; shift 2
  if "$@" >"$W/out" 2>&1; then
    echo "PASS  $desc"; pass=$((pass + 1))
  else
    echo "FAIL  $desc"; fail=$((fail + 1))
    sed 's/^/  | /' "$W/out" | tail -n 15
    # shellcheck disable=SC2086
    explain $comps
  fi
}

NSKC=$("$CLUSTER_DIR/namespace.sh" "$NS") || die "namespace.sh $NS failed"
k() { KUBECONFIG=$NSKC "$KUBECTL" -n "$NS" "$@"; }   # the namespace-scoped ServiceAccount, not admin
echo "namespace $NS, kubeconfig $NSKC (ServiceAccount podbridge)"

pod_yaml() {  # pod_yaml NAME IMAGE PULLPOLICY SCRIPT [SA]
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, labels: {app: $1}}
spec:
  terminationGracePeriodSeconds: 1
  serviceAccountName: ${5:-default}
  containers:
  - name: main
    image: $2
    imagePullPolicy: $3
    command: [sh, -c, '$4']
YAML
}

# ---- pods -----------------------------------------------------------------------------------
# shellcheck disable=SC2016  # expanded by the pod's shell
WEB_SCRIPT='trap "exit 0" TERM; mkdir -p /www; echo hello-from-web >/www/index.html; httpd -p 8080 -h /www; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done'
t=$(date +%s%N)
pod_yaml web "$BUSYBOX" IfNotPresent "$WEB_SCRIPT" podbridge | k apply -f - >/dev/null
check "busybox pod runs" "kubelet containerd kube-scheduler" k wait --for=condition=Ready pod/web --timeout=60s
echo "      (pod create -> Ready: $(ms_since "$t") ms)"
cat <<YAML | k apply -f - >/dev/null
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
---
apiVersion: v1
kind: Pod
metadata: {name: redis, labels: {app: redis}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: docker.io/library/redis:latest, imagePullPolicy: IfNotPresent}]
YAML
pod_yaml client "$BUSYBOX" IfNotPresent 'trap "exit 0" TERM; while true; do sleep 1; done' | k apply -f - >/dev/null
k wait --for=condition=Ready pod/client pod/redis --timeout=60s >/dev/null 2>&1 || true

logs_ok() {  # the pod prints "tick N" every second
  local i
  for ((i = 0; i < 50; i++)); do grep -q '^tick 1$' <<<"$(k logs web)" && return 0; sleep 0.1; done
  k logs web; return 1
}
check "kubectl logs" "kubelet" logs_ok

exec_ok() { [ "$(k exec web -- cat /www/index.html)" = hello-from-web ]; }
check "kubectl exec (stdout)" "kubelet kube-apiserver" exec_ok
exec_rc() {
  local rc=0
  k exec web -- sh -c 'echo to-stderr >&2; exit 3' || rc=$?
  [ $rc = 3 ] || { echo "expected exit code 3, got $rc"; return 1; }
}
check "kubectl exec (exit code 3 propagates)" "kubelet" exec_rc

cp_ok() {
  head -c 300000 /dev/urandom >"$W/blob"
  k cp "$W/blob" web:/tmp/blob
  [ "$(k exec web -- md5sum /tmp/blob | cut -d' ' -f1)" = "$(md5sum <"$W/blob" | cut -d' ' -f1)" ] || { echo "md5 differs in the pod"; return 1; }
  k cp web:/tmp/blob "$W/back"
  cmp "$W/blob" "$W/back"
}
check "kubectl cp in and out (300 kB, checksums equal)" "kubelet" cp_ok

pf_ok() {
  local port i
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # exec: $! must be kubectl itself, not a subshell around it, so that kill stops it.
  KUBECONFIG=$NSKC exec "$KUBECTL" -n "$NS" port-forward pod/web "$port:8080" >"$W/pf.log" 2>&1 &
  PF=$!
  for ((i = 0; i < 100; i++)); do
    if [ "$(curl -sf --max-time 2 "http://127.0.0.1:$port/index.html")" = hello-from-web ]; then
      kill "$PF"; PF=; return 0
    fi
    sleep 0.1
  done
  cat "$W/pf.log"; kill "$PF"; PF=; return 1
}
check "kubectl port-forward to busybox httpd, fetched from 127.0.0.1" "kubelet kube-apiserver" pf_ok

CIP=$(k get svc web -o jsonpath='{.spec.clusterIP}')
svc_ip_ok() { [ "$(k exec client -- wget -qO- "http://$CIP/index.html")" = hello-from-web ]; }
check "Service by ClusterIP ($CIP) from another pod" "kube-proxy" svc_ip_ok
dns_ok() {
  local name
  for name in web "web.$NS" "web.$NS.svc.cluster.local"; do
    [ "$(k exec client -- wget -qO- "http://$name/index.html")" = hello-from-web ] || { echo "via $name failed"; return 1; }
  done
}
check "Service by DNS name (web, web.$NS, web.$NS.svc.cluster.local)" "svc-dns dnsmasq kube-proxy" dns_ok

# shellcheck disable=SC2016  # $(cat ...) runs in the pod
incluster_ok() {  # the pod's mounted token against https://kubernetes.default.svc (10.96.0.1)
  local out
  out=$(k exec web -- sh -c 'wget -qO- --header "Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)" https://kubernetes.default.svc/api/v1/namespaces/'"$NS"'/pods 2>&1')
  grep -q '"name": "client"' <<<"$out" || { echo "$out" | head -20; return 1; }
}
check "in-cluster API call with the pod's ServiceAccount token" "kube-proxy kube-apiserver" incluster_ok

redis_ok() {
  local out
  out=$(k exec client -- sh -c 'printf "PING\r\n" | nc -w 3 redis 6379' | tr -d '\r')
  [ "$out" = +PONG ] || { echo "redis said: '$out'"; return 1; }
}
check "redis image runs and answers PING (from another pod, via DNS)" "kubelet containerd" redis_ok

REG_IMAGE=$REGISTRY/podbridge/busybox:latest
pull_ok() {
  # drop any local copy so the kubelet really has to pull it
  ctr -n k8s.io images rm "$REG_IMAGE" >/dev/null 2>&1 || true
  pod_yaml pulled "$REG_IMAGE" Always 'trap "exit 0" TERM; echo pulled-ok; while true; do sleep 1; done' | k apply -f -
  k wait --for=condition=Ready pod/pulled --timeout=60s
  grep -q 'Successfully pulled image' <<<"$(k get events --field-selector involvedObject.name=pulled -o jsonpath='{.items[*].message}')"
  grep -qx pulled-ok <<<"$(k logs pulled)"
}
check "real pull of $REG_IMAGE (imagePullPolicy Always)" "containerd registry kubelet" pull_ok

mirror_ok() {  # docker.io names resolve through the local registry (containerd mirror)
  ctr -n k8s.io images rm docker.io/library/alpine:latest >/dev/null 2>&1 || true
  pod_yaml mirrored docker.io/library/alpine:latest Always 'trap "exit 0" TERM; while true; do sleep 1; done' | k apply -f -
  k wait --for=condition=Ready pod/mirrored --timeout=60s
}
check "docker.io/library/alpine:latest pulled through the local mirror (Always)" "containerd registry kubelet" mirror_ok

forbidden() {  # forbidden CMD...: must fail with Forbidden
  if "$@" >"$W/fb" 2>&1; then echo "unexpectedly allowed: $*"; return 1; fi
  grep -qi forbidden "$W/fb" || { cat "$W/fb"; return 1; }
}
rbac_ok() {
  forbidden env KUBECONFIG="$NSKC" "$KUBECTL" -n kube-system get pods
  forbidden env KUBECONFIG="$NSKC" "$KUBECTL" get nodes
  forbidden env KUBECONFIG="$NSKC" "$KUBECTL" -n default create configmap x --from-literal=a=b
}
check "ServiceAccount token refused outside its namespace (Forbidden)" "kube-apiserver" rbac_ok

trap - EXIT
cleanup
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
