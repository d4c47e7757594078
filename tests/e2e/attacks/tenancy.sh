# Tenancy: a hostile job tries to take over Service names of another tenant, join another
# Service's endpoints or leave the mesh through labels, and outlive its namespace through a huge
# stop timeout. The setup creates, as the other tenant, a Service `web` that podbridge does not
# manage (selecting app=web) and an alias Service `db` of another podbridge instance; the harness
# audit then checks both come out unchanged after every attempt.

TENANCY_SELECTOR=podbridge.io/container-id=0123456789ab

attacks_tenancy_setup() {
  kc_admin -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: web, labels: {owner: other-team}}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata:
  name: db
  labels: {app.kubernetes.io/managed-by: podbridge, podbridge.io/instance: other-job, podbridge.io/role: alias-service}
spec: {clusterIP: None, selector: {podbridge.io/container-id: "0123456789ab"}}
YAML
  docker network create atk-tenancy >/dev/null
}

# tenancy_foreign_intact: both foreign Services still select what their owners chose.
tenancy_foreign_intact() {
  expect_eq "$(kc_admin -n "$NS" get service web -o jsonpath='{.spec.selector.app} {.metadata.labels.owner}')" "web other-team" &&
    expect_eq "$(kc_admin -n "$NS" get service db -o jsonpath='{.spec.selector.podbridge\.io/container-id} {.metadata.labels.podbridge\.io/instance}')" \
      "0123456789ab other-job"
}

# tenancy_pod_labels CONTAINER: the pod's labels as JSON
tenancy_pod_labels() {
  kc get pods -l "podbridge.io/container-id=$(docker inspect -f '{{.Id}}' "$1" | cut -c1-12)" -o json | jq -c '.items[0].metadata.labels'
}

attack_tenancy_1_name_takes_foreign_service() {
  local out
  out=$(timeout 120 docker run -d --name web busybox sleep 300 2>&1) && { echo "run --name web succeeded: $out"; return 1; }
  grep -q "alias web is a Service not owned by this podbridge" <<<"$out" || { echo "$out"; return 1; }
  tenancy_foreign_intact
}

attack_tenancy_2_network_alias_takes_foreign_service() {
  local out
  out=$(timeout 120 docker run -d --name atk-alias-web --network atk-tenancy --network-alias web busybox sleep 300 2>&1) &&
    { echo "--network-alias web succeeded: $out"; return 1; }
  grep -q "alias web is a Service not owned" <<<"$out" || { echo "$out"; return 1; }
  # Another podbridge instance's alias: the container runs, the alias stays with its owner.
  timeout 120 docker run -d --name atk-alias-db --network atk-tenancy --network-alias db busybox sleep 300 >/dev/null || return 1
  tenancy_foreign_intact
}

attack_tenancy_3_network_connect_takes_foreign_service() {
  local out
  timeout 120 docker run -d --name atk-connect busybox sleep 300 >/dev/null || return 1
  out=$(docker network connect --alias web atk-tenancy atk-connect 2>&1) && { echo "connect --alias web succeeded"; return 1; }
  grep -q "alias web is a Service not owned" <<<"$out" || { echo "$out"; return 1; }
  docker network connect --alias db atk-tenancy atk-connect || return 1
  tenancy_foreign_intact
}

attack_tenancy_4_mesh_and_reserved_labels() {
  local labels
  timeout 120 docker run -d --name atk-mesh --label sidecar.istio.io/inject=false --label linkerd.io/inject=disabled \
    --label app.kubernetes.io/name=web --label com.docker.compose.project=demo busybox sleep 300 >/dev/null || return 1
  labels=$(tenancy_pod_labels atk-mesh)
  jq -e 'has("sidecar.istio.io/inject") or has("linkerd.io/inject") | not' <<<"$labels" >/dev/null &&
    jq -e '."app.kubernetes.io/name" != "web" and ."com.docker.compose.project" == "demo"' <<<"$labels" >/dev/null ||
    { echo "pod labels: $labels"; return 1; }
  # The Docker view keeps every label the client set.
  expect_eq "$(docker inspect -f '{{index .Config.Labels "sidecar.istio.io/inject"}}' atk-mesh)" false &&
    expect_eq "$(docker ps -q --no-trunc --filter label=sidecar.istio.io/inject=false)" "$(docker inspect -f '{{.Id}}' atk-mesh)"
}

attack_tenancy_5_stop_timeout_bounded() {
  local id grace
  timeout 120 docker run -d --name atk-grace --stop-timeout 999999999 busybox sleep 300 >/dev/null || return 1
  id=$(docker inspect -f '{{.Id}}' atk-grace | cut -c1-12)
  grace=$(kc get pods -l "podbridge.io/container-id=$id" -o jsonpath='{.items[0].spec.terminationGracePeriodSeconds}')
  [ -n "$grace" ] && [ "$grace" -le 300 ] || { echo "terminationGracePeriodSeconds=$grace"; return 1; }
  # `stop -t` beyond the bound is capped at it too (unit-tested: waiting it out here would take 300s).
}

# A label a security team names (app) never joins its Service's endpoints: a second podbridge
# instance in the namespace runs the baseline with the team's overlay (tests/rules/tenancy).
attack_tenancy_6_selector_label_under_team_policy() {
  local port pid out labels ip
  port=$(free_port)
  KUBECONFIG=$KCFG PODBRIDGE_LISTEN=127.0.0.1:$port PODBRIDGE_READINESS_LISTEN=127.0.0.1:$(free_port) NO_COLOR=1 \
    PODBRIDGE_LOG=warn PODBRIDGE_CLEANUP_ON_EXIT=true "$E2E_BIN" serve --namespace "$NS" --instance "atk-team-$POLICY" \
    --policies "$ROOT/policies/baseline" --policies "$ROOT/tests/rules/tenancy/team-policies" \
    >"$WORK/team.out" 2>"$WORK/team.log" &
  pid=$!
  for _ in $(seq 300); do curl -sf -o /dev/null -m 2 "127.0.0.1:$port/_ping" && break; sleep 0.1; done
  out=$(DOCKER_HOST=tcp://127.0.0.1:$port timeout 120 docker run -d --name atk-app --label app=web --label role=db busybox sleep 300 2>&1)
  local status=$?
  if [ $status = 0 ]; then
    labels=$(kc get pods -l podbridge.io/instance=atk-team-$POLICY -o json | jq -c '.items[0].metadata.labels')
    ip=$(kc get pods -l podbridge.io/instance=atk-team-$POLICY -o jsonpath='{.items[0].status.podIP}')
    sleep 2
    if jq -e 'has("app") or has("role")' <<<"$labels" >/dev/null; then
      echo "pod labels: $labels"; status=1
    elif [ -n "$ip" ] && kc_admin -n "$NS" get endpoints web -o json | jq -e --arg ip "$ip" '[.subsets[]?.addresses[]?.ip] | index($ip)' >/dev/null; then
      echo "the podbridge pod $ip is an endpoint of Service web"; status=1
    fi
    DOCKER_HOST=tcp://127.0.0.1:$port docker rm -f atk-app >/dev/null 2>&1
  else
    echo "$out"
  fi
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  [ $status = 0 ] && tenancy_foreign_intact
}
