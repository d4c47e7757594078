#!/usr/bin/env bash
# docker_run.sh - what podbridge adds to running a container, measured in one run on the test
# cluster against the same pod made directly.
#
#   benches/docker_run.sh [SAMPLES] [CONTAINERS]      (defaults 10 and 200)
#
# 1. start-to-exit: `docker run --rm busybox true` through podbridge (client start to client exit,
#    pod removed) vs the same pod (podbridge's own translation of that request) created and awaited
#    (a) with kubectl (create, watch to exit, delete --wait) and (b) directly through the API
#    with a watch (no process start-up at all). Medians and ratios.
#    Then podbridge's own phase spans over those runs (JSON log, target podbridge::timing):
#    where its time goes, request by request and step by step.
# 1b. parallel: BENCH_PARALLEL (20) `docker run --rm busybox true` at once vs as many copies of
#    the pod through the API at once; `docker compose up -d --wait` of 5 services vs 5 pods
#    through the API at once until all run; each compose run split by podbridge's request spans
#    into the compose process's own start-up and exit and the requests between.
# 1c. exec: `docker exec c true` vs `kubectl exec` of the same pod, and 64 MiB of output through
#    each.
# 2. state latency: a pod watch of its own sees `main` running/terminated; how much later
#    podbridge's start call returns, its `start` event arrives, wait returns, `die` arrives.
# 3. memory: a fresh podbridge's resident set (default log filter) idle, warm (one container
#    served and removed), with CONTAINERS containers running `sleep`, and 10 s and 30 s after
#    their removal.
#
# Uses a release build, a fresh namespace with the minimal Role (namespace.sh), podbridge on a
# free loopback port, and a small policy overlay that requests 1m CPU/8Mi per container so that
# 200 pods fit on this 2-core node (the default 100m would stop the scheduler at ~18). Leaves
# nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=tests/e2e/offline.sh
. tests/e2e/offline.sh
samples=${1:-10}
containers=${2:-200}
# BENCH_PARALLEL: how many `docker run`s the parallel section starts at once; BENCH_PAR_SAMPLES
# how often (each against the same number of pods made through the API at once).
parallel=${BENCH_PARALLEL:-20}
par_samples=${BENCH_PAR_SAMPLES:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
tests/cluster/up.sh >/dev/null 2>&1 || { echo "test cluster failed to start (tests/cluster/up.sh)" >&2; exit 1; }
# BENCH_BIN: another podbridge binary (e.g. an earlier build, to compare); BENCH_MEMORY_ONLY=1
# skips sections 1 and 2; BENCH_START_ONLY=1 runs only the start-to-exit flows and their spans
# (each sample carries up to a second of the kubelet's relist phase: take 30 or more);
# BENCH_PARALLEL_ONLY=1 only the parallel flows (1b), BENCH_PAR_SAMPLES times each.
if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN
else
    cargo build --release --quiet --offline 2>/dev/null || cargo build --release --quiet
    bin=$CARGO_TARGET_DIR/release/podbridge
fi

# shellcheck source=benches/bench_env.sh
. benches/bench_env.sh
bench_namespace pb-bench
kc() { KUBECONFIG=$kubeconfig kubectl -n "$ns" "$@"; }
export DOCKER_PORT=$port KUBE_NAMESPACE=$ns
KUBE_SERVER=$(kc config view --raw -o jsonpath='{.clusters[0].cluster.server}')
KUBE_TOKEN=$(kc config view --raw -o jsonpath='{.users[0].user.token}')
kc config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$tmp/ca.crt"
export KUBE_SERVER KUBE_TOKEN KUBE_CA=$tmp/ca.crt

# The bench overlay: tiny requests (the baseline file of the same name is replaced).
mkdir -p "$tmp/policy"
cat >"$tmp/policy/30-resources.yaml" <<'YAML'
apiVersion: podbridge.io/v1alpha1
kind: Policy
metadata: {name: resources}
spec:
  rules:
  - name: bench-requests
    mutate:
      setDefaults:
        /spec/containers/0/resources/requests/cpu: 1m
        /spec/containers/0/resources/requests/memory: 8Mi
YAML
cat >"$tmp/podbridge.toml" <<TOML
namespace = "$ns"
instance = "bench"
listen = "127.0.0.1:$port"
readiness_listen = "127.0.0.1:0"
policies = ["$root/policies/baseline", "$tmp/policy"]
log = "warn,podbridge::timing=debug"
log_format = "json"
TOML


# start_podbridge CONFIG: serve with that config, log to $tmp/podbridge.log, wait for /_ping;
# sets pb_pid and ready_ms
start_podbridge() {
    local t_launch
    t_launch=$(date +%s%N)
    KUBECONFIG=$kubeconfig "$bin" serve --config "$1" >>"$tmp/podbridge.log" 2>&1 &
    pb_pid=$!
    bench_wait_ping
    ready_ms=$((($(date +%s%N) - t_launch) / 1000000))
}
if [ "${BENCH_MEMORY_ONLY:-0}" != 1 ]; then
    start_podbridge "$tmp/podbridge.toml"
fi
rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pb_pid/status"; }
# the resident set's parts: heap and other private pages, and pages of the executable itself
rss_parts() {
    awk -v fds="$(find "/proc/$pb_pid/fd" -mindepth 1 2>/dev/null | wc -l)" \
        '/^RssAnon/ {a = $2} /^RssFile/ {f = $2} /^Threads/ {t = $2}
         END {printf "(anon %.1f, file %.1f; %d open files, %d threads)", a / 1024, f / 1024, fds, t}' \
        "/proc/$pb_pid/status"
}
median() { sort -n | awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.0f", m}'; }
ms() { echo $((($2 - $1) / 1000000)); }
# compare LABEL_A LABEL_B NOTE A_SAMPLES... -- B_SAMPLES...: both medians and their ratio
compare() {
    local label_a=$1 label_b=$2 note=$3 a=() b=() med_a med_b
    shift 3
    while [ "$1" != -- ]; do a+=("$1"); shift; done
    shift
    b=("$@")
    med_a=$(printf '%s\n' "${a[@]}" | median)
    med_b=$(printf '%s\n' "${b[@]}" | median)
    printf '%-58s %6s   %s\n' "$label_a" "$med_a" "${a[*]}"
    printf '%-58s %6s   %s\n' "$label_b" "$med_b" "${b[*]}"
    awk -v a="$med_a" -v b="$med_b" -v n="$note" 'BEGIN { printf "podbridge / direct API = %.2f%s\n", a / b, n }'
}

# the same pod: podbridge's translation of the request, renamed, without podbridge's labels
direct_pod() {  # direct_pod REQUEST_JSON
    "$bin" translate - --name bench --config "$tmp/podbridge.toml" <<<"$1" |
    kc create --dry-run=client -o json -f - 2>/dev/null |
    python3 -c '
import json, sys
text, decoder, items = sys.stdin.read(), json.JSONDecoder(), []
while text.strip():
    doc, end = decoder.raw_decode(text.strip())
    items += doc.get("items", [doc])
    text = text.strip()[end:]
pod = next(i for i in items if i["kind"] == "Pod")
pod["metadata"] = {"name": "direct", "labels": {"podbridge.bench/direct": "1"}}
json.dump(pod, sys.stdout)'
}
direct_pod '{"Image":"busybox","Cmd":["true"]}' >"$tmp/pod.json"
direct_pod '{"Image":"redis","ExposedPorts":{"6379/tcp":{}}}' >"$tmp/redis-pod.json"

if [ "${BENCH_MEMORY_ONLY:-0}" != 1 ]; then
echo "warming up (image, caches)" >&2
docker run --rm busybox true
python3 benches/docker_run.py baseline 1 "$tmp/pod.json" >/dev/null
log_offset=$(stat -c %s "$tmp/podbridge.log")

random_pause() { sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", r / 32768 }')"; }
# Between batches: the kubelet goes on tearing down the last batch's containers and sandboxes
# after their pods are gone from the API; a batch started into that is slowed by it.
settle() { sleep 2; random_pause; }

if [ "${BENCH_PARALLEL_ONLY:-0}" != 1 ]; then
podbridge_runs=()
kubectl_runs=()
api_runs=()
# The kubelet notices a container's start and exit on its once-a-second relist, so a flow's time
# is rounded up to the next relist. Interleaved flows that follow each other back to back lock
# onto different phases of that tick (one always starts just after it, another just before) and
# their medians differ by up to a second for nothing they do. Each sample therefore starts after
# a random pause (not timed), and the order of the three flows rotates.
run_podbridge() {
    local t
    t=$(date +%s%N)
    docker run --rm busybox true
    podbridge_runs+=("$(ms "$t" "$(date +%s%N)")")
}
run_kubectl() {
    local t name=direct-k$1
    sed "s/\"name\": \"direct\"/\"name\": \"$name\"/" "$tmp/pod.json" >"$tmp/pod-$1.json"
    t=$(date +%s%N)
    kc create -f "$tmp/pod-$1.json" >/dev/null
    grep -m1 -qE 'Succeeded|Failed' < <(kc get pod "$name" -w -o jsonpath='{.status.phase}{"\n"}')
    kc delete pod "$name" --wait=true >/dev/null
    kubectl_runs+=("$(ms "$t" "$(date +%s%N)")")
}
run_api() {
    api_runs+=("$(python3 benches/docker_run.py baseline 1 "$tmp/pod.json")")
}
flows=(run_podbridge run_kubectl run_api)
for ((i = 0; i < samples; i++)); do
    for ((f = 0; f < 3; f++)); do
        random_pause
        "${flows[$(((i + f) % 3))]}" "$i"
    done
done
pb_med=$(printf '%s\n' "${podbridge_runs[@]}" | median)
kc_med=$(printf '%s\n' "${kubectl_runs[@]}" | median)
api_med=$(printf '%s\n' "${api_runs[@]}" | median)

echo
echo "== start-to-exit, $samples samples each, interleaved (ms) =="
printf '%-58s %6s   %s\n' "docker run --rm busybox true via podbridge" "$pb_med" "${podbridge_runs[*]}"
printf '%-58s %6s   %s\n' "same pod: kubectl create, watch to exit, delete --wait" "$kc_med" "${kubectl_runs[*]}"
printf '%-58s %6s   %s\n' "same pod: API POST, watch to exit, DELETE, watch to gone" "$api_med" "${api_runs[*]}"
awk -v p="$pb_med" -v k="$kc_med" -v a="$api_med" 'BEGIN {
    printf "podbridge / kubectl = %.2f (%+.0f%%)   podbridge / direct API = %.2f (%+.0f%%)\n",
        p / k, (p / k - 1) * 100, p / a, (p / a - 1) * 100 }'

echo
echo "== where a docker run's time goes: podbridge's phase spans over the $samples runs (ms) =="
printf '%-48s %4s %9s %9s\n' "span (request: from receipt to the answer's head)" n median max
python3 benches/docker_run.py phases "$tmp/podbridge.log" "$log_offset"
[ "${BENCH_START_ONLY:-0}" = 1 ] && exit 0
fi

echo
echo "== parallel: $parallel at once, wall time of the whole batch, $par_samples samples each (ms) =="
pb_par=()
api_par=()
for ((i = 0; i < par_samples; i++)); do
    settle
    t=$(date +%s%N)
    runs=()
    for ((j = 0; j < parallel; j++)); do
        docker run --rm busybox true &
        runs+=($!)
    done
    wait "${runs[@]}"  # (a bare wait would wait for podbridge too)
    pb_par+=("$(ms "$t" "$(date +%s%N)")")
    settle
    api_par+=("$(python3 benches/docker_run.py parallel "$parallel" "$tmp/pod.json")")
done
compare "$parallel x docker run --rm busybox true via podbridge" \
    "$parallel x the same pod through the API, concurrently" " (target <= 1.10)" "${pb_par[@]}" -- "${api_par[@]}"

compose() {
    if docker compose version >/dev/null 2>&1; then docker compose "$@"; else "${E2E_VENV:-${TMPDIR:-/tmp}/podbridge-e2e-venv}/bin/docker-compose" "$@"; fi
}
mkdir -p "$tmp/compose"
{
    echo "services:"
    for ((j = 1; j <= 5; j++)); do
        printf '  s%d:\n    image: busybox\n    command: ["sleep", "3600"]\n' "$j"
    done
} >"$tmp/compose/compose.yaml"
pb_up=()
up_steps=()
pb_up_nowait=()
api_up=()
for ((i = 0; i < par_samples; i++)); do
    settle
    t=$(date +%s%N)
    compose -f "$tmp/compose/compose.yaml" -p "bench$i" up -d --wait >/dev/null 2>&1
    t_end=$(date +%s%N)
    pb_up+=("$(ms "$t" "$t_end")")
    up_steps+=("$(python3 benches/docker_run.py steps "$tmp/podbridge.log" "$t" "$t_end")")
    compose -f "$tmp/compose/compose.yaml" -p "bench$i" down -t 0 >/dev/null 2>&1
    settle
    # without --wait: compose returns once every start returned, and podbridge's start returns
    # once `main` runs, so this is the same end state without compose's own polling for it
    t=$(date +%s%N)
    compose -f "$tmp/compose/compose.yaml" -p "benchn$i" up -d >/dev/null 2>&1
    pb_up_nowait+=("$(ms "$t" "$(date +%s%N)")")
    compose -f "$tmp/compose/compose.yaml" -p "benchn$i" down -t 0 >/dev/null 2>&1
    settle
    api_up+=("$(python3 benches/docker_run.py running 5 "$tmp/pod.json")")
done
compare "docker compose up -d --wait, 5 services" \
    "5 of the same pods through the API at once, until running" " (target <= 1.10)" "${pb_up[@]}" -- "${api_up[@]}"
compare "docker compose up -d (no --wait), 5 services" \
    "5 of the same pods through the API at once, until running" "" "${pb_up_nowait[@]}" -- "${api_up[@]}"
# where a compose --wait run's wall time goes: the compose process before its first request and
# after podbridge's last answer is the client's own; the rest is podbridge and the cluster
echo "compose --wait runs by step (ms, from podbridge's request spans):"
printf '  %s\n' "${up_steps[@]}"
[ "${BENCH_PARALLEL_ONLY:-0}" = 1 ] && exit 0

echo
echo "== exec: $samples samples each, interleaved (ms; MiB/s for 64 MiB of output) =="
docker run -d --name bench-exec busybox sleep 3600 >/dev/null
exec_pod=$(kc get pods -l podbridge.io/container-id="$(docker inspect -f '{{.Id}}' bench-exec | cut -c1-12)" -o name)
pb_exec=()
kc_exec=()
for ((i = 0; i < samples; i++)); do
    t=$(date +%s%N)
    docker exec bench-exec true
    pb_exec+=("$(ms "$t" "$(date +%s%N)")")
    t=$(date +%s%N)
    kc exec "$exec_pod" -c main -- true
    kc_exec+=("$(ms "$t" "$(date +%s%N)")")
done
pb_exec_med=$(printf '%s\n' "${pb_exec[@]}" | median)
kc_exec_med=$(printf '%s\n' "${kc_exec[@]}" | median)
printf '%-58s %6s   %s\n' "docker exec c true via podbridge" "$pb_exec_med" "${pb_exec[*]}"
printf '%-58s %6s   %s\n' "kubectl exec pod -c main -- true" "$kc_exec_med" "${kc_exec[*]}"
throughput() {  # MiB/s of 64 MiB through "$@"
    local t bytes
    t=$(date +%s%N)
    bytes=$("$@" sh -c 'head -c 67108864 /dev/zero' | wc -c)
    awk -v b="$bytes" -v n="$(($(date +%s%N) - t))" 'BEGIN { printf "%.1f", b / 1048576 / (n / 1e9) }'
}
pb_tp=()
kc_tp=()
for ((i = 0; i < 3; i++)); do
    pb_tp+=("$(throughput docker exec bench-exec)")
    kc_tp+=("$(throughput kc exec "$exec_pod" -c main --)")
done
pb_tp_med=$(printf '%s\n' "${pb_tp[@]}" | sort -n | sed -n 2p)
kc_tp_med=$(printf '%s\n' "${kc_tp[@]}" | sort -n | sed -n 2p)
printf '%-58s %6s   %s\n' "docker exec, 64 MiB to stdout (MiB/s)" "$pb_tp_med" "${pb_tp[*]}"
printf '%-58s %6s   %s\n' "kubectl exec, 64 MiB to stdout (MiB/s)" "$kc_tp_med" "${kc_tp[*]}"
awk -v p="$pb_exec_med" -v k="$kc_exec_med" -v pt="$pb_tp_med" -v kt="$kc_tp_med" 'BEGIN {
    printf "exec: podbridge / kubectl = %.2f (target <= 1.00)   throughput podbridge / kubectl = %.2f (target >= 0.95)\n", p / k, pt / kt }'
docker rm -f bench-exec >/dev/null

echo
echo "== a testcontainers-python session: Ryuk, redis with a log wait, mapped port, PING, teardown (ms, process start to exit) =="
venv=${E2E_VENV:-${TMPDIR:-/tmp}/podbridge-e2e-venv}
if "$venv/bin/python" -c 'import testcontainers' 2>/dev/null; then
    tc_runs=()
    tcd_runs=()
    tc_offset=$(stat -c %s "$tmp/podbridge.log")
    for ((i = 0; i < par_samples; i++)); do
        random_pause
        t=$(date +%s%N)
        "$venv/bin/python" benches/tc_session.py >/dev/null
        tc_runs+=("$(ms "$t" "$(date +%s%N)")")
        random_pause
        t=$(date +%s%N)
        python3 benches/docker_run.py tcsession 1 "$tmp/redis-pod.json" >/dev/null
        tcd_runs+=("$(ms "$t" "$(date +%s%N)")")
    done
    compare "testcontainers-python session via podbridge" \
        "the same redis pod through the API (log, pod IP, delete)" "" "${tc_runs[@]}" -- "${tcd_runs[@]}"
    echo "the sessions' requests as podbridge timed them (a log follow lasts until the client closes it):"
    python3 benches/docker_run.py phases "$tmp/podbridge.log" "$tc_offset"
else
    echo "skipped: no testcontainers in $venv (tests/e2e/clients.sh makes it)"
fi

echo
echo "== state latency: podbridge answer minus the moment a pod watch saw the change (ms) =="
python3 benches/docker_run.py latency "$samples" | tee "$tmp/latency.txt"
python3 - "$tmp/latency.txt" <<'PY'
import sys
rows = [dict(kv.split("=") for kv in line.split()) for line in open(sys.argv[1]) if "=" in line]
for key in ["start_return", "start_event", "wait_return", "die_event"]:
    values = sorted(int(r[key]) for r in rows)
    print(f"{key:13} median {values[len(values) // 2]:5d}  max {values[-1]:5d}")
PY

fi

echo
echo "== memory and start-up =="
# A fresh podbridge as users run it: the default log filter, so no timing spans (the phase
# sections above turn them on, and the log's span registry keeps a slot's buffers for reuse).
if [ -n "$pb_pid" ]; then
    kill "$pb_pid"
    wait "$pb_pid" 2>/dev/null || true
fi
kc delete pods --all --wait=true >/dev/null 2>&1 || true
grep -v '^log' "$tmp/podbridge.toml" >"$tmp/podbridge-memory.toml"
start_podbridge "$tmp/podbridge-memory.toml"
echo "podbridge start to /_ping 200 (cluster synced): $ready_ms ms"
# build.rs orders the functions benches/symbol-order.txt names; a list gone stale costs memory
if [ -s benches/symbol-order.txt ] && nm --defined-only "$bin" >/dev/null 2>&1; then
    found=$(nm --defined-only "$bin" | awk 'NR == FNR {want[$1] = 1; next} $3 in want && !seen[$3]++ {n++} END {print n + 0}' \
        benches/symbol-order.txt -)
    echo "symbol order: $found of $(wc -l <benches/symbol-order.txt) listed functions are in this binary (benches/symbol_order.sh renews the list)"
fi
sleep 2
idle=$(rss)
echo "podbridge RSS idle: $idle MiB $(rss_parts)"
# Warm: one container started and removed the way the burst below is, then the pool's idle
# timeout. The code that serves containers is resident from then on; what the burst adds beyond
# it is what a burst leaves behind.
python3 benches/docker_run.py fill 1 >/dev/null
docker rm -f fill-0 >/dev/null
sleep 12
warm=$(rss)
echo "podbridge RSS warm idle (one container served): $warm MiB $(rss_parts)"
t=$(date +%s%N)
running=$(python3 benches/docker_run.py fill "$containers")
fill_ms=$(ms "$t" "$(date +%s%N)")
sleep 3
busy=$(rss)
echo "podbridge RSS with $running running containers (of $containers requested): $busy MiB $(rss_parts) (started in $fill_ms ms)"
t=$(date +%s%N)
docker ps -q | wc -l | xargs printf 'docker ps lists %s containers'
echo " in $(ms "$t" "$(date +%s%N)") ms"
ids=$(docker ps -aq)
t=$(date +%s%N)
# shellcheck disable=SC2086
[ -n "$ids" ] && docker rm -f $ids >/dev/null
echo "docker rm -f of all: $(ms "$t" "$(date +%s%N)") ms; RSS after: $(rss) MiB"
sleep 10
after=$(rss)
echo "podbridge RSS 10 s after the removal: $after MiB $(rss_parts)"
awk -v i="$idle" -v b="$busy" -v a="$after" 'BEGIN {
    printf "busy / idle = %.2f   after / idle = %.2f (%+.1f MiB)\n", b / i, a / i, a - i }'
# pooled connections and blocking threads outlive a burst by their idle timeouts: a later
# sample shows what stays for good
sleep 20
later=$(rss)
echo "podbridge RSS 30 s after the removal: $later MiB $(rss_parts)"
awk -v i="$idle" -v w="$warm" -v a="$later" 'BEGIN {
    printf "30 s after / idle = %.2f (%+.1f MiB; %+.1f MiB over the warm idle)\n", a / i, a - i, a - w }'
