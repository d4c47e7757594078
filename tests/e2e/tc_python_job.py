"""testcontainers-python inside the in-cluster job pod (tests/e2e/incluster.sh), with the library's
default settings: only DOCKER_HOST is set, so Ryuk runs (served by the podbridge sidecar). Starts
redis, waits for its log line, PINGs it on the mapped port and tears it down; prints what the
caller checks."""
import socket

from testcontainers.core.container import DockerContainer
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
    print(f"host={host} port={port} reply={reply!r} container={redis.get_wrapped_container().id}")
print("stopped")
