#!/bin/bash
# images.sh - build the test images from Debian packages, import them into containerd (k8s.io
# namespace) and push them to the local registry. Called by up.sh.
#
#   images.sh [all|build|import|push]     (default all: build, import, push)
#
# Images (docker-archive tarballs cached in $PODBRIDGE_CACHE/images/, keyed by a hash of inputs):
#   docker.io/library/busybox:latest   busybox-static with every applet linked (sh, tar, nc, httpd...)
#   docker.io/library/alpine:latest    the same busybox rootfs (for clients that default to alpine)
#   registry.k8s.io/pause:3.6          static pause from the kubernetes source tree
#   docker.io/library/redis:latest     Debian's redis-server + redis-cli, their libraries, busybox sh
# All of them are also pushed to the local registry on 127.0.0.1:5000 (library/busybox,
# library/alpine, library/redis, pause, and podbridge/busybox), which containerd uses as mirror
# for docker.io and registry.k8s.io.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"

IMAGES=(busybox alpine redis pause)
declare -A TAG=(
  [busybox]=docker.io/library/busybox:latest
  [alpine]=docker.io/library/alpine:latest
  [pause]=registry.k8s.io/pause:3.6
  [redis]=docker.io/library/redis:latest
)
IMGDIR=$CACHE/images
mkdir -p "$IMGDIR"

# --- rootfs builders: each fills the folder $1 ---------------------------------------------
base_files() {  # minimal /etc and directories every image gets
  local r=$1
  mkdir -p "$r/etc" "$r/tmp" "$r/root" "$r/proc" "$r/sys" "$r/dev" "$r/var/www" "$r/home"
  chmod 1777 "$r/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
}

add_busybox() {  # busybox --install -s style: an absolute symlink per applet
  local r=$1 a
  mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list-full); do
    [ -e "$r/$a" ] || [ -L "$r/$a" ] || ln -s /bin/busybox "$r/$a"
  done
}

libs_of() {  # the shared libraries (and loader) a dynamic binary needs, per ldd
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
}

add_with_libs() {  # add_with_libs ROOT SRC DEST: copy a dynamic binary and the libraries ldd finds
  local r=$1 src=$2 dest=$3 lib
  mkdir -p "$r$(dirname "$dest")"
  cp -L "$src" "$r$dest"
  for lib in $(libs_of "$src"); do
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
}

inputs_busybox() { echo /bin/busybox; }
inputs_alpine() { echo /bin/busybox; }
inputs_pause() { echo "$BIN/pause"; }
inputs_redis() {
  echo /bin/busybox /usr/bin/redis-server /usr/bin/redis-cli
  { libs_of /usr/bin/redis-server; libs_of /usr/bin/redis-cli; } | sort -u
}

rootfs_busybox() { base_files "$1"; add_busybox "$1"; }
rootfs_alpine() { rootfs_busybox "$1"; echo 'NAME="podbridge test alpine (busybox)"' >"$1/etc/os-release"; }
rootfs_pause() { cp "$BIN/pause" "$1/pause"; }
rootfs_redis() {
  local r=$1
  base_files "$r"; add_busybox "$r"
  add_with_libs "$r" /usr/bin/redis-server /usr/bin/redis-server
  add_with_libs "$r" /usr/bin/redis-cli /usr/bin/redis-cli
  mkdir -p "$r/data" "$r/usr/local/bin"
  # like the official image: a first argument of "-..." or "*.conf" means redis-server args;
  # protected mode off (the official image compiles it off) so other pods can connect
  cat >"$r/usr/local/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then shift; set -- redis-server "$@" --protected-mode no; fi
exec "$@"
SH
  chmod 755 "$r/usr/local/bin/docker-entrypoint.sh"
}

config_busybox() { echo --cmd '["sh"]'; }
config_alpine() { echo --cmd '["/bin/sh"]'; }
config_pause() { echo --entrypoint '["/pause"]'; }
config_redis() {
  echo --entrypoint '["docker-entrypoint.sh"]' --cmd '["redis-server"]' --expose 6379/tcp \
    --workdir /data --volume /data
}

# tarball NAME: path of the cached tarball for the current inputs
tarball() {
  local name=$1 key
  # shellcheck disable=SC2046
  key=$({ sha256sum "$CLUSTER_DIR/mkimage.py" "$CLUSTER_DIR/images.sh" $("inputs_$name");
          echo "${TAG[$name]}"; } | sha256sum | cut -c1-16)
  echo "$IMGDIR/$name-$key.tar"
}

build() {
  local name out tmp
  for name in "${IMAGES[@]}"; do
    out=$(tarball "$name")
    [ -f "$out" ] && continue
    find "$IMGDIR" -maxdepth 1 -name "$name-*.tar" -delete   # outdated inputs
    rm -rf "$IMGDIR/blobs"                                     # (gzipped layers for the registry)
    tmp=$(mktemp -d)
    mkdir "$tmp/rootfs"
    "rootfs_$name" "$tmp/rootfs"
    # shellcheck disable=SC2046
    python3 "$CLUSTER_DIR/mkimage.py" "$tmp/rootfs" "$out" --tag "${TAG[$name]}" $("config_$name")
    rm -rf "$tmp"
    log "built image ${TAG[$name]} -> $out"
  done
}

# import: only when containerd lacks the image or has it from different inputs (label check)
import() {
  local name out key have
  for name in "${IMAGES[@]}"; do
    out=$(tarball "$name"); key=$(basename "$out" .tar)
    have=$(ctr -n k8s.io images ls "name==${TAG[$name]}" 2>/dev/null | tail -n +2)
    if [ -n "$have" ] && grep -q "podbridge.key=$key" <<<"$have"; then continue; fi
    ctr -n k8s.io images import "$out" >/dev/null
    ctr -n k8s.io images label "${TAG[$name]}" "podbridge.key=$key" >/dev/null
    log "imported ${TAG[$name]}"
  done
}

# push: every image into the local registry, which containerd also uses as its mirror for
# docker.io and registry.k8s.io (so imagePullPolicy Always works for these names too).
# A marker per repository:tag and input key in the registry's storage skips repeated pushes.
declare -A REPOS=(
  [busybox]="podbridge/busybox:latest library/busybox:latest"
  [alpine]="library/alpine:latest"
  [redis]="library/redis:latest"
  [pause]="pause:3.6"
)
push() {
  local name out key ref digest marks=$STATE/registry/.podbridge-pushed
  mkdir -p "$marks"
  for name in "${IMAGES[@]}"; do
    out=$(tarball "$name"); key=$(basename "$out" .tar)
    for ref in ${REPOS[$name]}; do
      [ -f "$marks/${ref//[\/:]/_}-$key" ] && continue
      digest=$(python3 "$CLUSTER_DIR/regpush.py" "$out" "http://$REGISTRY" "$ref" "$IMGDIR/blobs")
      touch "$marks/${ref//[\/:]/_}-$key"
      log "pushed $REGISTRY/$ref ($digest)"
    done
  done
}

case ${1:-all} in
  build) build ;;
  import) build; import ;;
  push) build; push ;;
  all) build; import; push ;;
  *) die "usage: $0 [all|build|import|push]" ;;
esac
