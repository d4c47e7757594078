#!/bin/bash
# up.sh - bring the podbridge single-node Kubernetes v1.20 test cluster up (or reuse it).
#
# Installs missing apt packages, builds/caches the Kubernetes binaries once, generates
# certificates and tokens, starts every component in order with readiness polling, imports
# the test images, and prints the admin kubeconfig path as the LAST line of stdout
# (everything else goes to stderr).
#
# Already up and healthy -> returns in well under a second. Processes gone (reboot, down.sh)
# -> restarts the components reusing $PODBRIDGE_CLUSTER_STATE.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"

# all_alive [EXCEPT]: every component runs (EXCEPT may be missing)
all_alive() { local c; for c in "${COMPONENTS[@]}"; do [ "$c" = "${1:-}" ] || alive "$c" || return 1; done; }

# ---- fast path: everything running and the node Ready -------------------------------------
if [ -f "$STATE/ready" ] && all_alive && api /readyz >/dev/null && node_ready; then
  log "cluster already up"
  echo "$ADMIN_KUBECONFIG"
  exit 0
fi
# ... but for the volume provisioner: (re)start it alone, nothing else is touched
if [ -f "$STATE/ready" ] && all_alive local-path && api /readyz >/dev/null && node_ready; then
  exec 8>"/run/podbridge-cluster-up.lock"; flock 8
  start_local_path
  waitfor "local-path provisioner (StorageClass $STORAGE_CLASS)" 30 storage_class_ready ||
    { tail -20 "$LOGS/local-path.log" >&2; exit 1; }
  log "cluster already up"; echo "$ADMIN_KUBECONFIG"; exit 0
fi

exec 8>"/run/podbridge-cluster-up.lock"   # one up.sh at a time (a second one then takes the fast path)
flock 8
if [ -f "$STATE/ready" ] && all_alive && api /readyz >/dev/null && node_ready; then
  log "cluster already up"; echo "$ADMIN_KUBECONFIG"; exit 0
fi

"$CLUSTER_DIR/install.sh"
T_START=$(date +%s%N)   # "from nothing to Ready" is measured from here (binaries cached)
_t0=$T_START
rm -f "$STATE/ready"
mkdir -p "$STATE"/{pki,config,run,logs,dns,namespaces,components} "$STATE/config/cni"
chmod 700 "$STATE/pki"

# ---- certificates, keys, tokens (once per state dir) ---------------------------------------
gen_pki() {
  local p=$STATE/pki
  [ -f "$p/ca.crt" ] && return 0
  log "generating certificates, service-account key and tokens"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$p/ca.key" -out "$p/ca.crt" \
    -subj "/CN=podbridge-test-ca" 2>/dev/null
  # sign NAME SUBJ [SAN]: key + certificate signed by the CA
  sign() {
    local name=$1 subj=$2 san=${3:-} ext=$p/$1.ext
    openssl req -newkey rsa:2048 -nodes -keyout "$p/$name.key" -out "$p/$name.csr" -subj "$subj" 2>/dev/null
    { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
      if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth"; echo "subjectAltName=$san"
      else echo "extendedKeyUsage=clientAuth"; fi; } >"$ext"
    openssl x509 -req -in "$p/$name.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
      -days 3650 -extfile "$ext" -out "$p/$name.crt" 2>/dev/null
    rm -f "$p/$name.csr" "$ext"
  }
  sign apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  sign kubelet "/CN=$NODE_NAME" "DNS:$NODE_NAME,IP:$NODE_IP,IP:127.0.0.1"
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  # static tokens: admin plus one identity per component (as RBAC's default bindings expect)
  local who
  : >"$p/tokens.csv.tmp"
  for who in admin kubelet kube-controller-manager kube-scheduler kube-proxy; do
    openssl rand -hex 24 >"$p/$who.token"
  done
  {
    echo "$(cat "$p/admin.token"),podbridge-admin,podbridge-admin,system:masters"
    echo "$(cat "$p/kubelet.token"),system:node:$NODE_NAME,kubelet,system:nodes"
    echo "$(cat "$p/kube-controller-manager.token"),system:kube-controller-manager,kube-controller-manager"
    echo "$(cat "$p/kube-scheduler.token"),system:kube-scheduler,kube-scheduler"
    echo "$(cat "$p/kube-proxy.token"),system:kube-proxy,kube-proxy"
  } >"$p/tokens.csv.tmp"
  mv "$p/tokens.csv.tmp" "$p/tokens.csv"
  cp "$p/admin.token" "$STATE/admin.token"
  chmod 600 "$p"/*.key "$p"/*.token "$STATE/admin.token"
}

gen_config() {
  local c=$STATE/config comp
  kubeconfig "$ADMIN_KUBECONFIG" podbridge-admin "$(cat "$STATE/admin.token")"
  for comp in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    kubeconfig "$STATE/components/$comp.kubeconfig" "$comp" "$(cat "$STATE/pki/$comp.token")"
  done

  # containerd: the distribution default plus
  #  - restrict_oom_score_adj: this VM's bounding set lacks CAP_SYS_RESOURCE, so runc cannot
  #    set the sandbox's oom_score_adj of -998 ("can't get final child's PID from pipe: EOF")
  #  - CNI from Debian's /usr/lib/cni and our conflist; the pause image we build
  #  - the local registry (plain HTTP) for its own names and as mirror of docker.io and
  #    registry.k8s.io: pulls of the test images work even with imagePullPolicy Always;
  #    anything else falls through to the dead proxy and fails at once
  containerd config default | sed \
    -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
    -e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"/usr/lib/cni\"#" \
    -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$c/cni\"#" \
    -e 's#sandbox_image = .*#sandbox_image = "registry.k8s.io/pause:3.6"#' >"$c/containerd.toml.tmp"
  cat >>"$c/containerd.toml.tmp" <<TOML

[plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
  endpoint = ["http://$REGISTRY"]
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."localhost:5000"]
  endpoint = ["http://$REGISTRY"]
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["http://$REGISTRY"]
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.k8s.io"]
  endpoint = ["http://$REGISTRY"]
TOML
  grep -q 'restrict_oom_score_adj = true' "$c/containerd.toml.tmp" || die "containerd config: restrict_oom_score_adj not set"
  mv "$c/containerd.toml.tmp" "$c/containerd.toml"

  cat >"$c/cni/10-podbridge.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "$CNI_NETWORK", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
JSON

  cat >"$c/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP                 # kubelet API only on the bridge, never on an uplink
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
tlsCertFile: $STATE/pki/kubelet.crt
tlsPrivateKeyFile: $STATE/pki/kubelet.key
authentication:                   # as in production: client certs + token webhook, no anonymous
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs            # no systemd on these machines
failSwapOn: false
podCIDR: $POD_CIDR
clusterDNS: ["$NODE_IP"]          # dnsmasq fed by svc-dns.py
clusterDomain: cluster.local
resolvConf: ""                    # pods never get the host's upstream resolver
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100  # never garbage-collect the hand-imported images
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 1s     # Ready ~1 s after registration instead of 10 s
kubeAPIQPS: 50                    # default 5/10 throttles status updates when many pods start
kubeAPIBurst: 100
serializeImagePulls: false
maxPods: 240                      # the /24 pod range; benches run 200 containers at once
YAML

  cat >"$c/registry.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $STATE/registry}
  delete: {enabled: true}
http: {addr: "$REGISTRY"}
YAML
  # the same storage served on the node address: pods (the docker build builder) reach the
  # registry there; the host and containerd keep using 127.0.0.1:5000
  sed "s#addr: \"$REGISTRY\"#addr: \"$NODE_REGISTRY\"#" "$c/registry.yml" >"$c/registry-node.yml"
}

# ---- host network: bridge, routes, firewall guards ------------------------------------------
save_sysctls() {
  [ -f "$STATE/sysctl.orig" ] && return 0
  local s
  for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s" 2>/dev/null || echo '')"; done >"$STATE/sysctl.orig"
}

chain() {  # chain TABLE CHAIN HOOK RULE...: (re)build our chain and jump to it first from HOOK
  local t=$1 ch=$2 hook=$3 rule IFS=$' \t\n'; shift 3
  iptables -t "$t" -N "$ch" 2>/dev/null || iptables -t "$t" -F "$ch"
  for rule in "$@"; do
    # shellcheck disable=SC2086
    iptables -t "$t" -A "$ch" $rule
  done
  iptables -t "$t" -C "$hook" -j "$ch" 2>/dev/null || iptables -t "$t" -I "$hook" 1 -j "$ch"
}

net_setup() {
  modprobe br_netfilter 2>/dev/null || true
  save_sysctls
  ip link show cni0 >/dev/null 2>&1 || ip link add cni0 type bridge
  ip -4 addr show dev cni0 | grep -q " $NODE_IP/24 " || ip addr add "$NODE_IP/24" dev cni0
  ip link set cni0 up
  # Service CIDR onto the bridge (kube-proxy DNATs it); rest of the cluster CIDR goes nowhere
  ip route replace "$SERVICE_CIDR" dev cni0 src "$NODE_IP"
  ip route replace blackhole "$CLUSTER_CIDR"
  local ok="-o lo -j RETURN|-o cni0 -j RETURN|-o veth+ -j RETURN"
  local IFS='|'
  # shellcheck disable=SC2086
  chain mangle "$FW_EGRESS" POSTROUTING $ok "-s $CLUSTER_CIDR -j DROP" "-d $CLUSTER_CIDR -j DROP" \
    "-d $SERVICE_CIDR -j DROP"
  chain filter "$FW_INPUT" INPUT "-i lo -j RETURN" "-i cni0 -j RETURN" "-i veth+ -j RETURN" \
    "-d $CLUSTER_CIDR -j DROP" "-p tcp --dport 6443 -j DROP"
  chain filter "$FW_FORWARD" FORWARD "-i cni0 -j RETURN" "-i veth+ -j RETURN" "-i lo -j RETURN" \
    "-o cni0 -j DROP"
  unset IFS
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
}

# ---- components -----------------------------------------------------------------------------
ctr_ok() { ctr --connect-timeout 1s version; }

start_containerd() {
  if ! alive containerd && ctr_ok >/dev/null 2>&1; then
    die "a containerd not started by this harness is serving /run/containerd/containerd.sock; stop it first"
  fi
  # HTTP(S)_PROXY -> dead loopback port: pulls from the internet fail in milliseconds;
  # the local registry (NO_PROXY) works
  start containerd env HTTP_PROXY=http://127.0.0.1:1 HTTPS_PROXY=http://127.0.0.1:1 \
    NO_PROXY=localhost,127.0.0.1 containerd --config "$STATE/config/containerd.toml"
}

start_etcd() {
  start etcd etcd --name podbridge --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster podbridge=http://127.0.0.1:2380 --log-level warn \
    --heartbeat-interval 100 --election-timeout 500   # single member: elect itself sooner
}

start_apiserver() {
  local p=$STATE/pki
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port=6443 --insecure-port=0 \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" --token-auth-file="$p/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$p/ca.crt" \
    --kubelet-preferred-address-types=InternalIP --allow-privileged=true --profiling=false
}

# the controllers a single-node test cluster needs (no nodeipam: podCIDR is static; no cloud,
# CSR signing, HPA): fewer controllers, each with its own ServiceAccount credentials, start faster
KCM_CONTROLLERS=serviceaccount-token,serviceaccount,namespace,garbagecollector,endpoint,endpointslice,endpointslicemirroring
KCM_CONTROLLERS+=,replicaset,replicationcontroller,deployment,statefulset,daemonset,job,cronjob
KCM_CONTROLLERS+=,podgc,nodelifecycle,persistentvolume-binder,attachdetach,pvc-protection,pv-protection
KCM_CONTROLLERS+=,root-ca-cert-publisher,resourcequota,ttl,disruption,clusterrole-aggregation

start_rest() {
  local k=$STATE/components
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$k/kube-controller-manager.kubeconfig" \
    --service-account-private-key-file="$STATE/pki/sa.key" --root-ca-file="$STATE/pki/ca.crt" \
    --use-service-account-credentials=true --leader-elect=false \
    --controllers="$KCM_CONTROLLERS" --cluster-cidr="$CLUSTER_CIDR" \
    --address=127.0.0.1 --bind-address=127.0.0.1 --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$k/kube-scheduler.kubeconfig" \
    --leader-elect=false --address=127.0.0.1 --bind-address=127.0.0.1 --profiling=false
  # AWS_EC2_METADATA_DISABLED: the in-tree ECR credential provider would probe 169.254.169.254
  start kubelet env AWS_EC2_METADATA_DISABLED=true "$BIN/kubelet" --config="$STATE/config/kubelet.yaml" \
    --kubeconfig="$k/kubelet.kubeconfig" --container-runtime=remote \
    --container-runtime-endpoint=unix:///run/containerd/containerd.sock \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$STATE/kubelet" \
    --cert-dir="$STATE/pki" --pod-infra-container-image=registry.k8s.io/pause:3.6
  start kube-proxy "$BIN/kube-proxy" --kubeconfig="$k/kube-proxy.kubeconfig" --proxy-mode=iptables \
    --cluster-cidr="$CLUSTER_CIDR" --hostname-override="$NODE_NAME" --conntrack-max-per-core=0 \
    --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
    --nodeport-addresses=127.0.0.0/8,"$NODE_IP/32"
  start svc-dns python3 "$CLUSTER_DIR/svc-dns.py" "$STATE" "$STATE/dns/hosts" "$RUN/dnsmasq.pid"
  start_local_path
}

start_dnsmasq() {
  touch "$STATE/dns/hosts"
  # never forwards anything (--no-resolv): names outside the cluster fail fast
  start dnsmasq dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$STATE/dns/hosts" \
    --listen-address="$NODE_IP" --bind-interfaces --local=/#/ --domain-needed \
    --pid-file="$RUN/dnsmasq.self.pid" --log-facility=- --cache-size=0
}

sa_token_ready() {
  api /api/v1/namespaces/default/serviceaccounts/default | jq -e '.secrets | length > 0' >/dev/null
}

# ---- go --------------------------------------------------------------------------------------
gen_pki
gen_config
net_setup;                  log "network set up (cni0 $NODE_IP, routes, firewall chains)"
start readyz python3 "$CLUSTER_DIR/readyz.py" "$STATE" "$READY_PORT" "$NODE_NAME"
start_containerd
start_etcd
start registry docker-registry serve "$STATE/config/registry.yml"
start registry-node docker-registry serve "$STATE/config/registry-node.yml"
start_dnsmasq
waitfor containerd 30 ctr_ok
# images (cached tarballs) import while etcd and the apiserver come up
"$CLUSTER_DIR/images.sh" import >"$LOGS/images.log" 2>&1 & IMAGES_PID=$!
waitfor etcd 60 sh -c 'curl -sf http://127.0.0.1:2379/health | grep -q "\"health\":\"true\""'
start_apiserver
waitfor kube-apiserver 90 sh -c "curl -sf --cacert '$STATE/pki/ca.crt' -H 'Authorization: Bearer $(admin_token)' https://127.0.0.1:6443/readyz | grep -qx ok" ||
  { tail -20 "$LOGS/kube-apiserver.log" >&2; exit 1; }
wait "$IMAGES_PID" || { cat "$LOGS/images.log" >&2; die "image import failed"; }
log "images imported"
start_rest
waitfor registry 30 curl -sf http://$REGISTRY/v2/
waitfor registry-node 30 curl -sf http://$NODE_REGISTRY/v2/
"$CLUSTER_DIR/images.sh" push >>"$LOGS/images.log" 2>&1 & PUSH_PID=$!
waitfor kube-scheduler 60 curl -sf http://127.0.0.1:10251/healthz
waitfor kube-controller-manager 60 curl -sf http://127.0.0.1:10252/healthz
waitfor kube-proxy 60 curl -sf http://127.0.0.1:10256/healthz
waitfor kubelet 60 curl -sf http://127.0.0.1:10248/healthz || { tail -20 "$LOGS/kubelet.log" >&2; exit 1; }
# after a restart the node object still says Ready from before: require a fresh heartbeat
node_ready_now() {
  api "/api/v1/nodes/$NODE_NAME" | jq -e --argjson t "$((T_START / 1000000000))" \
    '.status.conditions[] | select(.type=="Ready") | .status=="True" and (.lastHeartbeatTime | fromdateiso8601) >= $t' >/dev/null
}
waitfor "node $NODE_NAME" 90 node_ready_now || { tail -20 "$LOGS/kubelet.log" >&2; exit 1; }
waitfor "local-path provisioner (StorageClass $STORAGE_CLASS)" 30 storage_class_ready ||
  { tail -20 "$LOGS/local-path.log" >&2; exit 1; }
waitfor "default ServiceAccount token" 60 sa_token_ready || { tail -20 "$LOGS/kube-controller-manager.log" >&2; exit 1; }
wait "$PUSH_PID" || { cat "$LOGS/images.log" >&2; die "registry push failed"; }
log "images pushed to $REGISTRY"
waitfor "readiness endpoint" 10 curl -sf "http://127.0.0.1:$READY_PORT/kubernetes-ready"
for c in "${COMPONENTS[@]}"; do alive "$c" || { tail -20 "$LOGS/$c.log" >&2; die "$c died"; }; done
echo "$ADMIN_KUBECONFIG" >"$STATE/ready"
log "cluster ready: $(ms_since "$T_START") ms from start to node Ready (binaries cached)"
echo "$ADMIN_KUBECONFIG"
