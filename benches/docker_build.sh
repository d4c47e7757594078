#!/usr/bin/env bash
# docker_build.sh - what `docker build` through podbridge costs against the same build done by
# buildah directly on the host, measured in one run on the test cluster.
#
#   benches/docker_build.sh [SAMPLES]        (default 3)
#
# The build: two stages, the first doing ~2 s of shell work (a busybox `while` loop) and writing
# a file, the second copying it and setting a CMD (the shape of most CI images: compile, then a
# small runtime stage). Per sample, interleaved:
# - podbridge: `docker build -t` (docker CLI, default settings, DOCKER_HOST only) against a
#   podbridge with a build registry. "cold" is the first build of a fresh instance name (its
#   registry cache is empty; buildah fills it), "cached" the same build again (every step from
#   the registry cache). Both include the builder pod, the context upload, `buildah bud`, the push
#   to the build registry and the record; the image is then run once as a check (not timed).
# - host: `buildah bud --layers` + `buildah push` as root on the host (vfs, chroot isolation, a
#   private --root/--runroot, the base image from the cluster registry 127.0.0.1:5000, plain
#   HTTP). "cold" on an empty storage, "cached" on the storage the cold run filled.
# Prints medians of SAMPLES (seconds) and the podbridge / host ratios. Uses a release build, a
# fresh namespace (tests/cluster/namespace.sh), podbridge on a free loopback port. Leaves nothing
# behind: podbridge stopped, namespace deleted, temp dirs (with the host buildah storage) removed,
# the manifests pushed under 127.0.0.1:5000/bench/<namespace>/ deleted (their blobs wait for the
# registry's garbage collection). Traffic stays on loopback and the node address 10.244.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=tests/e2e/offline.sh
. tests/e2e/offline.sh
samples=${1:-3}
[[ $samples =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SAMPLES]" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
tests/cluster/up.sh >/dev/null 2>&1 || { echo "test cluster failed to start (tests/cluster/up.sh)" >&2; exit 1; }
tests/e2e/builder-image.sh >&2
command -v buildah >/dev/null || { echo "no buildah on the host (tests/cluster/install.sh)" >&2; exit 1; }
cargo build --release --quiet --offline 2>/dev/null || cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/podbridge

registry=127.0.0.1:5000             # the cluster registry as the host reaches it
node_registry=10.244.0.1:5000       # the same registry as the builder pod reaches it
tmp=$(mktemp -d)
ns=pb-bench-build-$$
prefix=bench/$ns                    # every repository this run pushes to
kubeconfig=$(tests/cluster/namespace.sh "$ns" | tail -n 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export DOCKER_HOST=tcp://127.0.0.1:$port DOCKER_CONFIG=$tmp/docker
mkdir -p "$DOCKER_CONFIG" && echo "{}" >"$DOCKER_CONFIG/config.json"
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH DOCKER_BUILDKIT

pb_pid=""
stop_podbridge() {
  [ -n "$pb_pid" ] || return 0
  kill "$pb_pid" 2>/dev/null || true
  wait "$pb_pid" 2>/dev/null || true
  pb_pid=""
}
start_podbridge() {  # start_podbridge INSTANCE
  KUBECONFIG=$kubeconfig PODBRIDGE_LISTEN=127.0.0.1:$port PODBRIDGE_READINESS_LISTEN=127.0.0.1:0 \
    PODBRIDGE_LOG=warn PODBRIDGE_BUILD_IMAGE=docker.io/podbridge/buildah:1.28 \
    PODBRIDGE_BUILD_REGISTRY=$node_registry/bench PODBRIDGE_BUILD_PULL_REGISTRY=$registry/bench \
    PODBRIDGE_BUILD_REGISTRY_INSECURE=true \
    "$bin" serve --namespace "$ns" --instance "$1" >>"$tmp/podbridge.log" 2>&1 &
  pb_pid=$!
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/_ping")" = 200 ]; do
    kill -0 "$pb_pid" 2>/dev/null || { cat "$tmp/podbridge.log" >&2; exit 1; }
    sleep 0.05
  done
}
catalog() {  # every repository of the registry, page by page (1000 at most per page)
  local last="" page
  while page=$(curl -sf "http://$registry/v2/_catalog?n=1000&last=$last" | jq -r '.repositories // [] | .[]') && [ -n "$page" ]; do
    echo "$page"
    last=$(tail -n 1 <<<"$page")
  done
}
# manifests pushed under $prefix (builds, cache layers, the host's pushes): deleted by digest
delete_pushed() {
  local repo tag digest
  for repo in $(catalog | grep "^$prefix/"); do
    for tag in $(curl -sf "http://$registry/v2/$repo/tags/list" | jq -r '.tags // [] | .[]'); do
      digest=$(curl -sfI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$registry/v2/$repo/manifests/$tag" |
        tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
      [ -n "$digest" ] && curl -sf -o /dev/null -X DELETE "http://$registry/v2/$repo/manifests/$digest" || true
    done
  done
}
cleanup() {
  stop_podbridge
  tests/cluster/namespace.sh --delete "$ns" >/dev/null 2>&1 || true
  delete_pushed || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# the context: the base image named as each builder resolves it (the builder pod maps docker.io
# to the cluster registry; the host names the cluster registry itself)
context() {  # context DIR BASE
  mkdir -p "$1"
  cat >"$1/Dockerfile" <<EOF
FROM $2 AS compile
RUN i=0; while [ \$i -lt 900000 ]; do i=\$((i+1)); done; echo "counted to \$i" >/result
FROM $2
COPY --from=compile /result /result
CMD ["cat", "/result"]
EOF
}
context "$tmp/ctx-podbridge" busybox
context "$tmp/ctx-host" "$registry/library/busybox"
expected="counted to 900000"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", a / b}'; }
failed() { echo "$1" >&2; cat "$2" >&2; exit 1; }

pb_cold="" pb_cached="" host_cold="" host_cached=""
for i in $(seq "$samples"); do
  echo "sample $i of $samples" >&2
  # podbridge: a fresh instance name, so its registry cache is empty
  start_podbridge "bench-build-$i"
  t=$(now)
  docker build -t "bench-app:$i" "$tmp/ctx-podbridge" >"$tmp/pb-cold.out" 2>&1 || failed "podbridge cold build failed:" "$tmp/pb-cold.out"
  pb_cold+=" $(since "$t")"
  t=$(now)
  docker build -t "bench-app:$i" "$tmp/ctx-podbridge" >"$tmp/pb-cached.out" 2>&1 || failed "podbridge cached build failed:" "$tmp/pb-cached.out"
  pb_cached+=" $(since "$t")"
  grep -q 'Using cache' "$tmp/pb-cached.out" || failed "podbridge's second build did not use its cache:" "$tmp/pb-cached.out"
  [ "$(docker run --rm "bench-app:$i")" = "$expected" ] || failed "podbridge's image does not print '$expected'" "$tmp/pb-cached.out"
  docker rmi -f "bench-app:$i" >/dev/null 2>&1 || true
  stop_podbridge

  # host: buildah on a private, empty storage
  store=$tmp/buildah-$i
  hb() { STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot buildah --root "$store/root" --runroot "$store/run" "$@"; }
  build_push() {  # build_push OUT
    hb bud --layers --tls-verify=false -t "bench-host:$i" "$tmp/ctx-host" >"$1" 2>&1 &&
      hb push --tls-verify=false "bench-host:$i" "docker://$registry/$prefix/host:$i" >>"$1" 2>&1
  }
  t=$(now)
  build_push "$tmp/host-cold.out" || failed "host buildah cold build/push failed:" "$tmp/host-cold.out"
  host_cold+=" $(since "$t")"
  t=$(now)
  build_push "$tmp/host-cached.out" || failed "host buildah cached build/push failed:" "$tmp/host-cached.out"
  host_cached+=" $(since "$t")"
  grep -q 'Using cache' "$tmp/host-cached.out" || failed "host buildah's second build did not use its cache:" "$tmp/host-cached.out"
  [ "$(hb run "$(hb from -q "bench-host:$i")" cat /result 2>/dev/null)" = "$expected" ] ||
    failed "host buildah's image does not hold '$expected'" "$tmp/host-cached.out"
  hb rm -a >/dev/null 2>&1 || true
  hb rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$store"
done

m_pb_cold=$(median <<<"$pb_cold") m_pb_cached=$(median <<<"$pb_cached")
m_host_cold=$(median <<<"$host_cold") m_host_cached=$(median <<<"$host_cached")
echo
echo "== docker build, two stages (~2 s RUN, COPY --from), median of $samples, interleaved (s) =="
printf '%-52s %6s   %s\n' "podbridge cold (fresh instance, empty cache)" "$m_pb_cold" "$pb_cold"
printf '%-52s %6s   %s\n' "podbridge cached (same build again)" "$m_pb_cached" "$pb_cached"
printf '%-52s %6s   %s\n' "host buildah bud + push, empty storage" "$m_host_cold" "$host_cold"
printf '%-52s %6s   %s\n' "host buildah bud + push, same storage again" "$m_host_cached" "$host_cached"
echo "podbridge / host: cold $(ratio "$m_pb_cold" "$m_host_cold")x   cached $(ratio "$m_pb_cached" "$m_host_cached")x"
