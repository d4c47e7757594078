#!/bin/bash
# builder-image.sh: the image `docker build` runs in on the test cluster, made from Debian's
# buildah package (as the other test images are made from Debian packages): buildah and the
# libraries it links, busybox for sh and tar, and /etc/containers set up for a pod that can only
# reach the cluster's registry (10.244.0.1:5000, plain HTTP): docker.io names resolve there, and
# short names resolve to docker.io as the Docker CLI resolves them.
# Tagged docker.io/podbridge/buildah:1.28, imported into containerd (k8s.io) and pushed to the
# local registry. Idempotent: skips work when the image is current.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=$ROOT/tests/cluster
# shellcheck source=tests/cluster/lib.sh
. "$CLUSTER/lib.sh"
command -v buildah >/dev/null || "$CLUSTER/install.sh" >&2
TAG=docker.io/podbridge/buildah:1.28
OUT=$CACHE/images/builder.tar
KEY=$(cat /usr/bin/buildah /bin/busybox "$0" "$CLUSTER/mkimage.py" | sha256sum | cut -c1-16)
if [ -f "$OUT" ] && [ "$(cat "$OUT.key" 2>/dev/null)" = "$KEY" ] &&
  ctr -n k8s.io images ls "name==$TAG" 2>/dev/null | grep -q "podbridge.key=$KEY"; then
  exit 0
fi
mkdir -p "$CACHE/images"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
r=$tmp/rootfs
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc/containers,tmp,var/tmp,root,proc,sys,dev,workspace} \
  "$r/var/lib/containers/storage" "$r/run/containers/storage"
chmod 1777 "$r/tmp" "$r/var/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
cp /bin/busybox "$r/bin/busybox"
for a in $(/bin/busybox --list-full); do
  [ -e "$r/$a" ] || [ -L "$r/$a" ] || ln -s /bin/busybox "$r/$a"
done
cp /usr/bin/buildah "$r/usr/bin/buildah"
for lib in $(ldd /usr/bin/buildah | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"
done
cat >"$r/etc/containers/policy.json" <<'JSON'
{"default": [{"type": "insecureAcceptAnything"}]}
JSON
cat >"$r/etc/containers/registries.conf" <<TOML
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"

[[registry]]
location = "$NODE_REGISTRY"
insecure = true

# docker.io is the cluster's registry itself (no mirror with a fallback): a missing image fails
# there, and nothing is ever asked of the real docker.io
[[registry]]
prefix = "docker.io"
location = "$NODE_REGISTRY"
insecure = true
TOML
cat >"$r/etc/containers/storage.conf" <<'TOML'
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
TOML
python3 "$CLUSTER/mkimage.py" "$r" "$OUT" --tag "$TAG" --cmd '["sh"]' --workdir /workspace \
  --env STORAGE_DRIVER=vfs --env BUILDAH_ISOLATION=chroot
ctr -n k8s.io images import "$OUT" >/dev/null
ctr -n k8s.io images label "$TAG" "podbridge.key=$KEY" >/dev/null
python3 "$CLUSTER/regpush.py" "$OUT" "http://$REGISTRY" "podbridge/buildah:1.28" "$tmp/blobs" >/dev/null
echo "$KEY" >"$OUT.key"
echo "built and imported $TAG" >&2
