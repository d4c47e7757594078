"""testcontainers-python against podbridge: redis with a log wait strategy, a PING round trip over
the mapped port, and (unless TESTCONTAINERS_RYUK_DISABLED) the Ryuk reaper. Prints the container
id and the session id so the caller can check what is left in the cluster afterwards."""
import os
import socket
import sys

from testcontainers.core.container import DockerContainer
from testcontainers.core.labels import SESSION_ID
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

redis = (
    DockerContainer("redis:latest")
    .with_exposed_ports(6379)
    .waiting_for(LogMessageWaitStrategy("Ready to accept connections").with_startup_timeout(120))
)
with redis:
    host, port = redis.get_container_host_ip(), int(redis.get_exposed_port(6379))
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"PING\r\n")
        reply = conn.recv(64)
    assert reply == b"+PONG\r\n", reply
    print(f"container={redis.get_wrapped_container().id} session={SESSION_ID} reply={reply!r}")
    # a second container left behind on purpose: only Ryuk removes it
    leftover = DockerContainer("busybox:latest").with_command("sleep 600")
    leftover.start()
    print(f"leftover={leftover.get_wrapped_container().id}")
sys.stdout.flush()
if os.environ.get("TESTCONTAINERS_RYUK_DISABLED", "").lower() != "true":
    # die without atexit (which would stop Ryuk): the leftover must then be reaped by Ryuk alone
    os._exit(0)
