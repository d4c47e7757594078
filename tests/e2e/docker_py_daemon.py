"""docker-py against podbridge, exec and attach as a Docker daemon answers them (issue 12):
TTY framing, detached exec, exec User and WorkingDir, attach with logs, hang-ups, and the exact
bytes of a hijacked exec. DOCKER_HOST from the environment; exits non-zero on failure."""
import os
import socket
import sys
import time
import urllib.parse

import docker

client = docker.from_env()
failures = []


def check(name, fn):
    try:
        fn()
        print(f"  py ok   {name}")
    except Exception as error:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"  py FAIL {name}: {error!r}")


def sleeper(name, **kwargs):
    container = client.containers.run("busybox", ["sleep", "600"], detach=True, name=name, **kwargs)
    container.reload()
    assert container.status == "running", container.status
    return container


def until(what, fn, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def raw_request(path, body=b"", upgrade=True):
    """Sends one HTTP request on a fresh loopback socket; returns (socket, head, first bytes)."""
    url = urllib.parse.urlparse(os.environ["DOCKER_HOST"].replace("tcp://", "http://"))
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    if upgrade:
        head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before the response head: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return sock, head.decode(), rest


def read_to_end(sock, rest):
    data = rest
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def tty_exec_is_raw(c):
    result = c.exec_run(["sh", "-c", "echo out; echo err >&2"], tty=True)
    assert result == (0, b"out\r\nerr\r\n"), result
    demuxed = c.exec_run(["echo", "hi"], tty=True, demux=True)
    assert demuxed == (0, (b"hi\r\n", None)), demuxed
    streamed = b"".join(c.exec_run(["echo", "streamed"], tty=True, stream=True).output)
    assert streamed == b"streamed\r\n", streamed
    # Not a TTY: frames, stdout and stderr apart.
    plain = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
    assert plain == (0, (b"out\n", b"err\n")), plain


def detached_exec(c):
    exec_id = client.api.exec_create(c.id, ["sh", "-c", "sleep 3; touch /tmp/detached; exit 3"])["Id"]
    assert client.api.exec_start(exec_id, detach=True) in (b"", ""), "detached start answers empty"
    running = client.api.exec_inspect(exec_id)
    assert (running["Running"], running["ExitCode"]) == (True, None), running
    done = until("the detached exec to end", lambda: not client.api.exec_inspect(exec_id)["Running"])
    assert done
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 3, client.api.exec_inspect(exec_id)
    assert c.exec_run(["ls", "/tmp/detached"]) == (0, b"/tmp/detached\n")
    # The high-level call (docker exec -d): returns at once, the side effect follows.
    result = c.exec_run(["sh", "-c", "echo x > /tmp/detached2"], detach=True)
    assert result.exit_code is None, result
    until("the detached exec's file", lambda: c.exec_run(["cat", "/tmp/detached2"]).output == b"x\n")


def exec_user(c):
    assert c.exec_run(["id", "-u"]) == (0, b"0\n")
    assert c.exec_run(["id", "-u"], user="nobody") == (0, b"65534\n")
    assert c.exec_run(["id", "-un"], user="65534") == (0, b"nobody\n")
    assert c.exec_run(["id", "-u"], user="root") == (0, b"0\n")
    assert c.exec_run(["sh", "-c", "echo $A; id -u"], user="nobody", environment=["A=kept"]) == (
        0, b"kept\n65534\n")
    missing = c.exec_run(["id"], user="postgres")
    assert missing.exit_code == 126, missing
    assert b"unable to find user postgres: no matching entries in passwd file" in missing.output, missing
    hostile = c.exec_run(["id"], user="x;touch /tmp/user-pwned")
    assert hostile.exit_code == 126, hostile
    assert c.exec_run(["ls", "/tmp/user-pwned"]).exit_code != 0, "the user name ran as code"


def exec_user_of_non_root_container():
    c = sleeper("pyd-user", user="1000")
    try:
        assert c.exec_run(["id", "-u"]) == (0, b"1000\n")
        assert c.exec_run(["id", "-u"], user="1000") == (0, b"1000\n")
        refused = c.exec_run(["id", "-u"], user="nobody")
        assert refused.exit_code == 126, refused
        assert b"cannot run as user nobody" in refused.output, refused
    finally:
        c.remove(force=True)


def exec_workdir(c):
    assert c.exec_run(["pwd"], workdir="/does/not/exist") == (0, b"/does/not/exist\n")
    hostile = "/tmp/a b/$(touch /tmp/dir-pwned)/\";x"
    assert c.exec_run(["pwd"], workdir=hostile) == (0, hostile.encode() + b"\n")
    assert c.exec_run(["ls", "/tmp/dir-pwned"]).exit_code != 0, "the directory name ran as code"
    assert c.exec_run(["pwd"], workdir="/tmp", user="nobody") == (0, b"/tmp\n")


def attach_logs_ends():
    # (stdout then stderr: the kubelet's log may interleave the two streams either way)
    c = client.containers.run("busybox", ["sh", "-c", "echo one; echo two >&2; sleep 600"], detach=True,
                              name="pyd-attach")
    lines = lambda data: sorted(data.splitlines())  # noqa: E731
    try:
        until("the container's output", lambda: lines(c.logs()) == [b"one", b"two"])
        started = time.time()
        assert lines(c.attach(stream=False, logs=True, stdout=True, stderr=True)) == [b"one", b"two"]
        assert time.time() - started < 20, "attach without stream waited"
        assert c.attach(stream=False, logs=False, stdout=True) == b""
        c.kill()
        c.wait()
        # Killed (podbridge deleted the pod): the output it kept, then the end.
        assert lines(c.attach(stream=False, logs=True, stdout=True, stderr=True)) == [b"one", b"two"]
    finally:
        c.remove(force=True)


def attach_hang_up_frees_the_stream(c):
    # More attach-and-hang-up rounds than podbridge's default of 64 stream slots: a leaked slot
    # per round would end in 429s that never clear.
    path = f"/containers/{c.id}/attach?stream=1&stdout=1&stderr=1"
    deadline = None
    for _ in range(70):
        while True:
            sock, head, _ = raw_request(path)
            status = head.split(" ", 2)[1]
            if status == "101":
                sock.close()
                break
            sock.close()
            assert status == "429", head
            deadline = deadline or time.time() + 20
            assert time.time() < deadline, "stream slots of closed attaches did not come back"
            time.sleep(0.5)
    assert c.exec_run(["echo", "still serving"]) == (0, b"still serving\n")


def hijacked_exec_bytes(c):
    # As in moby, the start body's Tty decides the media type and the framing (the exec's own
    # decides only whether the process gets a terminal): a TTY exec started without Tty is
    # multiplexed, its terminal's output as stdout frames.
    for tty, start_tty, media, expected in [
        (True, True, "application/vnd.docker.raw-stream", b"hi\r\n"),
        (True, False, "application/vnd.docker.multiplexed-stream", b"\x01\x00\x00\x00\x00\x00\x00\x04hi\r\n"),
        (False, False, "application/vnd.docker.multiplexed-stream", b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"),
    ]:
        exec_id = client.api.exec_create(c.id, ["echo", "hi"], tty=tty)["Id"]
        body = b'{"Detach":false,"Tty":%s}' % (b"true" if start_tty else b"false")
        sock, head, rest = raw_request(f"/exec/{exec_id}/start", body)
        lines = head.split("\r\n")
        assert lines[0] == "HTTP/1.1 101 Switching Protocols", lines
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        assert headers.get("content-type") == media, headers
        assert headers.get("upgrade") == "tcp", headers
        assert read_to_end(sock, rest) == expected, (tty, rest)
        sock.close()
        assert client.api.exec_inspect(exec_id)["ExitCode"] == 0


def bind_is_two_way():
    """docker-py's own bind round trip: what the container writes is on this side once run()
    returns (BIND_DIR is under podbridge's bind_roots)."""
    directory = os.path.join(os.environ["BIND_DIR"], "pybind")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "in"), "w") as f:
        f.write("to-the-container")
    out = client.containers.run(
        "busybox", ["sh", "-c", "cat /data/in; echo from-the-container > /data/out"],
        volumes={directory: {"bind": "/data", "mode": "rw"}}, remove=True)
    assert out == b"to-the-container", out
    with open(os.path.join(directory, "out")) as f:
        assert f.read() == "from-the-container\n"


def with_container(fn):
    def run():
        c = sleeper(f"pyd-{fn.__name__.replace('_', '-')}")
        try:
            fn(c)
        finally:
            c.remove(force=True)
    return run


check("exec tty=True is raw (stream, demux), without TTY framed", with_container(tty_exec_is_raw))
check("exec detach=True: Running, then ExitCode and the side effect", with_container(detached_exec))
check("exec user by name and uid; unknown user is 126 as in Docker", with_container(exec_user))
check("exec user of a container running as uid 1000", exec_user_of_non_root_container)
check("exec workdir that does not exist is created; hostile names are data", with_container(exec_workdir))
check("attach(stream=False, logs=True) returns the output and ends", attach_logs_ends)
check("attach hang-ups free their stream slots", with_container(attach_hang_up_frees_the_stream))
check("hijacked exec: 101, content type and framing by the start's Tty, exact bytes", with_container(hijacked_exec_bytes))
check("bind mount both ways: run(volumes=...) then read back", bind_is_two_way)
sys.exit(1 if failures else 0)
