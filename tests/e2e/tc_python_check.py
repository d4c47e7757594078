"""testcontainers-python against podbridge, with the library's default settings (nothing but
DOCKER_HOST): a network, redis on it with a log wait strategy, a file copied in before start, a
PING round trip over the mapped port, exec, a second container reaching redis by its network
alias, a copy in after start and a copy out. Then the process dies without its exit hooks,
leaving everything behind: only Ryuk may remove it. Prints what the caller checks afterwards."""
import os
import pathlib
import socket
import sys
import tempfile

from testcontainers.core.container import DockerContainer
from testcontainers.core.labels import SESSION_ID
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

network = Network().create()
redis = (
    DockerContainer("redis:latest")
    .with_exposed_ports(6379)
    .with_network(network)
    .with_network_aliases("cache")
    .with_copy_into_container(b"before-start\n", "/data/before.txt")
    .waiting_for(LogMessageWaitStrategy("Ready to accept connections").with_startup_timeout(120))
)
redis.start()
host, port = redis.get_container_host_ip(), int(redis.get_exposed_port(6379))
with socket.create_connection((host, port), timeout=10) as conn:
    conn.sendall(b"PING\r\n")
    reply = conn.recv(64)
assert reply == b"+PONG\r\n", reply

result = redis.exec(["redis-cli", "ping"])
assert (result.exit_code, result.output.strip()) == (0, b"PONG"), result

peer = DockerContainer("busybox:latest").with_network(network).with_command(
    ["sh", "-c", "printf 'PING\\r\\n' | nc cache 6379"]
)
peer.start()
assert peer.wait() == 0
assert b"+PONG" in peer.get_logs()[0], peer.get_logs()

redis.copy_into_container(b"after-start\n", "/data/after.txt")
result = redis.exec(["cat", "/data/before.txt", "/data/after.txt"])
assert result.output == b"before-start\nafter-start\n", result
with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "copied.txt"
    redis.copy_from_container("/data/before.txt", out)
    assert out.read_bytes() == b"before-start\n", out.read_bytes()

print(f"container={redis.get_wrapped_container().id} session={SESSION_ID} reply={reply!r}")
print(f"leftover={redis.get_wrapped_container().id}")
print(f"peer={peer.get_wrapped_container().id}")
print(f"network={network.id}")
sys.stdout.flush()
# die without atexit (which would stop Ryuk): what is left must be reaped by Ryuk alone
os._exit(0)
