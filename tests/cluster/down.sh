#!/bin/bash
# down.sh - stop the podbridge test cluster and remove everything it put on the host:
# processes, container shims, pod sandboxes, mounts, CNI network namespaces, cni0 and veths,
# iptables chains (KUBE-*, CNI-*, PODBRIDGE-*), routes, kubepods cgroups, changed sysctls.
#
#   down.sh          keep $PODBRIDGE_CLUSTER_STATE (certs, etcd, registry): up.sh restarts it
#   down.sh --wipe   also delete the state dir (never the binary/image cache)
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"

WIPE=0
for a in "$@"; do
  case $a in
    --wipe) WIPE=1 ;;
    *) die "usage: $0 [--wipe]" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root"

running() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s#Z}" = "$s" ]; }

# stop NAME: TERM its process group, KILL after 5 s (kube-apiserver 1.20 may hang on TERM)
stop() {
  local name=$1 pid t i
  alive "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  pid=$(pid_of "$name"); t=$(date +%s%N)
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$RUN/$name.pid"
  log "stopped $name ($pid) in $(ms_since "$t") ms"
}

# 1. everything above containerd, in reverse start order
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  [ "${COMPONENTS[i]}" = containerd ] || stop "${COMPONENTS[i]}"
done
rm -f "$STATE/ready"

# 2. pod containers and sandboxes, through our containerd while it still runs
if alive containerd; then
  if ctr -n k8s.io tasks ls -q >/dev/null 2>&1; then
    for t in $(ctr -n k8s.io tasks ls -q); do ctr -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
    for ((i = 0; i < 50; i++)); do
      ctr -n k8s.io tasks ls 2>/dev/null | grep -q RUNNING || break; sleep 0.1
    done
    for t in $(ctr -n k8s.io tasks ls -q); do ctr -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for c in $(ctr -n k8s.io containers ls -q); do ctr -n k8s.io containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  stop containerd
fi
# shims of the k8s.io namespace that outlived containerd (they are its children, started by us)
for pid in $(pgrep -f 'containerd-shim-runc-v2 -namespace k8s.io' || true); do kill -KILL "$pid" 2>/dev/null || true; done

# 3. mounts: pod volumes under the state dir, container rootfs/shm under /run/containerd,
#    CNI network namespaces under /run/netns
umount_under() {
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v p="$1" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r)
}
umount_under "$STATE/"
umount_under /run/containerd/
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
rm -rf "/var/lib/cni/networks/$CNI_NETWORK" /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true

# 4. links and routes
for v in $(ip -o link show master cni0 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  ip link delete "$v" 2>/dev/null || true
done
ip link delete cni0 2>/dev/null || true
ip route del "$SERVICE_CIDR" 2>/dev/null || true
ip route del blackhole "$CLUSTER_CIDR" 2>/dev/null || true

# 5. iptables: jumps from built-in chains into KUBE-*/CNI-*/PODBRIDGE-*, then those chains
clean_tables() {
  local cmd=$1 t rule ch
  command -v "$cmd" >/dev/null || return 0
  for t in filter nat mangle raw; do
    "$cmd-save" -t "$t" >/dev/null 2>&1 || continue
    while read -r rule; do
      eval "$cmd -t $t -D ${rule#-A }" 2>/dev/null || true
    done < <("$cmd-save" -t "$t" | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE-|CNI-|PODBRIDGE-)' || true)
    for ch in $("$cmd-save" -t "$t" | awk '/^:(KUBE-|CNI-|PODBRIDGE-)/{print substr($1, 2)}'); do
      "$cmd" -t "$t" -F "$ch" 2>/dev/null || true
    done
    for ch in $("$cmd-save" -t "$t" | awk '/^:(KUBE-|CNI-|PODBRIDGE-)/{print substr($1, 2)}'); do
      "$cmd" -t "$t" -X "$ch" 2>/dev/null || true
    done
  done
}
clean_tables iptables
clean_tables ip6tables
conntrack -D -s "$CLUSTER_CIDR" >/dev/null 2>&1 || true
conntrack -D -d "$SERVICE_CIDR" >/dev/null 2>&1 || true

# 6. cgroups the kubelet made (cgroup v1: one tree per controller)
for d in /sys/fs/cgroup/*/kubepods; do
  if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
done

# 7. sysctls back to what they were before the first up.sh
if [ -f "$STATE/sysctl.orig" ]; then
  while IFS='=' read -r key val; do
    if [ -n "$val" ]; then sysctl -qw "$key=$val" 2>/dev/null || true; fi
  done <"$STATE/sysctl.orig"
  rm -f "$STATE/sysctl.orig"
fi

if [ $WIPE = 1 ]; then
  umount_under "$STATE/"
  rm -rf "$STATE"
  log "wiped $STATE (cache $CACHE kept)"
fi
log "cluster down"
