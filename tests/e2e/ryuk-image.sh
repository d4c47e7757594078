#!/bin/bash
# ryuk-image.sh: build the test reaper (ryuk/, a Ryuk-compatible static binary) into a busybox-based
# image tagged as every testcontainers/ryuk version the clients ask for, import it into containerd
# (k8s.io) and push it to the local registry. Idempotent: skips work when the image is current.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=$ROOT/tests/cluster
TAGS=(0.8.1 0.14.0)   # testcontainers-python 4.15, testcontainers-node 12
TARGET=${RYUK_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/ryuk}
OUT=$TARGET/ryuk-image.tar
build_ryuk() {
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$TARGET \
    cargo build --quiet --release "$@" --manifest-path "$ROOT/tests/e2e/ryuk/Cargo.toml" >&2
}
# Offline first (the crates are usually in Cargo's cache already); fetch them on a fresh machine.
build_ryuk --offline 2>/dev/null || build_ryuk
BIN=$TARGET/release/podbridge-test-ryuk
KEY=$(cat "$BIN" "$0" | sha256sum | cut -c1-16)
if [ -f "$OUT" ] && [ "$(cat "$OUT.key" 2>/dev/null)" = "$KEY" ]; then exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
r=$tmp/rootfs
mkdir -p "$r/bin" "$r/tmp" "$r/etc"
cp /bin/busybox "$r/bin/busybox"; ln -s busybox "$r/bin/sh"
cp "$BIN" "$r/bin/ryuk"
args=()
for tag in "${TAGS[@]}"; do args+=(--tag "docker.io/testcontainers/ryuk:$tag"); done
python3 "$CLUSTER/mkimage.py" "$r" "$OUT" "${args[@]}" --entrypoint '["/bin/ryuk"]' --expose 8080/tcp
ctr -n k8s.io images import "$OUT" >/dev/null
for tag in "${TAGS[@]}"; do
  python3 "$CLUSTER/regpush.py" "$OUT" "http://127.0.0.1:5000" "testcontainers/ryuk:$tag" "$tmp/blobs" >/dev/null
done
echo "$KEY" >"$OUT.key"
echo "built and imported testcontainers/ryuk:{${TAGS[*]}}" >&2
