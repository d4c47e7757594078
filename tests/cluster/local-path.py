#!/usr/bin/env python3
"""Local-path volume provisioner: PersistentVolumeClaims of the harness's StorageClass get a
hostPath PersistentVolume on the node (watch-driven), the way kind and k3s ship one.

    local-path.py STATE_DIR VOLUMES_DIR

On start it creates (or repairs) the StorageClass `podbridge-local` (provisioner
`podbridge.io/local-path`, the cluster default, reclaimPolicy Delete, volumeBindingMode
Immediate: the single node is the only place a volume can be, so binding need not wait for a
pod). Then two watches, each a LIST followed by a WATCH from its resourceVersion (re-list on any
error or 410), as in svc-dns.py:

- claims, cluster-wide: a Pending claim of that class without a volume gets the directory
  VOLUMES_DIR/<claim uid> (mode 0777: pods running as any user can write, as with Docker's
  volumes) and a PersistentVolume `pvc-<claim uid>` pre-bound to it (claimRef with the uid), which
  the persistentvolume-binder controller then binds;
- volumes: one of ours that is Released (its claim was deleted) loses its directory and is
  deleted (reclaim Delete). The controller leaves that to us because the volume carries
  `pv.kubernetes.io/provisioned-by`, as for any external provisioner.

Runs with the admin credentials (PersistentVolumes and StorageClasses are cluster-scoped).
"""
import json, os, shutil, ssl, sys, threading, time, urllib.error, urllib.request

import kwatch

state, volumes_dir = sys.argv[1:3]
CLASS = "podbridge-local"
PROVISIONER = "podbridge.io/local-path"
ctx = ssl.create_default_context(cafile=os.path.join(state, "pki/ca.crt"))
token = open(os.path.join(state, "admin.token")).read().strip()
lock = threading.Lock()   # one provisioning/deletion at a time: the two watches share the API


def log(message):
    print("local-path: %s" % message, flush=True)


def call(method, path, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request("https://127.0.0.1:6443" + path, data=data, method=method,
                               headers={"Authorization": "Bearer " + token,
                                        "Content-Type": "application/json"})
    return urllib.request.urlopen(r, context=ctx, timeout=timeout)


def ensure_storage_class():
    wanted = {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": CLASS, "labels": {"app.kubernetes.io/managed-by": "podbridge-test-cluster"},
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
    }
    try:
        with call("GET", "/apis/storage.k8s.io/v1/storageclasses/" + CLASS) as resp:
            current = json.load(resp)
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        call("POST", "/apis/storage.k8s.io/v1/storageclasses", wanted).close()
        log("created StorageClass %s (default)" % CLASS)
        return
    # provisioner, reclaimPolicy and volumeBindingMode are immutable: replace a class that differs
    if any(current.get(k) != wanted[k] for k in ("provisioner", "reclaimPolicy", "volumeBindingMode")):
        call("DELETE", "/apis/storage.k8s.io/v1/storageclasses/" + CLASS).close()
        call("POST", "/apis/storage.k8s.io/v1/storageclasses", wanted).close()
        log("replaced StorageClass %s" % CLASS)
    elif current["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") != "true":
        patch = {"metadata": {"annotations": wanted["metadata"]["annotations"]}}
        r = urllib.request.Request("https://127.0.0.1:6443/apis/storage.k8s.io/v1/storageclasses/" + CLASS,
                                   data=json.dumps(patch).encode(), method="PATCH",
                                   headers={"Authorization": "Bearer " + token,
                                            "Content-Type": "application/merge-patch+json"})
        urllib.request.urlopen(r, context=ctx, timeout=10).close()
        log("marked StorageClass %s default again" % CLASS)


def provision(claim):
    meta, spec = claim["metadata"], claim.get("spec", {})
    if spec.get("storageClassName") != CLASS or spec.get("volumeName"):
        return
    if claim.get("status", {}).get("phase") != "Pending" or meta.get("deletionTimestamp"):
        return
    uid = meta["uid"]
    path = os.path.join(volumes_dir, uid)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)
    volume = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-" + uid, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                     "labels": {"app.kubernetes.io/managed-by": "podbridge-test-cluster"}},
        "spec": {
            "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": CLASS,
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "hostPath": {"path": path, "type": "Directory"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": uid},
        },
    }
    try:
        call("POST", "/api/v1/persistentvolumes", volume).close()
        log("provisioned pvc-%s for %s/%s at %s" % (uid, meta["namespace"], meta["name"], path))
    except urllib.error.HTTPError as e:
        if e.code != 409:   # already provisioned (a re-list, or a restart of this script)
            raise


def reclaim(volume):
    meta, spec = volume["metadata"], volume.get("spec", {})
    if meta.get("annotations", {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
        return
    if volume.get("status", {}).get("phase") not in ("Released", "Failed") or meta.get("deletionTimestamp"):
        return
    if spec.get("persistentVolumeReclaimPolicy") != "Delete":
        return
    path = spec.get("hostPath", {}).get("path", "")
    # only ever a directory of ours, directly under VOLUMES_DIR
    if os.path.dirname(path) == volumes_dir.rstrip("/") and os.path.basename(path):
        shutil.rmtree(path, ignore_errors=True)
    try:
        call("DELETE", "/api/v1/persistentvolumes/" + meta["name"]).close()
        log("deleted %s and %s" % (meta["name"], path))
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise


def follow(resource, handle):
    """Calls `handle` for every live object of `resource`, listed or watched."""
    def on_list(items):
        for obj in items:
            with lock:
                handle(obj)

    def on_event(kind, obj):
        if kind in ("ADDED", "MODIFIED"):
            with lock:
                handle(obj)

    kwatch.follow(lambda path, timeout: call("GET", path, timeout=timeout), resource, on_list, on_event, log)


os.makedirs(volumes_dir, mode=0o755, exist_ok=True)
while True:
    try:
        ensure_storage_class()
        break
    except Exception as e:
        log("StorageClass: %s; retrying" % e)
        time.sleep(0.5)
threading.Thread(target=follow, args=("/api/v1/persistentvolumes", reclaim), daemon=True).start()
follow("/api/v1/persistentvolumeclaims", provision)
