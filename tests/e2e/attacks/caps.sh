# Caps, crashes, leftovers: a job that feeds podbridge values that used to panic it, and loops
# that used to grow the cluster or podbridge without bound (docker cp, create, logs -f). After
# each, podbridge still answers `_ping`, the refusal is Docker-shaped and names its config key,
# and what the namespace holds is bounded (the audit after each case also bounds RSS).
#
# The podbridge under test runs with smaller container and stream caps than the defaults (so the
# loops are short); the values stay far above what the other cases use. Set them yourself to
# override.
export PODBRIDGE_MAX_CONTAINERS=${PODBRIDGE_MAX_CONTAINERS:-60}
export PODBRIDGE_MAX_STREAMS=${PODBRIDGE_MAX_STREAMS:-12}
export PODBRIDGE_MAX_STORED_BYTES=${PODBRIDGE_MAX_STORED_BYTES:-16777216}
CAPS_ARCHIVES_PER_CONTAINER=${PODBRIDGE_MAX_ARCHIVES_PER_CONTAINER:-16}

# caps_remove PREFIX: removes this file's containers whose names start with PREFIX
caps_remove() {
  local ids; ids=$(docker ps -aq --filter "name=^$1")
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1
}

# caps_spec_count: container spec ConfigMaps of this instance in the namespace
caps_spec_count() {
  kc get configmaps -l "podbridge.io/instance=atk-$POLICY,podbridge.io/role=container-spec" -o name | wc -l
}

attack_caps_panics() {
  docker create --name atk-caps-victim busybox sleep 1 >/dev/null || return 1
  # Byte slicing inside a multi-byte character, a float that overflows Duration, integers that
  # overflow nanoseconds, a signal that is no signal: each a 400 with a message.
  expect_error 400 'since' GET '/events?since=1.%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9' || return 1
  pb_alive || { echo "dead after since=1.ééééé"; return 1; }
  expect_error 400 '\bt\b' POST '/containers/atk-caps-victim/stop?t=1e300' || return 1
  pb_alive || { echo "dead after stop?t=1e300"; return 1; }
  expect_error 400 'until' GET '/v1.51/events?until=99999999999999999999' || return 1
  expect_error 400 'since' GET '/containers/atk-caps-victim/logs?stdout=1&since=1.%C3%A9' || return 1
  expect_error 400 'limit' GET '/containers/json?limit=1e300' || return 1
  expect_error 400 '[Ss]ignal' POST '/containers/atk-caps-victim/kill?signal=99999999999' || return 1
  expect_error 400 '\bh\b' POST '/containers/atk-caps-victim/resize?h=99999999&w=1' || return 1
  # An integer timeout too large for any clock is valid (the container is not running: 304).
  local got; got=$(api_call POST '/containers/atk-caps-victim/stop?t=9223372036854775807')
  [[ ${got%% *} = 304 ]] || { echo "stop with a huge integer t: $got"; return 1; }
  # A create body with every number at its maximum.
  local max=9223372036854775807
  got=$(api_call POST /containers/create?name=atk-caps-numbers -d "{\"Image\":\"busybox\",\"StopTimeout\":$max,
    \"Healthcheck\":{\"Test\":[\"CMD\",\"true\"],\"Interval\":$max,\"Timeout\":$max,\"StartPeriod\":$max,\"Retries\":$max},
    \"HostConfig\":{\"CpuQuota\":$max,\"CpuPeriod\":100000,\"CpuShares\":$max,\"Memory\":$max}}")
  [[ ${got%% *} =~ ^(201|400|403)$ ]] || { echo "create with maximal numbers: $got"; return 1; }
  pb_alive || { echo "dead after maximal numbers"; return 1; }
  caps_remove atk-caps-
}

attack_caps_cp_loop() {
  # ~800 KiB that does not compress: one archive ConfigMap per copy into a created container.
  head -c 819200 /dev/urandom >"$WORK/caps-blob" || return 1
  local container copies=0 refused="" out i
  for container in atk-caps-cp-1 atk-caps-cp-2 atk-caps-cp-3; do
    docker create --name "$container" busybox true >/dev/null || return 1
  done
  for container in atk-caps-cp-1 atk-caps-cp-2 atk-caps-cp-3; do
    for i in $(seq $((CAPS_ARCHIVES_PER_CONTAINER + 2))); do
      if out=$(docker cp "$WORK/caps-blob" "$container:/tmp/blob-$i" 2>&1); then
        copies=$((copies + 1))
      else
        refused+="$out"$'\n'
        break
      fi
    done
  done
  echo "copies accepted: $copies"
  grep -q 'max_archives_per_container' <<<"$refused" ||
    { echo "no copy was refused naming max_archives_per_container:"; echo "$refused"; return 1; }
  grep -q 'max_stored_bytes' <<<"$refused" ||
    { echo "no copy was refused naming max_stored_bytes:"; echo "$refused"; return 1; }
  # The raw refusal is a 403 with a Docker error body.
  local path="/containers/atk-caps-cp-3/archive?path=/tmp"
  expect_error 403 'max_(stored_bytes|archives_per_container)' PUT "$path" \
    --data-binary @"$WORK/caps-blob" || return 1
  local archives bytes
  archives=$(kc get configmaps -l "podbridge.io/instance=atk-$POLICY,podbridge.io/role=archive" -o name | wc -l)
  bytes=$(kc get configmaps -l "podbridge.io/instance=atk-$POLICY" -o json |
    python3 -c 'import json,sys,base64
items=json.load(sys.stdin)["items"]
print(sum(len(v) for i in items for v in (i.get("data") or {}).values()) +
      sum(len(base64.b64decode(v)) for i in items for v in (i.get("binaryData") or {}).values()))')
  echo "archive ConfigMaps: $archives, ConfigMap data: $bytes bytes"
  [ "$archives" -le $((3 * CAPS_ARCHIVES_PER_CONTAINER)) ] || { echo "too many archive ConfigMaps"; return 1; }
  [ "$bytes" -le "$PODBRIDGE_MAX_STORED_BYTES" ] || { echo "ConfigMap data above max_stored_bytes"; return 1; }
  pb_alive || return 1
  caps_remove atk-caps-cp-
}

attack_caps_create_loop() {
  local i out refused=""
  for i in $(seq $((PODBRIDGE_MAX_CONTAINERS + 5))); do
    out=$(docker create --name "atk-caps-many-$i" busybox true 2>&1) || { refused=$out; break; }
  done
  grep -q 'max_containers' <<<"$refused" ||
    { echo "no create refused naming max_containers (last: $out)"; caps_remove atk-caps-many-; return 1; }
  expect_error 403 'max_containers' POST /containers/create?name=atk-caps-one-more -d '{"Image":"busybox"}' ||
    { caps_remove atk-caps-many-; return 1; }
  local specs; specs=$(caps_spec_count)
  echo "container specs: $specs"
  [ "$specs" -le "$PODBRIDGE_MAX_CONTAINERS" ] || { echo "more specs than max_containers"; return 1; }
  caps_remove atk-caps-many-
  # Removing frees the slots.
  docker create --name atk-caps-after busybox true >/dev/null || return 1
  caps_remove atk-caps-
}

attack_caps_logs_follow() {
  local id pids=() i out
  id=$(docker run -d --name atk-caps-talker busybox sh -c 'while true; do echo tick; sleep 1; done') || return 1
  for i in $(seq "$PODBRIDGE_MAX_STREAMS"); do
    curl -sN -m 60 -o /dev/null "127.0.0.1:$PORT/containers/$id/logs?follow=1&stdout=1" &
    pids+=($!)
  done
  sleep 3
  local status=0
  expect_error 429 'max_streams' GET "/containers/$id/logs?follow=1&stdout=1" || status=1
  out=$(timeout 20 docker logs -f atk-caps-talker 2>&1) && status=1
  grep -q 'max_streams' <<<"$out" || { echo "docker logs -f past the cap: $out"; status=1; }
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
  # The slots come back when the followers go.
  sleep 1
  local code; code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "127.0.0.1:$PORT/containers/$id/logs?follow=1&stdout=1")
  [ "$code" = 200 ] || { echo "follow after the followers left: $code"; status=1; }
  echo "podbridge RSS after the attacks: $(pb_rss_kib) KiB"
  caps_remove atk-caps-
  pb_alive && return $status
}
