"""docker-py against podbridge (DOCKER_HOST from the environment); exits non-zero on failure."""
import sys

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


def run_remove():
    assert client.containers.run("busybox", ["echo", "hello py"], remove=True) == b"hello py\n"


def run_exit_code():
    try:
        client.containers.run("busybox", ["sh", "-c", "exit 4"], remove=True)
    except docker.errors.ContainerError as error:
        assert error.exit_status == 4, error.exit_status
    else:
        raise AssertionError("no ContainerError")


def detached_exec_and_kill():
    container = client.containers.run("busybox", ["sleep", "300"], detach=True, name="pyc")
    try:
        assert client.containers.get("pyc").status == "running"
        result = container.exec_run(["sh", "-c", "echo a; exit 4"])
        assert (result.exit_code, result.output) == (4, b"a\n"), result
        for _ in range(4):  # docker-py loses bytes that arrive with the 101 (docker-py#2042)
            assert container.exec_run(["ls", "/"]).output, "empty exec output"
        assert [c.name for c in client.containers.list(filters={"name": "pyc"})] == ["pyc"]
        assert [c.name for c in client.containers.list(all=True, filters={"id": container.id[:10]})] == ["pyc"]
        container.kill()
        container.reload()
        assert (container.status, container.attrs["State"]["ExitCode"]) == ("exited", 137), container.attrs["State"]
    finally:
        container.remove(force=True)


def logs_and_wait():
    container = client.containers.run("busybox", ["sh", "-c", "echo one; echo two; exit 2"], detach=True)
    assert container.wait()["StatusCode"] == 2
    assert container.logs() == b"one\ntwo\n", container.logs()
    container.remove()


def archive_roundtrip():
    import io
    import tarfile
    container = client.containers.run("busybox", ["sleep", "300"], detach=True)
    try:
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            payload = b"from docker-py\n"
            info = tarfile.TarInfo("py.txt")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        assert container.put_archive("/tmp", data.getvalue())
        stream, stat = container.get_archive("/tmp/py.txt")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            assert tar.extractfile("py.txt").read() == b"from docker-py\n"
        assert stat["name"] == "py.txt" and stat["size"] == 15, stat
    finally:
        container.remove(force=True)


def archive_before_start():
    import io
    import tarfile
    container = client.containers.create("busybox", ["cat", "/tmp/early.txt"])
    try:
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            payload = b"early\n"
            info = tarfile.TarInfo("early.txt")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        assert container.put_archive("/tmp", data.getvalue())
        container.start()
        assert container.wait()["StatusCode"] == 0
        assert container.logs() == b"early\n", container.logs()
    finally:
        container.remove(force=True)


def images_networks_volumes():
    client.images.pull("alpine", tag="latest")
    assert client.images.get("alpine:latest").id.startswith("sha256:")
    network = client.networks.create("pynet", labels={"a": "b"})
    assert [n.name for n in client.networks.list(filters={"label": "a=b"})] == ["pynet"]
    network.remove()
    volume = client.volumes.create("pyvol")
    assert client.volumes.get("pyvol").name == "pyvol"
    volume.remove()


check("containers.run(remove=True)", run_remove)
check("containers.run exit code", run_exit_code)
check("detached, exec_run, list filters, kill", detached_exec_and_kill)
check("logs and wait", logs_and_wait)
check("put_archive / get_archive", archive_roundtrip)
check("put_archive before start", archive_before_start)
check("images, networks, volumes", images_networks_volumes)
sys.exit(1 if failures else 0)
