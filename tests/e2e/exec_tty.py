"""Exec TTY size checks (DOCKER_HOST from the environment); exits non-zero on failure.

    exec_tty.py cli CONTAINER     `docker exec -it` in a 37x123 pseudo-terminal: the CLI's size
                                  reaches the exec's terminal
    exec_tty.py resize CONTAINER  docker-py: exec_start(socket=True), then exec_resize(h=33, w=111)
                                  while the command sleeps; `stty size` must see it
    exec_tty.py run IMAGE         `docker run -it --rm` in a 29x97 pseudo-terminal: the CLI's resize
                                  of the container reaches its terminal through the attach session
"""
import os
import pty
import select
import struct
import sys
import termios
import time
import fcntl

import docker


def read_until_eof(fd_read, deadline):
    out = b""
    while time.time() < deadline:
        ready, _, _ = select.select([fd_read], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = fd_read.recv(4096) if hasattr(fd_read, "recv") else os.read(fd_read, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def cli(container):
    pid, fd = pty.fork()
    if pid == 0:
        # The first size lands right after the process starts (as with kubectl exec): wait a bit.
        os.execvp("docker", ["docker", "exec", "-it", container, "sh", "-c", "sleep 0.5; stty size"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 123, 0, 0))
    out = read_until_eof(fd, time.time() + 60)
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace").replace("\r", "").strip()
    assert text == "37 123", repr(text)
    assert os.waitstatus_to_exitcode(status) == 0, status


def resize(container):
    api = docker.from_env().api
    exec_id = api.exec_create(container, ["sh", "-c", "sleep 2; stty size"], tty=True, stdin=True)["Id"]
    sock = api.exec_start(exec_id, tty=True, socket=True)
    raw = getattr(sock, "_sock", sock)
    time.sleep(0.5)
    api.exec_resize(exec_id, height=33, width=111)
    out = read_until_eof(raw, time.time() + 60)
    raw.close()
    text = out.decode(errors="replace").replace("\r", "").strip()
    assert text.endswith("33 111"), repr(text)
    for _ in range(50):
        inspect = api.exec_inspect(exec_id)
        if not inspect["Running"]:
            break
        time.sleep(0.1)
    assert inspect["ExitCode"] == 0, inspect


def run(image):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("docker", ["docker", "run", "-it", "--rm", image, "sh", "-c", "sleep 2; stty size"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 29, 97, 0, 0))
    out = read_until_eof(fd, time.time() + 120)
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace").replace("\r", "").strip()
    assert text.endswith("29 97"), repr(text)
    assert os.waitstatus_to_exitcode(status) == 0, status


{"cli": cli, "resize": resize, "run": run}[sys.argv[1]](sys.argv[2])
