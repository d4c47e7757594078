"""Soak/load against podbridge (benches/soak.sh sets it up): N client threads repeat
create/start/exec/logs/cp/stop/remove for a fixed time, one thread runs compose up/down; every
request is timed by kind. A sampler records podbridge's resident memory, open file descriptors
and threads. Prints the table; exits 1 on unexplained errors, objects left, or curves that keep
growing. Traffic goes to podbridge on loopback only.

Usage: soak.py PID CLIENTS SECONDS COMPOSE_BIN COMPOSE_FILE KUBECTL_NS_PREFIX..."""
import io
import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections import defaultdict

import docker

pid, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
compose_bin, compose_file = sys.argv[4], sys.argv[5]
kubectl = sys.argv[6:]

lock = threading.Lock()
latency = defaultdict(list)
errors = defaultdict(list)
deadline = time.monotonic() + seconds


def timed(kind, fn, *args, **kwargs):
    started = time.monotonic()
    try:
        return fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - every failure is counted and shown
        with lock:
            errors[kind].append(repr(error)[:200])
        return None
    finally:
        with lock:
            latency[kind].append(time.monotonic() - started)


def payload():
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        body = b"soak\n"
        info = tarfile.TarInfo("soak.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return data.getvalue()


def client(number):
    api = docker.from_env(timeout=180).api
    tar = payload()
    round_ = 0
    while time.monotonic() < deadline:
        round_ += 1
        name = f"soak-{number}-{round_}"
        created = timed("create", api.create_container, "busybox", ["sleep", "300"], name=name)
        if not created:
            continue
        cid = created["Id"]
        timed("cp-in", api.put_archive, cid, "/tmp", tar)
        if timed("start", api.start, cid) is None and errors["start"]:
            pass
        exec_id = timed("exec-create", api.exec_create, cid, ["cat", "/tmp/soak.txt"])
        if exec_id:
            out = timed("exec-start", api.exec_start, exec_id["Id"])
            if out is not None and out != b"soak\n":
                with lock:
                    errors["exec-output"].append(repr(out)[:100])
        timed("logs", api.logs, cid)
        stream = timed("cp-out", api.get_archive, cid, "/tmp/soak.txt")
        if stream:
            b"".join(stream[0])
        timed("stop", api.stop, cid, timeout=1)
        timed("remove", api.remove_container, cid, force=True)


def compose_loop():
    env = dict(os.environ)
    while time.monotonic() < deadline:
        for kind, args in (("compose-up", ["up", "-d", "--wait"]), ("compose-down", ["down", "-v"])):
            def run():
                result = subprocess.run(
                    [compose_bin, "-p", "soak", "-f", compose_file, *args],
                    capture_output=True, text=True, timeout=300, env=env,
                )
                if result.returncode != 0:
                    raise RuntimeError(result.stderr[-300:])
            timed(kind, run)


samples = []


def sampler():
    while time.monotonic() < deadline + 5:
        try:
            with open(f"/proc/{pid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            rss = int(fields["VmRSS"].split()[0]) / 1024
            threads = int(fields["Threads"])
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            samples.append((time.monotonic(), rss, fds, threads))
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(2)


threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
threads.append(threading.Thread(target=compose_loop))
watcher = threading.Thread(target=sampler)
watcher.start()
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
watcher.join()

left = subprocess.run(
    [*kubectl, "get", "pods,services,configmaps,persistentvolumeclaims",
     "-l", "app.kubernetes.io/managed-by=podbridge", "-o", "name"],
    capture_output=True, text=True,
).stdout.split()

print(f"{clients} clients + compose for {seconds:.0f} s")
print(f"{'kind':<14}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}")
for kind in sorted(latency):
    values = sorted(latency[kind])
    p50 = statistics.median(values) * 1000
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
    print(f"{kind:<14}{len(values):>9}{len(errors[kind]):>8}{p50:>9.0f}{p99:>9.0f}")


def thirds(index):
    """Mean of a series over the first and the last third of the run (after warm-up)."""
    values = [sample[index] for sample in samples]
    third = max(1, len(values) // 3)
    return statistics.mean(values[third:2 * third] or values), statistics.mean(values[-third:])


for label, index in (("RSS MiB", 1), ("open fds", 2), ("threads", 3)):
    middle, last = thirds(index)
    peak = max(sample[index] for sample in samples)
    print(f"{label:<10} middle third {middle:8.1f}  last third {last:8.1f}  peak {peak:8.1f}")
print(f"objects left in the namespace: {len(left)}")
failed = False
for kind, found in sorted(errors.items()):
    if found:
        failed = True
        print(f"errors in {kind} (first 3): {found[:3]}")
if left:
    failed = True
    print("left:", " ".join(left))
rss_middle, rss_last = thirds(1)
if rss_last > rss_middle * 1.25 + 5:
    failed = True
    print(f"resident memory keeps growing: {rss_middle:.1f} -> {rss_last:.1f} MiB")
fd_middle, fd_last = thirds(2)
if fd_last > fd_middle * 1.5 + 20:
    failed = True
    print(f"open file descriptors keep growing: {fd_middle:.0f} -> {fd_last:.0f}")
sys.exit(1 if failed else 0)
