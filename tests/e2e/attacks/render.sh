# What the policy saw is what runs: files copied in before start arrive through a helper
# container the policy shaped (the audit after the case reads it), a stored container is judged
# again at start by the policy in force, and a body the rules could not read is refused.

attack_cp_before_start() {
  local src=$WORK/cp-src
  mkdir -p "$src" && echo copied-before-start >"$src/note.txt" || return 1
  docker create --name atk-cp busybox cat /etc/atk/note.txt >/dev/null || return 1
  docker exec atk-cp true 2>/dev/null && { echo "exec into a created container worked?"; return 1; }
  # docker cp into a created container: the destination must exist in the image (/etc)
  mkdir -p "$WORK/cp-tree/atk" && cp "$src/note.txt" "$WORK/cp-tree/atk/" || return 1
  docker cp "$WORK/cp-tree/atk" atk-cp:/etc/ || return 1
  timeout 120 docker start -a atk-cp >"$WORK/cp.out" 2>&1 || { cat "$WORK/cp.out"; return 1; }
  expect_eq "$(cat "$WORK/cp.out")" copied-before-start || return 1
  # the helper container is in the applied pod, shaped by the policy (audit checks the rest)
  local pod; pod=$(kc get pods -l podbridge.io/instance="atk-$POLICY" -o json |
    jq -r '.items[] | select(.metadata.annotations["podbridge.io/name"] == "atk-cp") | .metadata.name')
  [ -n "$pod" ] || { echo "no pod for atk-cp"; return 1; }
  expect_eq "$(kc get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}')" podbridge-archives || return 1
  expect_eq "$(kc get pod "$pod" -o jsonpath='{.spec.initContainers[0].securityContext.allowPrivilegeEscalation}')" false
}

attack_policy_reloaded_before_start() {
  docker create --name atk-reload busybox true >/dev/null || return 1
  cat >"$POLICY_DIR/95-attack-deny.yaml" <<'YAML'
apiVersion: podbridge.io/v1alpha1
kind: Policy
metadata: {name: attack-deny}
spec:
  rules:
  - name: no-reload
    match: {any: [{names: ["atk-reload"]}]}
    validate:
      action: Enforce
      message: denied by the policy reloaded after create
      deny: "true"
YAML
  # podbridge logs each reload; wait for the one that took the new file
  local log=$WORK/podbridge-$POLICY.log reloads out
  reloads=$(grep -c 'Policies reloaded' "$log")
  for _ in $(seq 100); do [ "$(grep -c 'Policies reloaded' "$log")" -gt "$reloads" ] && break; sleep 0.1; done
  sleep 0.5
  out=$(timeout 60 docker start atk-reload 2>&1)
  rm -f "$POLICY_DIR/95-attack-deny.yaml"
  grep -q 'Error response from daemon: container start blocked by policy' <<<"$out" && grep -q 'attack-deny/no-reload' <<<"$out" || { echo "start not refused by the reloaded policy: $out"; return 1; }
  [ -z "$(kc get pods -l podbridge.io/instance="atk-$POLICY" -o json | jq -r '.items[] | select(.metadata.annotations["podbridge.io/name"] == "atk-reload") | .metadata.name')" ] ||
    { echo "a pod was applied for atk-reload"; return 1; }
  # once the rule is gone again, the same container starts
  for _ in $(seq 50); do timeout 60 docker start atk-reload >/dev/null 2>&1 && return 0; sleep 0.3; done
  echo "atk-reload does not start after the rule was removed"; return 1
}

attack_unreadable_body() {
  local before; before=$(docker ps -aq | wc -l)
  expect_error 400 'invalid JSON' POST /v1.44/containers/create?name=atk-surrogate \
    --data-binary '{"Image":"busybox","X":"\ud800","HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}' || return 1
  expect_error 400 'invalid JSON' POST /v1.44/containers/create?name=atk-utf8 \
    --data-binary $'{"Image":"busybox","X":"\xff"}' || return 1
  expect_eq "$(docker ps -aq | wc -l)" "$before"
}

attack_cap_drop_keeps_net_raw() {
  timeout 120 docker run --name atk-capdrop --cap-drop MKNOD busybox true || return 1
  kc get pods -l podbridge.io/instance="atk-$POLICY" -o json |
    jq -e '.items[] | select(.metadata.annotations["podbridge.io/name"] == "atk-capdrop") |
      .spec.containers[0].securityContext.capabilities.drop | index("NET_RAW") != null or index("ALL") != null' >/dev/null ||
    { echo "NET_RAW kept beside --cap-drop"; return 1; }
}

# A named volume's claim passes the chain too: the client's size only within the policy's
# bounds, no storage class the policy does not offer; nothing is created for a refusal.
attack_volume_options_bounded() {
  expect_error 400 'podbridge.io/storage-class' POST /v1.44/volumes/create \
    --data '{"Name":"atk-premium","DriverOpts":{"storageclass":"premium"}}' || return 1
  expect_error 400 'podbridge.io/volume-size.*at most 20Gi' POST /v1.44/volumes/create \
    --data '{"Name":"atk-huge","DriverOpts":{"size":"900Ti"}}' || return 1
  [ -z "$(kc get pvc -l podbridge.io/instance="atk-$POLICY" -o name | grep -E 'atk-(premium|huge)')" ] ||
    { echo "a claim was created for a refused volume"; kc get pvc; return 1; }
  docker volume create -o size=64Mi atk-small >/dev/null || return 1
  expect_eq "$(kc get pvc -l podbridge.io/instance="atk-$POLICY" -o json |
    jq -r '.items[] | select(.metadata.name | startswith("podbridge-volume-atk-small")) | .spec.resources.requests.storage')" 64Mi &&
    docker volume rm atk-small >/dev/null
}

# Two copies into the same created container at once each keep their own ConfigMap: both files
# are there when it starts.
attack_cp_concurrent_before_start() {
  mkdir -p "$WORK/cc" && echo one >"$WORK/cc/one.txt" && echo two >"$WORK/cc/two.txt" || return 1
  docker create --name atk-cc busybox cat /tmp/one.txt /tmp/two.txt >/dev/null || return 1
  docker cp "$WORK/cc/one.txt" atk-cc:/tmp/ & local a=$!
  docker cp "$WORK/cc/two.txt" atk-cc:/tmp/ & local b=$!
  wait "$a" && wait "$b" || return 1
  expect_eq "$(timeout 120 docker start -a atk-cc 2>&1 | tr '\n' ' ')" "one two "
}
