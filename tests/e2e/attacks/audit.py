#!/usr/bin/env python3
"""Reads the cluster after a hostile attempt and prints every breach; exits 1 if there is one.

usage: audit.py CLUSTER.json NAMESPACE POLICY FOREIGN.json [SECRET-FILE...]

CLUSTER.json is `kubectl get pods,configmaps,services,persistentvolumeclaims -A -o json`;
FOREIGN.json the objects of other tenants as they were before the attacks (they must be
unchanged). POLICY is baseline or restricted: every container (init containers included) of
every pod in NAMESPACE must carry that policy's hardening. The text of each SECRET-FILE (for
instance podbridge's own kubeconfig token) must appear in no object.
"""
import json
import os
import sys

BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
MAX_CONFIGMAPS = int(os.environ.get("ATTACK_MAX_CONFIGMAPS", "400"))
MAX_CONFIGMAP_BYTES = int(os.environ.get("ATTACK_MAX_CONFIGMAP_BYTES", str(96 << 20)))


def containers(pod):
    spec = pod.get("spec") or {}
    return [("init", c) for c in spec.get("initContainers") or []] + \
           [("", c) for c in spec.get("containers") or []]


def audit_pod(pod, policy, out):
    name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"pod {name}: {key}")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            out.append(f"pod {name}: hostPath volume {volume['name']}")
    pod_sc = spec.get("securityContext") or {}
    if (pod_sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        out.append(f"pod {name}: no seccompProfile RuntimeDefault")
    for kind, c in containers(pod):
        where = f"pod {name} {kind + ' ' if kind else ''}container {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        added = set(caps.get("add") or [])
        dropped = set(caps.get("drop") or [])
        if policy == "restricted":
            if added - {"NET_BIND_SERVICE"}:
                out.append(f"{where}: adds {sorted(added)}")
            if "ALL" not in dropped:
                out.append(f"{where}: does not drop ALL capabilities")
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True or user == 0:
                out.append(f"{where}: may run as root")
        else:
            if added - BASELINE_CAPS:
                out.append(f"{where}: adds {sorted(added - BASELINE_CAPS)}")
            if not dropped and not added:
                out.append(f"{where}: keeps NET_RAW")
        resources = c.get("resources") or {}
        if not (resources.get("limits") or {}).get("memory"):
            out.append(f"{where}: no memory limit")


def identity(item):
    meta = item["metadata"]
    return f"{item['kind']}/{meta.get('namespace')}/{meta['name']}"


def shape(item):
    """What another tenant cares about: who owns it and what it selects or holds."""
    meta = item["metadata"]
    spec = item.get("spec") or {}
    return {
        "labels": meta.get("labels") or {},
        "selector": spec.get("selector"),
        "ports": spec.get("ports"),
        "data": item.get("data"),
        "storage": (spec.get("resources") or {}).get("requests"),
        "storageClassName": spec.get("storageClassName"),
    }


def main():
    cluster_file, namespace, policy, foreign_file, *secret_files = sys.argv[1:]
    items = json.load(open(cluster_file))["items"]
    breaches = []
    config_maps = 0
    config_map_bytes = 0
    for item in items:
        meta = item["metadata"]
        if meta.get("namespace") != namespace:
            continue
        if item["kind"] == "Pod":
            audit_pod(item, policy, breaches)
        if item["kind"] == "ConfigMap" and (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "podbridge":
            config_maps += 1
            config_map_bytes += len(json.dumps(item.get("data") or {})) + len(json.dumps(item.get("binaryData") or {}))
    if config_maps > MAX_CONFIGMAPS:
        breaches.append(f"{config_maps} podbridge ConfigMaps in {namespace} (at most {MAX_CONFIGMAPS})")
    if config_map_bytes > MAX_CONFIGMAP_BYTES:
        breaches.append(f"{config_map_bytes} bytes in podbridge ConfigMaps (at most {MAX_CONFIGMAP_BYTES})")
    now = {identity(i): i for i in items}
    for before in json.load(open(foreign_file)):
        key = identity(before)
        if before["metadata"].get("namespace") != namespace:
            continue
        after = now.get(key)
        if after is None:
            breaches.append(f"{key} of another tenant was deleted")
        elif shape(after) != shape(before):
            breaches.append(f"{key} of another tenant changed: {shape(before)} -> {shape(after)}")
    text = json.dumps(items)
    for secret_file in secret_files:
        secret = open(secret_file).read().strip()
        if len(secret) >= 16 and secret in text:
            breaches.append(f"the content of {secret_file} is in the cluster's objects")
    for breach in breaches:
        print(breach)
    sys.exit(1 if breaches else 0)


if __name__ == "__main__":
    main()
