#!/usr/bin/env python3
"""Cluster DNS feeder: keeps dnsmasq's hosts file in sync with the Services (watch-driven).

    svc-dns.py STATE_DIR HOSTS_FILE DNSMASQ_PIDFILE

Lists Services once, then follows a watch (GET /api/v1/services?watch=1) from that
resourceVersion; every change rewrites HOSTS_FILE with
    <clusterIP> <svc>.<ns>.svc.cluster.local <svc>.<ns>.svc <svc>.<ns>
and sends SIGHUP to dnsmasq. On any error (410 Gone, apiserver restart) it re-lists.
Headless Services (clusterIP None) are not published. Uses kube-proxy's identity
(system:node-proxier may list/watch Services cluster-wide).
"""
import json, os, signal, ssl, sys, time, urllib.request

state, hosts, pidfile = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=os.path.join(state, "pki/ca.crt"))
token = open(os.path.join(state, "pki/kube-proxy.token")).read().strip()
services = {}   # (ns, name) -> clusterIP

def get(path, timeout):
    r = urllib.request.Request("https://127.0.0.1:6443" + path, headers={"Authorization": "Bearer " + token})
    return urllib.request.urlopen(r, context=ctx, timeout=timeout)

def ip_of(svc):
    ip = svc.get("spec", {}).get("clusterIP", "")
    return ip if ip and ip != "None" else None

def publish():
    lines = ["%s %s.%s.svc.cluster.local %s.%s.svc %s.%s\n" % (ip, n, ns, n, ns, n, ns)
             for (ns, n), ip in sorted(services.items())]
    text = "".join(lines)
    try:
        if open(hosts).read() == text:
            return
    except OSError:
        pass
    with open(hosts + ".tmp", "w") as f:
        f.write(text)
    os.chmod(hosts + ".tmp", 0o644)
    os.replace(hosts + ".tmp", hosts)
    try:
        os.kill(int(open(pidfile).read().split()[0]), signal.SIGHUP)
    except (OSError, ValueError):
        pass

while True:
    try:
        with get("/api/v1/services", 10) as resp:
            lst = json.load(resp)
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): ip_of(s) for s in lst["items"]}
        services = {k: v for k, v in services.items() if v}
        publish()
        rv = lst["metadata"]["resourceVersion"]
        while True:
            with get("/api/v1/services?watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=" + rv, 330) as resp:
                for line in resp:
                    ev = json.loads(line)
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        raise RuntimeError(obj.get("message", "watch error"))
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] == "BOOKMARK":
                        continue
                    key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                    if ev["type"] == "DELETED" or not ip_of(obj):
                        services.pop(key, None)
                    else:
                        services[key] = ip_of(obj)
                    publish()
    except Exception as e:  # re-list after errors
        print("svc-dns: %s; re-listing" % e, flush=True)
        time.sleep(0.5)
