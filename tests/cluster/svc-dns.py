#!/usr/bin/env python3
"""Cluster DNS feeder: keeps dnsmasq's hosts file in sync with Services and Endpoints (watch-driven).

    svc-dns.py STATE_DIR HOSTS_FILE DNSMASQ_PIDFILE

Lists Services and Endpoints once each, then follows a watch from that resourceVersion; every
change rewrites HOSTS_FILE with
    <ip> <svc>.<ns>.svc.cluster.local <svc>.<ns>.svc <svc>.<ns>
and sends SIGHUP to dnsmasq. A Service with a cluster IP publishes that IP; a headless Service
(clusterIP None) publishes one line per endpoint address, ready or not (the Endpoints controller
lists not-ready addresses as ready when the Service sets publishNotReadyAddresses), so names of
pods behind headless Services resolve as with CoreDNS. On any error (410 Gone, apiserver
restart) a watch re-lists. Uses kube-proxy's identity (system:node-proxier may list/watch
Services and Endpoints cluster-wide).
"""
import json, os, signal, ssl, sys, threading, time, urllib.request

state, hosts, pidfile = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=os.path.join(state, "pki/ca.crt"))
token = open(os.path.join(state, "pki/kube-proxy.token")).read().strip()
lock = threading.Lock()
cluster_ips = {}   # (ns, name) -> clusterIP, or "None" for headless Services
endpoints = {}     # (ns, name) -> [pod IPs]

def get(path, timeout):
    r = urllib.request.Request("https://127.0.0.1:6443" + path, headers={"Authorization": "Bearer " + token})
    return urllib.request.urlopen(r, context=ctx, timeout=timeout)

def service_value(svc):
    return svc.get("spec", {}).get("clusterIP") or None

def endpoint_value(ep):
    ips = []
    for subset in ep.get("subsets") or []:
        for key in ("addresses", "notReadyAddresses"):
            ips += [a["ip"] for a in subset.get(key) or [] if a.get("ip")]
    return sorted(set(ips))

def publish():
    lines = []
    with lock:
        for (ns, n), ip in sorted(cluster_ips.items()):
            ips = endpoints.get((ns, n), []) if ip == "None" else [ip]
            lines += ["%s %s.%s.svc.cluster.local %s.%s.svc %s.%s\n" % (a, n, ns, n, ns, n, ns) for a in ips]
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

def follow(resource, table, value):
    """List RESOURCE into TABLE, then apply its watch events; re-list after any error."""
    while True:
        try:
            with get("/api/v1/" + resource, 10) as resp:
                lst = json.load(resp)
            fresh = {(o["metadata"]["namespace"], o["metadata"]["name"]): value(o) for o in lst["items"]}
            with lock:
                table.clear()
                table.update({k: v for k, v in fresh.items() if v})
            publish()
            rv = lst["metadata"]["resourceVersion"]
            while True:
                path = "/api/v1/%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=%s" % (resource, rv)
                with get(path, 330) as resp:
                    for line in resp:
                        ev = json.loads(line)
                        obj = ev["object"]
                        if ev["type"] == "ERROR":
                            raise RuntimeError(obj.get("message", "watch error"))
                        rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] == "BOOKMARK":
                            continue
                        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                        with lock:
                            if ev["type"] == "DELETED" or not value(obj):
                                table.pop(key, None)
                            else:
                                table[key] = value(obj)
                        publish()
        except Exception as e:
            print("svc-dns: %s: %s; re-listing" % (resource, e), flush=True)
            time.sleep(0.5)

threading.Thread(target=follow, args=("endpoints", endpoints, endpoint_value), daemon=True).start()
follow("services", cluster_ips, service_value)
