"""testcontainers-python's DockerCompose (which runs `docker compose`) on compose/compose.yaml:
a published port, exec in a service, a service's logs, then down. Usage: tc_python_compose.py DIR"""
import os
import sys
import urllib.parse
import urllib.request

from testcontainers.compose import DockerCompose

with DockerCompose(sys.argv[1], compose_file_name="compose.yaml", wait=True) as compose:
    port = compose.get_service_port("web", 80)
    host = urllib.parse.urlparse(os.environ["DOCKER_HOST"]).hostname  # ports bind on its address
    body = urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=10).read()
    assert body == b"hello-compose\n", body
    out, _, code = compose.exec_in_container(["redis-cli", "ping"], service_name="redis")
    assert (out.strip(), code) == ("PONG", 0), (out, code)
    print(f"web={body!r} exec={out.strip()}")
print("down")
