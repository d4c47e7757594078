#!/bin/bash
# deploy/image/build.sh: podbridge's container image, made from the release binary without a
# Docker daemon: the binary, the shared libraries it links (per ldd), the CA bundle for
# registries over TLS, and a non-root user (65532). One layer, reproducible (mkimage.py).
#
#   deploy/image/build.sh [OUT.tar]          # docker-archive tarball (default target/podbridge-image.tar)
#   deploy/image/build.sh --push REGISTRY    # ... and push it as REGISTRY/podbridge/podbridge:dev
#   deploy/image/build.sh --import           # ... and import it into containerd (k8s.io), as the
#                                            #     test cluster's images
# Tag: docker.io/podbridge/podbridge:dev (and $PODBRIDGE_IMAGE_TAG if set).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$CARGO_TARGET_DIR/podbridge-image.tar
PUSH= IMPORT=
while [ $# -gt 0 ]; do
  case $1 in
    --push) PUSH=$2; shift 2 ;;
    --import) IMPORT=1; shift ;;
    *) OUT=$1; shift ;;
  esac
done
(cd "$ROOT" && { cargo build --release --quiet --offline 2>/dev/null || cargo build --release --quiet; })
BIN=$CARGO_TARGET_DIR/release/podbridge
TAG=docker.io/podbridge/podbridge:dev
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
r=$tmp/rootfs
mkdir -p "$r/usr/local/bin" "$r/etc/ssl/certs" "$r/tmp" "$r/home/podbridge"
chmod 1777 "$r/tmp"
cp "$BIN" "$r/usr/local/bin/podbridge"
strip "$r/usr/local/bin/podbridge" 2>/dev/null || true
for lib in $(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\npodbridge:x:65532:65532:podbridge:/home/podbridge:/sbin/nologin\n' >"$r/etc/passwd"
printf 'root:x:0:\npodbridge:x:65532:\n' >"$r/etc/group"
chown 65532:65532 "$r/home/podbridge"
tags=(--tag "$TAG")
[ -n "${PODBRIDGE_IMAGE_TAG:-}" ] && tags+=(--tag "$PODBRIDGE_IMAGE_TAG")
python3 "$ROOT/tests/cluster/mkimage.py" "$r" "$OUT" "${tags[@]}" \
  --entrypoint '["/usr/local/bin/podbridge"]' --cmd '["serve"]' --user 65532:65532 \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --env HOME=/home/podbridge
echo "image $TAG: $OUT ($(du -h "$OUT" | cut -f1))" >&2
if [ -n "$IMPORT" ]; then
  ctr -n k8s.io images import "$OUT" >/dev/null
  echo "imported into containerd (k8s.io)" >&2
fi
if [ -n "$PUSH" ]; then
  python3 "$ROOT/tests/cluster/regpush.py" "$OUT" "http://$PUSH" podbridge/podbridge:dev "$tmp/blobs" >/dev/null
  echo "pushed $PUSH/podbridge/podbridge:dev" >&2
fi
