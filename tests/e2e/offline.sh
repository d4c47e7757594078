# Sourced by every test and bench script that starts podbridge. Image configs are read from the
# test cluster's local registry, which also stands in for docker.io (as it does for the cluster's
# containerd), and podbridge contacts no registry beyond loopback: the test machine's network
# rule. A caller's own values win.
export PODBRIDGE_REGISTRY_LOOKUP=${PODBRIDGE_REGISTRY_LOOKUP:-loopback}
export PODBRIDGE_REGISTRY_MIRRORS=${PODBRIDGE_REGISTRY_MIRRORS:-'["docker.io=http://127.0.0.1:5000"]'}
