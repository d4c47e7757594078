# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Common settings and helpers for the podbridge test-cluster scripts (sourced, not run).
#
# Environment (all optional):
#   PODBRIDGE_CACHE          binary + image cache, survives down.sh --wipe   (/var/cache/podbridge)
#   PODBRIDGE_CLUSTER_STATE  certs, etcd, kubelet dir, logs, pid files       (/var/lib/podbridge-cluster)
#   PODBRIDGE_READY_PORT     readiness/kubeconfig HTTP endpoint on 127.0.0.1 (2476)

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PODBRIDGE_CACHE:-/var/cache/podbridge}
STATE=${PODBRIDGE_CLUSTER_STATE:-/var/lib/podbridge-cluster}
READY_PORT=${PODBRIDGE_READY_PORT:-2476}

K8S_VERSION=1.20.2
# Debian bookworm's source package that carries the v1.20.2 tree
K8S_DEB_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
BIN=$CACHE/kubernetes-$K8S_VERSION/bin

RUN=$STATE/run          # pid files
LOGS=$STATE/logs        # one log per component
ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
NODE_NAME=podbridge-node
NODE_IP=10.244.0.1      # cni0 gateway = node IP = cluster DNS
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
REGISTRY=127.0.0.1:5000
NODE_REGISTRY=10.244.0.1:5000   # the same registry as pods reach it (the build tests push there)
CNI_NETWORK=podbridge

shopt -s inherit_errexit
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

# kubectl: the machine's own (v1.32 works against the v1.20 server), else the one we built.
if [ -z "${KUBECTL:-}" ]; then
  if command -v kubectl >/dev/null 2>&1; then KUBECTL=$(command -v kubectl); else KUBECTL=$BIN/kubectl; fi
fi

_t0=${_t0:-$(date +%s%N)}
log() { printf '[%6.1fs] %s\n' "$(( ($(date +%s%N) - _t0) / 1000000 ))e-3" "$*" >&2; }
die() { echo "ERROR: $*" >&2; exit 1; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# pid files hold "PID STARTTIME": a pid reused after a reboot is not mistaken for ours
starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# alive NAME: the pid file names a live, non-zombie process that we started
alive() {
  local f=$RUN/$1.pid pid st s
  [ -f "$f" ] || return 1
  read -r pid st <"$f" || return 1
  [ -n "$pid" ] && [ "$(starttime "$pid")" = "$st" ] || return 1
  s=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [ "${s#Z}" = "$s" ]
}

pid_of() { local pid _; read -r pid _ <"$RUN/$1.pid"; echo "$pid"; }

# start NAME CMD...: run detached in its own session (pgid = pid), log to $LOGS/NAME.log
start() {
  local name=$1 pid; shift
  if alive "$name"; then log "$name already running"; return 0; fi
  mkdir -p "$RUN" "$LOGS"
  # fds 8/9 are up.sh/install.sh locks: the daemons must not inherit (and hold) them
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  pid=$!
  echo "$pid $(starttime "$pid")" >"$RUN/$name.pid"
}

# waitfor DESC TIMEOUT_S CMD...: poll CMD every 0.1 s
waitfor() {
  local desc=$1 timeout=$2 i; shift 2
  for ((i = 0; i < timeout * 10; i++)); do
    if "$@" >/dev/null 2>&1; then log "$desc ready"; return 0; fi
    sleep 0.1
  done
  echo "TIMEOUT after ${timeout}s waiting for $desc" >&2
  return 1
}

admin_token() { cat "$STATE/admin.token"; }

# api PATH: GET on the apiserver as admin (curl; no kubectl process start-up cost)
api() {
  curl -sf --max-time 5 --cacert "$STATE/pki/ca.crt" \
    -H "Authorization: Bearer $(admin_token)" "https://127.0.0.1:6443$1"
}

node_ready() {
  api "/api/v1/nodes/$NODE_NAME" |
    jq -e '.status.conditions[] | select(.type=="Ready") | .status=="True"' >/dev/null
}

kc() { KUBECONFIG=$ADMIN_KUBECONFIG "$KUBECTL" "$@"; }

# iptables chains of our own (down.sh removes them together with KUBE-* and CNI-*)
FW_EGRESS=PODBRIDGE-EGRESS     # mangle POSTROUTING: pod/service addresses never leave via an uplink
FW_INPUT=PODBRIDGE-INPUT       # filter INPUT: apiserver/kubelet/DNS not reachable from uplinks
FW_FORWARD=PODBRIDGE-FORWARD   # filter FORWARD: nothing from an uplink is forwarded into pods
# sysctls that the cluster (or kubelet/kube-proxy) changes; saved once, restored by down.sh
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# component start order; down.sh stops them in reverse
COMPONENTS=(containerd etcd registry registry-node dnsmasq readyz kube-apiserver kube-controller-manager
  kube-scheduler kubelet kube-proxy svc-dns local-path)
STORAGE_CLASS=podbridge-local   # default StorageClass, served by local-path.py
VOLUMES=$STATE/volumes          # one directory per provisioned claim: $VOLUMES/<claim uid>

# the volume provisioner (admin credentials: PersistentVolumes are cluster-scoped); it creates
# the StorageClass itself, so "class exists" is its readiness
start_local_path() {
  mkdir -p "$VOLUMES"
  start local-path python3 "$CLUSTER_DIR/local-path.py" "$STATE" "$VOLUMES"
}
storage_class_ready() { api "/apis/storage.k8s.io/v1/storageclasses/$STORAGE_CLASS" >/dev/null; }

# kubeconfig FILE USER TOKEN [NAMESPACE]: token kubeconfig for https://127.0.0.1:6443
kubeconfig() {
  local file=$1 user=$2 token=$3 ns=${4:-default}
  cat >"$file.tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: podbridge-test
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $(base64 -w0 <"$STATE/pki/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: podbridge-test
  context: {cluster: podbridge-test, user: $user, namespace: $ns}
current-context: podbridge-test
KC
  chmod 600 "$file.tmp"; mv "$file.tmp" "$file"
}
