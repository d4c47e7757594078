#!/usr/bin/env python3
"""Measurements behind benches/docker_run.sh that need a clock on both sides of podbridge.

    docker_run.py baseline  N POD_JSON      the same pod, created and awaited directly through the
                                            Kubernetes API (POST, watch to exit, DELETE, watch to
                                            gone): prints one duration in ms per line
    docker_run.py latency   N               podbridge vs the cluster: for N containers
                                            (sh -c 'sleep 1'), the time between this script's own
                                            pod watch seeing main running / terminated and
                                            podbridge's answer (start returns, `start` event,
                                            wait returns, `die` event); one line per sample
    docker_run.py parallel  N POD_JSON      N copies of the pod at once, each created, awaited to
                                            exit, deleted and awaited gone as in `baseline`:
                                            prints the wall time of the whole batch in ms
    docker_run.py running   N POD_JSON      N copies of the pod (its command replaced by
                                            `sleep 3600`) created at once and awaited until
                                            every one runs (what `compose up --wait` waits
                                            for): prints that wall time in ms, then deletes them
    docker_run.py tcsession N POD_JSON      what benches/tc_session.py does, on the same redis pod
                                            made directly: POST, follow its log until redis is
                                            ready, PING its pod IP, DELETE, watch to gone (the
                                            caller times the process, as it times tc_session.py)
    docker_run.py phases    LOG [OFFSET]    podbridge's phase spans (JSON log, target
                                            podbridge::timing) from byte OFFSET on: per span
                                            name (requests by method and route), count and
                                            median wall time (busy + idle)
    docker_run.py steps     LOG START_NS END_NS  one client run (wall clock START_NS..END_NS, as
                                            `date +%s%N`) split by podbridge's request spans:
                                            the client's own start-up before its first request,
                                            requests before the first start, the starts, and
                                            the client's exit after the last answer (ms)
    docker_run.py fill      N               creates N containers (sleep 3600) through podbridge
                                            and starts them, 8 at a time; prints how many run

Environment: DOCKER_PORT (podbridge on 127.0.0.1), KUBE_SERVER, KUBE_TOKEN, KUBE_CA (file),
KUBE_NAMESPACE. Standard library only, so the bench needs no venv.
"""
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

NS = os.environ["KUBE_NAMESPACE"]
SERVER = urllib.parse.urlparse(os.environ["KUBE_SERVER"])
TOKEN = os.environ["KUBE_TOKEN"]
CA = os.environ["KUBE_CA"]
DOCKER_PORT = int(os.environ["DOCKER_PORT"])


def now_ms():
    return time.monotonic() * 1000.0


def kube(method, path, body=None, timeout=60):
    ctx = ssl.create_default_context(cafile=CA)
    conn = http.client.HTTPSConnection(SERVER.hostname, SERVER.port, context=ctx, timeout=timeout)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status >= 300 and not (method == "DELETE" and resp.status == 404):
        raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
    return json.loads(data) if data else None


def docker(method, path, body=None, timeout=300):
    conn = http.client.HTTPConnection("127.0.0.1", DOCKER_PORT, timeout=timeout)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
    return json.loads(data) if data.strip() else None


def kube_stream(path, timeout):
    """A streaming GET (watch, log follow): the open response, read line by line."""
    ctx = ssl.create_default_context(cafile=CA)
    conn = http.client.HTTPSConnection(SERVER.hostname, SERVER.port, context=ctx, timeout=timeout)
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    return conn, conn.getresponse()


class PodWatch(threading.Thread):
    """Watches the namespace's pods; records when each pod's `main` was first seen running,
    terminated, and when the pod was deleted, keyed by pod name and by container-id label."""

    def __init__(self):
        super().__init__(daemon=True)
        listing = kube("GET", f"/api/v1/namespaces/{NS}/pods")
        self.version = listing["metadata"]["resourceVersion"]
        self.lock = threading.Condition()
        self.seen = {}  # key -> {"running": t, "terminated": t, "deleted": t}
        self.start()

    def _mark(self, pod, what, t):
        keys = [pod["metadata"]["name"]]
        cid = pod["metadata"].get("labels", {}).get("podbridge.io/container-id")
        if cid:
            keys.append(cid)
        with self.lock:
            for key in keys:
                self.seen.setdefault(key, {}).setdefault(what, t)
            self.lock.notify_all()

    def run(self):
        _, resp = kube_stream(f"/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={self.version}", 3600)
        for line in resp:
            t = now_ms()
            event = json.loads(line)
            pod = event["object"]
            if event["type"] == "DELETED":
                self._mark(pod, "deleted", t)
                continue
            for status in pod.get("status", {}).get("containerStatuses") or []:
                if status["name"] != "main":
                    continue
                state = status.get("state", {})
                if "running" in state:
                    self._mark(pod, "running", t)
                if "terminated" in state:
                    self._mark(pod, "terminated", t)

    def wait_for(self, key, what, timeout=120):
        deadline = time.monotonic() + timeout
        with self.lock:
            while what not in self.seen.get(key, {}):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{key}: never saw {what}")
                self.lock.wait(left)
            return self.seen[key][what]


class EventStream(threading.Thread):
    """podbridge's /events: arrival time of each container action, keyed by (id[:12], action)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.lock = threading.Condition()
        self.seen = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", DOCKER_PORT, timeout=3600)
        self.conn.request("GET", "/events?filters=" + urllib.parse.quote('{"type":["container"]}'))
        self.resp = self.conn.getresponse()
        self.start()

    def run(self):
        buffer = b""
        while True:
            chunk = self.resp.read1(65536)
            if not chunk:
                return
            t = now_ms()
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                event = json.loads(line)
                key = (event.get("id", "")[:12], event.get("Action") or event.get("status"))
                with self.lock:
                    self.seen.setdefault(key, t)
                    self.lock.notify_all()

    def wait_for(self, cid, action, timeout=60):
        deadline = time.monotonic() + timeout
        with self.lock:
            while (cid, action) not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{cid}: no {action} event")
                self.lock.wait(left)
            return self.seen[(cid, action)]


def baseline(n, pod_file):
    with open(pod_file) as f:
        template = json.load(f)
    watch = PodWatch()
    for i in range(n):
        pod = json.loads(json.dumps(template))
        name = f"{pod['metadata']['name']}-{os.getpid()}-{i}"
        pod["metadata"]["name"] = name
        pod["metadata"]["namespace"] = NS
        t0 = now_ms()
        kube("POST", f"/api/v1/namespaces/{NS}/pods", pod)
        watch.wait_for(name, "terminated")
        kube("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}")
        watch.wait_for(name, "deleted")
        print(f"{now_ms() - t0:.0f}", flush=True)


def _copy(template, name, command=None):
    pod = json.loads(json.dumps(template))
    pod["metadata"]["name"] = name
    pod["metadata"]["namespace"] = NS
    if command:
        main = next(c for c in pod["spec"]["containers"] if c["name"] == "main")
        main["command"] = command
        main.pop("args", None)
    return pod


def _at_once(n, pod_file, tag, one):
    """Runs one(watch, template, name) for n pod names at once; prints the batch's wall time."""
    with open(pod_file) as f:
        template = json.load(f)
    watch = PodWatch()
    names = [f"{template['metadata']['name']}-{tag}{os.getpid()}-{i}" for i in range(n)]
    t0 = now_ms()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda name: one(watch, template, name), names))
    print(f"{now_ms() - t0:.0f}", flush=True)
    return watch, names


def parallel(n, pod_file):
    def one(watch, template, name):
        kube("POST", f"/api/v1/namespaces/{NS}/pods", _copy(template, name))
        watch.wait_for(name, "terminated")
        kube("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}")
        watch.wait_for(name, "deleted")

    _at_once(n, pod_file, "p", one)


def running(n, pod_file):
    def one(watch, template, name):
        kube("POST", f"/api/v1/namespaces/{NS}/pods", _copy(template, name, ["sleep", "3600"]))
        watch.wait_for(name, "running")

    watch, names = _at_once(n, pod_file, "r", one)
    for name in names:
        kube("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}?gracePeriodSeconds=0")
    for name in names:
        watch.wait_for(name, "deleted")


def tcsession(n, pod_file):
    import socket
    with open(pod_file) as f:
        template = json.load(f)
    watch = PodWatch()
    for i in range(n):
        t0 = now_ms()
        name = f"{template['metadata']['name']}-t{os.getpid()}-{i}"
        kube("POST", f"/api/v1/namespaces/{NS}/pods", _copy(template, name))
        watch.wait_for(name, "running")
        conn, resp = kube_stream(f"/api/v1/namespaces/{NS}/pods/{name}/log?container=main&follow=true", 120)
        for line in resp:
            if b"Ready to accept connections" in line:
                break
        conn.close()
        ip = kube("GET", f"/api/v1/namespaces/{NS}/pods/{name}")["status"]["podIP"]
        with socket.create_connection((ip, 6379), timeout=10) as peer:
            peer.sendall(b"PING\r\n")
            assert peer.recv(64) == b"+PONG\r\n"
        # testcontainers' teardown is a forced remove (SIGKILL), so is this one
        kube("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}?gracePeriodSeconds=0")
        watch.wait_for(name, "deleted")
        print(f"{now_ms() - t0:.0f}", flush=True)


def _duration_ms(text):
    for unit, factor in (("ns", 1e-6), ("µs", 1e-3), ("us", 1e-3), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)


def _span_closes(log_file, offset=0):
    """(log line, span, wall ms) of every phase span podbridge closed, from byte OFFSET on."""
    with open(log_file, "rb") as f:
        f.seek(offset)
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            fields = line.get("fields", {})
            if line.get("target") != "podbridge::timing" or fields.get("message") != "close":
                continue
            wall = _duration_ms(fields["time.busy"]) + _duration_ms(fields["time.idle"])
            yield line, line.get("span", {}), wall


def phases(log_file, offset=0):
    import re
    ids = re.compile(r"/[0-9a-f]{12,64}(?=/|$)")
    rows = {}
    for _, span, wall in _span_closes(log_file, offset):
        name = span.get("name", "?")
        if name == "request":
            name = f"{span.get('method')} {ids.sub('/{id}', span.get('path', ''))}"
        rows.setdefault(name, []).append(wall)
    for name, walls in sorted(rows.items(), key=lambda kv: -sorted(kv[1])[len(kv[1]) // 2]):
        walls.sort()
        print(f"{name:48} {len(walls):4d} {walls[len(walls) // 2]:9.1f} {walls[-1]:9.1f}")


def _requests(log_file):
    """(start, end, method, path) of every request span, wall clock in ms."""
    from datetime import datetime
    for line, span, wall in _span_closes(log_file):
        if span.get("name") != "request":
            continue
        end = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp() * 1000
        yield end - wall, end, span.get("method"), span.get("path", "")


def steps(log_file, start_ns, end_ns):
    t0, t1 = start_ns / 1e6, end_ns / 1e6
    spans = sorted(r for r in _requests(log_file) if t0 <= r[0] and r[1] <= t1)
    if not spans:
        print("no request of this run in the log")
        return
    starts = [r for r in spans if r[2] == "POST" and r[3].endswith("/start")]
    first_start = starts[0][0] if starts else spans[-1][1]
    last_answer = max(r[1] for r in spans)
    print(f"client start-up {spans[0][0] - t0:.0f}  before the starts {first_start - spans[0][0]:.0f}  "
          f"starts {max((r[1] for r in starts), default=first_start) - first_start:.0f}  "
          f"client exit {t1 - last_answer:.0f}  ({len(spans)} requests)")


def latency(n):
    watch = PodWatch()
    events = EventStream()
    for i in range(n):
        created = docker("POST", f"/containers/create?name=lat-{os.getpid()}-{i}",
                         {"Image": "busybox", "Cmd": ["sh", "-c", "sleep 1"]})
        cid = created["Id"][:12]
        docker("POST", f"/containers/{cid}/start")
        t_start = now_ms()
        docker("POST", f"/containers/{cid}/wait")
        t_wait = now_ms()
        t_running = watch.wait_for(cid, "running")
        t_terminated = watch.wait_for(cid, "terminated")
        t_start_event = events.wait_for(cid, "start")
        t_die_event = events.wait_for(cid, "die")
        docker("DELETE", f"/containers/{cid}?force=1")
        print(f"start_return={t_start - t_running:.0f} start_event={t_start_event - t_running:.0f} "
              f"wait_return={t_wait - t_terminated:.0f} die_event={t_die_event - t_terminated:.0f}",
              flush=True)


def fill(n):
    def one(i):
        body = {"Image": "busybox", "Cmd": ["sleep", "3600"],
                "Labels": {"podbridge.bench/fill": "1"}}
        cid = docker("POST", f"/containers/create?name=fill-{i}", body)["Id"]
        try:
            docker("POST", f"/containers/{cid}/start")
            return 1
        except RuntimeError as error:
            print(f"fill-{i}: {error}", file=sys.stderr)
            return 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        print(sum(pool.map(one, range(n))))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "phases":
        phases(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
        sys.exit(0)
    if what == "steps":
        steps(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    count = int(sys.argv[2])
    if what == "baseline":
        baseline(count, sys.argv[3])
    elif what == "latency":
        latency(count)
    elif what == "parallel":
        parallel(count, sys.argv[3])
    elif what == "running":
        running(count, sys.argv[3])
    elif what == "tcsession":
        tcsession(count, sys.argv[3])
    elif what == "fill":
        fill(count)
    else:
        sys.exit(f"unknown measurement {what}")
