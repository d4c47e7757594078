#!/usr/bin/env python3
"""Build a docker-archive image tarball (what `docker save` writes) from a root filesystem folder.

    mkimage.py ROOTFS OUT.tar --tag NAME:TAG [--tag ...] [--entrypoint JSON] [--cmd JSON]
               [--env K=V ...] [--expose 6379/tcp ...] [--workdir DIR] [--volume DIR ...]

The layer tarball is reproducible (sorted entries, mtime 0, root-owned), so the same inputs
give the same image ID. Load with `ctr -n k8s.io images import OUT.tar` or push with regpush.py.
"""
import argparse, hashlib, io, json, os, stat, tarfile

def layer_tar(rootfs):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                info = t.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        t.addfile(info, f)
                else:
                    t.addfile(info)
    return buf.getvalue()

def main():
    p = argparse.ArgumentParser()
    p.add_argument("rootfs"); p.add_argument("out")
    p.add_argument("--tag", action="append", required=True)
    p.add_argument("--entrypoint", type=json.loads)
    p.add_argument("--cmd", type=json.loads)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("--volume", action="append", default=[])
    p.add_argument("--workdir", default="")
    p.add_argument("--user", default="")
    a = p.parse_args()

    layer = layer_tar(a.rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env
    config = {"Env": env, "Entrypoint": a.entrypoint, "Cmd": a.cmd, "WorkingDir": a.workdir}
    if a.expose:
        config["ExposedPorts"] = {e: {} for e in a.expose}
    if a.volume:
        config["Volumes"] = {v: {} for v in a.volume}
    if a.user:
        config["User"] = a.user
    image = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "podbridge tests/cluster/mkimage.py"}],
    }
    cfg = json.dumps(image, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    layer_name = diff_id[len("sha256:"):] + "/layer.tar"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": a.tag, "Layers": [layer_name]}]).encode()
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w") as t:
        for name, data in [(layer_name, layer), (cfg_name, cfg), ("manifest.json", manifest)]:
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    os.replace(tmp, a.out)

if __name__ == "__main__":
    main()
