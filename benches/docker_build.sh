#!/usr/bin/env bash
# docker_build.sh - what `docker build` through podbridge costs against the same build with
# buildah run directly on the host, measured in one run on the test cluster.
#
#   benches/docker_build.sh [SAMPLES]        (default 3)
#
# The build: two stages, the first doing ~1-2 s of shell work and writing a file, the second
# copying it (the shape of most CI images: compile, then a small runtime stage).
# - podbridge: `docker build` (docker CLI, default settings) against podbridge with a build
#   registry; "cold" is `--no-cache` (no registry cache), "cached" the same build again. Both
#   include the builder pod, the context upload, the push and the record.
# - host: `buildah bud --layers` as root on the host (vfs, chroot isolation, the base image from
#   the cluster registry) and `buildah push` to the same registry: "cold" on an empty storage,
#   "cached" on the storage the cold run filled.
# Medians of SAMPLES, and podbridge / host ratios. Uses a release build, a fresh namespace, leaves
# nothing behind (the pushed images stay in the test registry).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=tests/e2e/offline.sh
. tests/e2e/offline.sh
samples=${1:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
tests/cluster/up.sh >/dev/null 2>&1 || { echo "test cluster failed to start (tests/cluster/up.sh)" >&2; exit 1; }
tests/e2e/builder-image.sh >&2
cargo build --release --quiet --offline 2>/dev/null || cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/podbridge

tmp=$(mktemp -d)
ns=pb-bench-build-$$
kubeconfig=$(tests/cluster/namespace.sh "$ns" | tail -n 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export DOCKER_HOST=tcp://127.0.0.1:$port DOCKER_CONFIG=$tmp/docker
mkdir -p "$DOCKER_CONFIG" && echo "{}" >"$DOCKER_CONFIG/config.json"
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH DOCKER_BUILDKIT
KUBECONFIG=$kubeconfig PODBRIDGE_LISTEN=127.0.0.1:$port PODBRIDGE_READINESS_LISTEN=127.0.0.1:0 \
  PODBRIDGE_LOG=warn PODBRIDGE_BUILD_IMAGE=docker.io/podbridge/buildah:1.28 \
  PODBRIDGE_BUILD_REGISTRY=10.244.0.1:5000/podbridge-bench PODBRIDGE_BUILD_PULL_REGISTRY=127.0.0.1:5000/podbridge-bench \
  PODBRIDGE_BUILD_REGISTRY_INSECURE=true "$bin" serve --namespace "$ns" --instance bench-build >"$tmp/podbridge.log" 2>&1 &
pb_pid=$!
cleanup() {
  kill "$pb_pid" 2>/dev/null; wait "$pb_pid" 2>/dev/null
  tests/cluster/namespace.sh --delete "$ns" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "127.0.0.1:$port/_ping" && break; sleep 0.1; done

# the context: base image named as each builder resolves it
context() {  # context DIR BASE
  mkdir -p "$1"
  cat >"$1/Dockerfile" <<EOF
FROM $2 AS compile
RUN i=0; while [ \$i -lt 200000 ]; do i=\$((i+1)); done; echo "counted to \$i" > /result
FROM $2
COPY --from=compile /result /result
CMD ["cat", "/result"]
EOF
}
context "$tmp/ctx-podbridge" busybox
context "$tmp/ctx-host" 127.0.0.1:5000/library/busybox

now() { date +%s%N; }
secs() { python3 -c "print(f'{($2 - $1) / 1e9:.2f}')" ; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

pb_cold="" pb_cached="" host_cold="" host_cached=""
for i in $(seq "$samples"); do
  t=$(now); docker build -q --no-cache -t "bench-app:$i" "$tmp/ctx-podbridge" >/dev/null; pb_cold+=" $(secs "$t" "$(now)")"
  t=$(now); docker build -q -t "bench-app:$i" "$tmp/ctx-podbridge" >/dev/null; pb_cached+=" $(secs "$t" "$(now)")"
  [ "$(docker run --rm "bench-app:$i")" = "counted to 200000" ] || { echo "podbridge's image does not run" >&2; exit 1; }
  store=$tmp/buildah-$i
  hb() { STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot buildah --root "$store/root" --runroot "$store/run" "$@"; }
  t=$(now)
  hb bud -q --layers --tls-verify=false -t "bench-host:$i" "$tmp/ctx-host" >/dev/null 2>&1
  hb push -q --tls-verify=false "bench-host:$i" "docker://127.0.0.1:5000/podbridge-bench/host:$i" >/dev/null 2>&1
  host_cold+=" $(secs "$t" "$(now)")"
  t=$(now)
  hb bud -q --layers --tls-verify=false -t "bench-host:$i" "$tmp/ctx-host" >/dev/null 2>&1
  hb push -q --tls-verify=false "bench-host:$i" "docker://127.0.0.1:5000/podbridge-bench/host:$i" >/dev/null 2>&1
  host_cached+=" $(secs "$t" "$(now)")"
  hb rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$store" 2>/dev/null || true
done
docker rmi -f $(docker images -q) >/dev/null 2>&1 || true

m_pb_cold=$(median <<<"$pb_cold"); m_pb_cached=$(median <<<"$pb_cached")
m_host_cold=$(median <<<"$host_cold"); m_host_cached=$(median <<<"$host_cached")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "docker build, two stages, median of $samples (seconds):"
echo "  podbridge cold (--no-cache):  $m_pb_cold   (samples:$pb_cold)"
echo "  podbridge cached:             $m_pb_cached   (samples:$pb_cached)"
echo "  host buildah cold:            $m_host_cold   (samples:$host_cold)"
echo "  host buildah cached:          $m_host_cached   (samples:$host_cached)"
echo "  ratio cold:   podbridge $(ratio "$m_pb_cold" "$m_host_cold")x host"
echo "  ratio cached: podbridge $(ratio "$m_pb_cached" "$m_host_cached")x host"
