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
import os, signal, ssl, sys, threading, urllib.request

import kwatch

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
    """Keeps TABLE (key -> value(object)) in step with RESOURCE, publishing every change."""
    def key(obj):
        return (obj["metadata"]["namespace"], obj["metadata"]["name"])

    def on_list(items):
        with lock:
            table.clear()
            table.update({key(o): value(o) for o in items if value(o)})
        publish()

    def on_event(kind, obj):
        with lock:
            if kind == "DELETED" or not value(obj):
                table.pop(key(obj), None)
            else:
                table[key(obj)] = value(obj)
        publish()

    kwatch.follow(get, "/api/v1/" + resource, on_list, on_event,
                  lambda message: print("svc-dns: " + message, flush=True))

threading.Thread(target=follow, args=("endpoints", endpoints, endpoint_value), daemon=True).start()
follow("services", cluster_ips, service_value)
