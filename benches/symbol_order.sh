#!/usr/bin/env bash
# Regenerates benches/symbol-order.txt: the functions a serving podbridge runs, which build.rs has
# the linker place together at the front of the text (see build.rs for why).
#
#   benches/symbol_order.sh            # release build, then a session under valgrind's callgrind
#
# The session: start-up with the built-in policies until the watches synced, the docker CLI's
# common requests (run --rm, run -d, logs, exec, inspect, ps, port, cp, stop, rm, events), a compose
# project up --wait and down, a testcontainers-python session (Ryuk, redis, log wait, mapped port),
# a burst of containers started at once and removed with one rm -f, a pause, and the shutdown.
# Every function callgrind saw run in the podbridge binary is written out, the start-up's first,
# each part in the binary's current address order (code that ran together before stays together).
# Run it again after large changes; `benches/docker_run.sh` shows the effect in its memory lines.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=tests/e2e/offline.sh
. tests/e2e/offline.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
venv=${E2E_VENV:-/tmp/podbridge-e2e-venv}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
tests/cluster/up.sh >/dev/null 2>&1 || { echo "test cluster failed to start (tests/cluster/up.sh)" >&2; exit 1; }
if [ -n "${ORDER_BIN:-}" ]; then
    bin=$ORDER_BIN
else
    cargo build --release --quiet
    bin=$CARGO_TARGET_DIR/release/podbridge
fi
nm --defined-only "$bin" >/dev/null 2>&1 || { echo "$bin has no symbol table" >&2; exit 1; }

# shellcheck source=benches/bench_env.sh
. benches/bench_env.sh
bench_namespace pb-order
cat >"$tmp/podbridge.toml" <<TOML
namespace = "$ns"
instance = "order"
listen = "127.0.0.1:$port"
TOML

# profile OUT [session]: podbridge under callgrind until the watches synced, the session's requests
# if asked, a pause, and the shutdown; the counts go to OUT
profile() {
    KUBECONFIG=$kubeconfig valgrind --tool=callgrind --demangle=no --callgrind-out-file="$1" \
        "$bin" serve --config "$tmp/podbridge.toml" >>"$tmp/podbridge.log" 2>&1 &
    pb_pid=$!
    bench_wait_ping
    if [ "${2:-}" = session ]; then session; fi
    sleep 5
    kill -TERM "$pb_pid"
    wait "$pb_pid" 2>/dev/null || true
    pb_pid=""
}

# step NAME COMMAND...: a failed step is reported and the session goes on (it only feeds a list)
step() {
    local name=$1
    shift
    "$@" >/dev/null 2>&1 || echo "symbol_order: step '$name' failed" >&2
}
session() {
    step version docker version
    step info docker info
    step run-rm docker run --rm busybox true
    step run-d docker run -d --name order-sleeper -p 8080 -e A=1 -l x=y busybox \
        sh -c 'echo ready; sleep 600'
    sleep 2
    step logs docker logs order-sleeper
    step exec docker exec order-sleeper true
    step inspect docker inspect order-sleeper
    step ps docker ps -a
    step port docker port order-sleeper
    step cp-in docker cp "$root/README.md" order-sleeper:/tmp/
    step cp-out docker cp order-sleeper:/tmp/README.md "$tmp/"
    step stop docker stop -t 1 order-sleeper
    step rm docker rm order-sleeper
    step events docker events --since 10m --until 1s
    step images docker images
    step compose "$venv/bin/docker-compose" -f tests/e2e/compose/compose.yaml -p order up -d --wait
    step compose-ps "$venv/bin/docker-compose" -f tests/e2e/compose/compose.yaml -p order ps
    step compose-down "$venv/bin/docker-compose" -f tests/e2e/compose/compose.yaml -p order down -v
    step testcontainers "$venv/bin/python" benches/tc_session.py
    # a burst, as the memory bench makes one: containers started at once, then all removed
    local burst=()
    for i in $(seq 8); do
        step "burst-$i" docker run -d -l podbridge.order/burst=1 busybox sleep 600 &
        burst+=($!)
    done
    wait "${burst[@]}"
    sleep 2
    step burst-ps docker ps -q
    # shellcheck disable=SC2046
    step burst-rm docker rm -f $(docker ps -aq --filter label=podbridge.order/burst=1)
}

# start-up alone first: what an idle bridge ran goes first in the order
profile "$tmp/startup.out"
profile "$tmp/session.out" session

python3 - "$bin" "$tmp/startup.out" "$tmp/session.out" >"$tmp/order.txt" <<'PY'
import os, re, subprocess, sys

binary, outputs = sys.argv[1], sys.argv[2:]
ref = re.compile(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$")


def ran(out):
    """The functions of `binary` a callgrind output counts. Callgrind names each object and
    function once as "(id) name" and by "(id)" after that."""
    objects, functions, names = {}, {}, set()
    current_object = callee_object = None
    for line in open(out, errors="replace"):
        m = ref.match(line.rstrip("\n"))
        if not m:
            continue
        called, kind, ident, name = m.groups()
        table = objects if kind == "ob" else functions
        if name:
            table[ident] = name
        if kind == "ob":
            if called:
                callee_object = table.get(ident)
            else:
                current_object = callee_object = table.get(ident)
            continue
        owner = callee_object if called else current_object
        if owner and os.path.realpath(owner) == os.path.realpath(binary):
            names.add(table.get(ident))
        callee_object = current_object
    return names


# each phase's functions in the binary's own order, start-up first
nm = subprocess.run(["nm", "--defined-only", "-n", binary], capture_output=True, text=True)
rows = (line.split() for line in nm.stdout.splitlines())
text = [row[2] for row in rows if len(row) == 3 and row[1] in "tTwW"]
written = set()
for out in outputs:
    names = ran(out)
    for name in text:
        if name in names and name not in written:
            written.add(name)
            print(name)
PY
count=$(wc -l <"$tmp/order.txt")
[ "$count" -gt 1000 ] || { echo "only $count functions seen: not writing the order" >&2; exit 1; }
mv "$tmp/order.txt" benches/symbol-order.txt
echo "benches/symbol-order.txt: $count functions"
