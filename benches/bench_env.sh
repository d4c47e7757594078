# Sourced by the bench scripts that run a podbridge of their own.
#
# bench_namespace NAME: a fresh namespace NAME-<pid> with the minimal Role (tests/cluster/
# namespace.sh), a scratch directory and a free loopback port for podbridge; sets tmp, ns,
# kubeconfig, port and pb_pid (empty until the caller starts podbridge), points the docker CLI at
# the port, and on exit stops podbridge and deletes the namespace and the directory.
bench_namespace() {
    tmp=$(mktemp -d)
    ns=$1-$$
    kubeconfig=$(tests/cluster/namespace.sh "$ns" | tail -n 1)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    export DOCKER_HOST=tcp://127.0.0.1:$port
    unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
    pb_pid=""
    trap bench_cleanup EXIT
}

bench_cleanup() {
    [ -n "$pb_pid" ] && { kill "$pb_pid" 2>/dev/null; wait "$pb_pid" 2>/dev/null; }
    tests/cluster/namespace.sh --delete "$ns" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}

# bench_wait_ping [SECONDS]: until the podbridge of pb_pid answers /_ping with 200 (polled every
# 10 ms, so a start-up time measured around it is exact to that); its log and exit 1 if it ended
# or did not answer within SECONDS (120).
bench_wait_ping() {
    local deadline=$((SECONDS + ${1:-120}))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/_ping")" = 200 ]; do
        if ! kill -0 "$pb_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            cat "$tmp/podbridge.log" >&2
            exit 1
        fi
        sleep 0.01
    done
}
