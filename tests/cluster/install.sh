#!/bin/bash
# install.sh - apt packages and the cached Kubernetes v1.20.2 binaries for the test cluster.
# Idempotent: installs only missing packages and builds only when the cache lacks a binary.
# Called by up.sh; can be run alone (e.g. to warm a CI cache).
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"

PACKAGES=(
  # cluster runtime
  etcd-server containerd runc containernetworking-plugins iptables conntrack dnsmasq-base
  iproute2 procps util-linux kmod curl jq openssl python3 ca-certificates
  # images and the local registry
  busybox-static redis-server docker-registry
  # htpasswd (bcrypt) for the TLS registry with basic auth in tests/e2e/run.sh
  apache2-utils
  # the docker build builder image (tests/e2e/builder-image.sh)
  buildah
  # an independent reader of docker save archives (tests/e2e/build.sh)
  skopeo
  # building kubernetes + pause
  golang-go golang-github-modern-go-reflect2-dev rsync make gcc libc6-dev dpkg-dev
)
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl pause)

need_build() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 0; done
  return 1
}

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

apt_install() {
  local missing; missing=$(missing_packages | tr '\n' ' ')
  local want_src=0
  need_build && want_src=1
  [ -z "${missing// /}" ] && [ $want_src = 0 ] && { log "apt: all packages present"; return 0; }
  if [ $want_src = 1 ] && [ ! -f /etc/apt/sources.list.d/podbridge-deb-src.sources ]; then
    cat >/etc/apt/sources.list.d/podbridge-deb-src.sources <<'SRC'
# added by podbridge tests/cluster/install.sh: source of the kubernetes package it builds
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  log "apt-get update"
  apt-get -o DPkg::Lock::Timeout=600 update -q >"$CACHE/apt.log" 2>&1 || { tail -20 "$CACHE/apt.log"; die "apt-get update failed"; }
  if [ -n "${missing// /}" ]; then
    log "apt-get install $missing"
    # Keep the packages' init scripts from starting etcd/containerd/redis/registry on their
    # default ports: the harness runs its own instances.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; made_policy=1; fi
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
      $missing >>"$CACHE/apt.log" 2>&1 || { [ $made_policy = 1 ] && rm -f $policy; tail -30 "$CACHE/apt.log"; die "apt-get install failed"; }
    [ $made_policy = 1 ] && rm -f $policy
  fi
  return 0
}

build_kubernetes() {
  need_build || { log "kubernetes $K8S_VERSION binaries cached in $BIN"; return 0; }
  mkdir -p "$CACHE"
  exec 9>"$CACHE/kubernetes-$K8S_VERSION.lock"
  log "waiting for build lock" ; flock 9
  need_build || { log "kubernetes $K8S_VERSION binaries built by a concurrent run"; return 0; }
  local work=$CACHE/build/kubernetes-$K8S_VERSION buildlog=$CACHE/build-kubernetes-$K8S_VERSION.log t
  t=$(date +%s%N)
  log "building kubernetes $K8S_VERSION from Debian's source package (several minutes; log: $buildlog)"
  rm -rf "$work"; mkdir -p "$work"
  (
    cd "$work"
    apt-get source --download-only "kubernetes=$K8S_DEB_SRC_VERSION" ||
      apt-get source --download-only kubernetes
    tar -xzf kubernetes_*.orig.tar.gz
    cd "kubernetes-$K8S_VERSION"
    # Fix 1: the vendored modern-go/reflect2 1.0.1 corrupts memory under Go >= 1.18
    # ("unexpected fault address" in the apiserver's JSON encoding): use Debian's 1.0.2.
    V=vendor/github.com/modern-go/reflect2
    rm -f "$V"/*.go "$V"/*.s
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$V"/
    mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
    # dockerless: no dockershim / cAdvisor docker plugin (saves a 5 s docker.sock retry loop)
    GOPATH=$PWD/.go GOCACHE=$work/gocache CGO_ENABLED=0 make \
      WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy cmd/kubectl" \
      GOFLAGS=-tags=dockerless
    gcc -O2 -static -o _output/bin/pause build/pause/linux/pause.c
  ) >"$buildlog" 2>&1 || { tail -40 "$buildlog"; die "kubernetes build failed (full log: $buildlog)"; }
  local tmp=$BIN.tmp.$$
  rm -rf "$tmp"; mkdir -p "$tmp"
  for b in "${BINARIES[@]}"; do cp "$work/kubernetes-$K8S_VERSION/_output/bin/$b" "$tmp/"; done
  rm -rf "$BIN"; mv "$tmp" "$BIN"
  "$BIN/kube-apiserver" --version >&2
  [ "${PODBRIDGE_KEEP_BUILD:-0}" = 1 ] || rm -rf "$work"   # ~3 GB of tree + Go cache
  log "kubernetes built in $(( $(ms_since "$t") / 1000 )) s"
}

mkdir -p "$CACHE"
apt_install
build_kubernetes
