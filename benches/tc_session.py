"""One testcontainers-python session with the library's defaults (DOCKER_HOST only, Ryuk on):
redis with a log wait, its mapped port, one PING round trip, teardown. Run in a fresh process
per sample by benches/docker_run.sh, which times the process from start to exit; prints the
container's ID so the caller can check it went."""
import socket

from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

redis = (
    DockerContainer("redis:latest")
    .with_exposed_ports(6379)
    .waiting_for(LogMessageWaitStrategy("Ready to accept connections").with_startup_timeout(120))
)
redis.start()
host, port = redis.get_container_host_ip(), int(redis.get_exposed_port(6379))
with socket.create_connection((host, port), timeout=10) as conn:
    conn.sendall(b"PING\r\n")
    assert conn.recv(64) == b"+PONG\r\n"
cid = redis.get_wrapped_container().id
redis.stop()
print(cid)
