"""docker-py and testcontainers-python building images through podbridge, with their default
settings (DOCKER_HOST only). Usage: build_clients.py docker-py|tc-python CONTEXT_DIR.
Prints `ok <what>` lines; any failed expectation raises (exit status 1)."""
import sys

import docker


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def docker_py(context):
    client = docker.from_env()
    # images.build reads "Successfully built <id>" from the stream, then inspects that short ID
    image, logs = client.images.build(path=context, tag="pbbuild-py:1", buildargs={"GREETING": "docker-py"},
                                      target="final", labels={"built.by": "docker-py"})
    lines = "".join(entry.get("stream", "") for entry in logs)
    expect("Successfully built" in lines, f"no 'Successfully built' in {lines[-300:]!r}")
    expect("pbbuild-py:1" in image.tags, f"tags {image.tags}")
    expect(image.labels.get("built.by") == "docker-py", f"labels {image.labels}")
    expect(image.attrs["Config"]["User"] == "nobody", image.attrs["Config"])
    print("ok build", image.short_id)
    out = client.containers.run("pbbuild-py:1", remove=True).decode()
    expect("docker-py from the builder stage" in out, out)
    expect("secret.txt" not in out and "kept.txt" in out, f".dockerignore not applied: {out}")
    print("ok run")
    # a failing step: BuildError carrying the step's message
    try:
        client.images.build(path=context.replace("/app", "/fail"), tag="pbbuild-py:fail")
    except docker.errors.BuildError as error:
        expect("exit status 7" in str(error) or "returned a non-zero code: 7" in str(error), str(error))
        print("ok build error")
    else:
        raise AssertionError("a failing build succeeded")
    client.images.remove("pbbuild-py:1")
    expect(not any("pbbuild-py:1" in i.tags for i in client.images.list()), "image still listed")
    print("ok remove")


def tc_python(context, web):
    import urllib.request

    from testcontainers.core.container import DockerContainer
    from testcontainers.core.image import DockerImage
    from testcontainers.core.waiting_utils import wait_for_logs

    # a built web server answering on its mapped port
    with DockerImage(path=web, tag="pbbuild-tc:web") as image:
        with DockerContainer(str(image)).with_exposed_ports(8080) as server:
            url = f"http://{server.get_container_host_ip()}:{server.get_exposed_port(8080)}/"
            for _ in range(60):
                try:
                    page = urllib.request.urlopen(url, timeout=5).read().decode()
                    break
                except OSError:
                    import time
                    time.sleep(0.5)
            else:
                raise AssertionError(f"{url} never answered")
            expect("hello from the built web image" in page, page)
            print("ok mapped port", url)

    with DockerImage(path=context, tag="pbbuild-tc:1", buildargs={"GREETING": "tc-python"}, target="final") as image:
        print("ok build", image.short_id)
        with DockerContainer(str(image)).with_command("'echo started; sleep 30'") as container:
            wait_for_logs(container, "started", timeout=60)
            out = container.exec(["cat", "/srv/greeting"]).output.decode()
            expect("tc-python from the builder stage" in out, out)
            print("ok run and exec")
    client = docker.from_env()
    expect(not any("pbbuild-tc:1" in i.tags for i in client.images.list()), "image not removed by DockerImage")
    print("ok cleaned up")


if __name__ == "__main__":
    try:
        {"docker-py": docker_py, "tc-python": tc_python}[sys.argv[1]](*sys.argv[2:])
    except docker.errors.BuildError as error:
        # the builder's own lines say why a step failed; the exception only names the step.
        # Printed last, as the check runner shows the tail of the output.
        sys.stderr.write(f"BuildError: {error}\nthe build's last lines:\n")
        for entry in list(error.build_log)[-12:]:
            sys.stderr.write(entry.get("stream", "") or f"{entry}\n")
        sys.exit(1)
