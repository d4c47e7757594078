#!/usr/bin/env python3
"""Push a docker-archive tarball (mkimage.py output) to a registry with the HTTP API v2, no docker.

    regpush.py IMAGE.tar http://127.0.0.1:5000 podbridge/busybox:latest [GZ_CACHE_DIR]

Layers are gzip-compressed (reproducibly) and uploaded monolithically; the manifest is
application/vnd.docker.distribution.manifest.v2+json. Prints the manifest digest.
"""
import gzip, hashlib, json, os, sys, tarfile, urllib.error, urllib.parse, urllib.request

def req(method, url, data=None, headers=None):
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()

def push_blob(base, repo, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, _, _ = req("HEAD", f"{base}/v2/{repo}/blobs/{digest}")
    if status != 200:
        status, headers, body = req("POST", f"{base}/v2/{repo}/blobs/uploads/")
        if status != 202:
            sys.exit(f"upload start failed: {status} {body[:200]!r}")
        loc = urllib.parse.urljoin(base, headers["Location"])
        sep = "&" if "?" in loc else "?"
        status, _, body = req("PUT", f"{loc}{sep}digest={digest}", data,
                              {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        if status != 201:
            sys.exit(f"blob upload failed: {status} {body[:200]!r}")
    return {"mediaType": media_type, "size": len(data), "digest": digest}

def gz_layer(t, name, cache):
    """The layer gzip-compressed; cached by the uncompressed digest (compressing costs ~1 s/20 MB)."""
    raw = t.extractfile(name).read()
    path = cache and os.path.join(cache, hashlib.sha256(raw).hexdigest() + ".tar.gz")
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    data = gzip.compress(raw, compresslevel=1, mtime=0)
    if path:
        os.makedirs(cache, exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    return data

def main():
    archive, base, ref = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
    cache = sys.argv[4] if len(sys.argv) > 4 else None
    repo, _, tag = ref.rpartition(":")
    with tarfile.open(archive) as t:
        m = json.load(t.extractfile("manifest.json"))[0]
        cfg = t.extractfile(m["Config"]).read()
        layers = [gz_layer(t, l, cache) for l in m["Layers"]]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": push_blob(base, repo, cfg, "application/vnd.docker.container.image.v1+json"),
        "layers": [push_blob(base, repo, l, "application/vnd.docker.image.rootfs.diff.tar.gzip") for l in layers],
    }
    body = json.dumps(manifest).encode()
    status, _, resp = req("PUT", f"{base}/v2/{repo}/manifests/{tag}", body,
                          {"Content-Type": manifest["mediaType"]})
    if status != 201:
        sys.exit(f"manifest put failed: {status} {resp[:300]!r}")
    print("sha256:" + hashlib.sha256(body).hexdigest())

if __name__ == "__main__":
    main()
