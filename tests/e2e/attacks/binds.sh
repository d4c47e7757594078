# Bind mounts as a hostile job tries them: podbridge copies bind sources from its own filesystem,
# so only sources under `bind_roots` may be bound. Credentials of the host running podbridge,
# the whole filesystem, `..`, option-like names, a symbolic link in an allowed root that leads out
# and an oversized source must all be refused, and no pod may end up holding what lies outside.
#
# Sourced by tests/e2e/attacks.sh; podbridge is started after this file is read, so it inherits
# the settings exported here.
BIND_ROOT=$WORK/binds-root
BIND_OUTSIDE=$WORK/binds-outside
BIND_MARKER=bind-secret-$$-$RANDOM$RANDOM
export PODBRIDGE_BIND_ROOTS="[\"$BIND_ROOT\"]"
export PODBRIDGE_BIND_SIZE_LIMIT=4Mi

attacks_binds_setup() {
  mkdir -p "$BIND_ROOT/project/src" "$BIND_OUTSIDE/dir" "$BIND_ROOT/big"
  chmod 755 "$BIND_ROOT" "$BIND_ROOT/project" "$BIND_ROOT/project/src" "$BIND_ROOT/big"
  echo "$BIND_MARKER" >"$BIND_OUTSIDE/secret"
  echo "$BIND_MARKER" >"$BIND_OUTSIDE/dir/secret"
  echo source-code >"$BIND_ROOT/project/src/main.c"
  echo setting=1 >"$BIND_ROOT/project/app.conf"
  echo not-an-option >"$BIND_ROOT/project/--remove-files"
  chmod 644 "$BIND_ROOT/project/src/main.c" "$BIND_ROOT/project/app.conf" "$BIND_ROOT/project/--remove-files"
  ln -sfn "$BIND_OUTSIDE/secret" "$BIND_ROOT/leak"
  ln -sfn "$KCFG" "$BIND_ROOT/kubeconfig"
  ln -sfn "$BIND_OUTSIDE/dir" "$BIND_ROOT/leak-dir"
  ln -sfn "$BIND_OUTSIDE/secret" "$BIND_ROOT/project/src/escape"
  [ -s "$BIND_ROOT/big/blob" ] || head -c $((6 << 20)) /dev/urandom >"$BIND_ROOT/big/blob"
}

# binds_refused OUTPUT FIELD: the docker CLI's error names the rule, the setting and the field.
binds_refused() {
  grep -q 'container create blocked by rule bind-roots' <<<"$1" && grep -q 'bind_roots' <<<"$1" &&
    grep -qF "(at $2)" <<<"$1" || { echo "not refused by bind-roots at $2: $1"; return 1; }
}

# binds_no_pod NAME: no pod of the container (start refused before anything was applied, or the
# failed copy removed it).
binds_no_pod() {
  local pods; pods=$(kc get pods -o name | grep -F -- "$1")
  [ -z "$pods" ] || { echo "pods left for $1: $pods"; return 1; }
}

binds_containers() { docker ps -aq | wc -l; }

attack_binds_host_credentials_refused_at_create() {
  local before src out
  before=$(binds_containers)
  for src in /var/run/secrets/kubernetes.io/serviceaccount "$HOME/.kube" /root/.docker / /etc/../root/.kube; do
    out=$(timeout 60 docker run --rm -v "$src:/x" busybox true 2>&1) && { echo "ran with $src"; return 1; }
    binds_refused "$out" /HostConfig/Binds/0 || return 1
  done
  out=$(timeout 60 docker run --rm --mount type=bind,src=/root/.kube,dst=/k busybox true 2>&1) &&
    { echo "ran with --mount"; return 1; }
  binds_refused "$out" /HostConfig/Mounts/0 || return 1
  expect_eq "$(binds_containers)" "$before"
}

attack_binds_raw_api_refused_with_403() {
  expect_error 403 'blocked by rule bind-roots[\s\S]*/HostConfig/Binds/1[\s\S]*bind_roots' POST /containers/create \
    -d '{"Image":"busybox","HostConfig":{"Binds":["'"$BIND_ROOT"'/project:/p","/root/.kube:/k"]}}' &&
    expect_error 403 'blocked by rule bind-roots[\s\S]*/HostConfig/Mounts/0[\s\S]*\.\.[\s\S]*bind_roots' POST /containers/create \
      -d '{"Image":"busybox","HostConfig":{"Mounts":[{"Type":"bind","Source":"'"$BIND_ROOT"'/../binds-outside","Target":"/o"}]}}' &&
    expect_error 403 'blocked by rule bind-roots' POST /containers/create \
      -d '{"Image":"busybox","HostConfig":{"Binds":["/:/x"]}}' &&
    # not absolute, so not a bind: Docker's own answer for a bad volume name
    expect_error 400 'invalid characters for a local volume name' POST /containers/create \
      -d '{"Image":"busybox","HostConfig":{"Binds":["-foo:/x"]}}'
}

attack_binds_option_like_source_is_no_option() {
  local out
  out=$(timeout 60 docker run --rm -v=-foo:/x busybox true 2>&1) && { echo "ran with -foo"; return 1; }
  grep -Eq 'invalid characters|bind-roots' <<<"$out" || { echo "$out"; return 1; }
  # inside a root, a file named like a tar option is copied as a file and left in place
  out=$(timeout 120 docker run --rm -v "$BIND_ROOT/project/--remove-files:/opt/flag" busybox cat /opt/flag 2>&1)
  expect_eq "$out" not-an-option && [ -f "$BIND_ROOT/project/--remove-files" ]
}

attack_binds_symlink_out_of_the_root_fails_start() {
  local link out
  for link in leak kubeconfig leak-dir; do
    out=$(timeout 120 docker run --name "atk-link-$link" -v "$BIND_ROOT/$link:/leak" busybox cat /leak 2>&1) &&
      { echo "started with $link: $out"; return 1; }
    grep -q 'symbolic link leads out of the allowed roots' <<<"$out" || { echo "$link: $out"; return 1; }
    ! grep -qF "$BIND_MARKER" <<<"$out" || { echo "the secret was printed: $out"; return 1; }
    binds_no_pod "atk-link-$link" || return 1
    docker rm -f "atk-link-$link" >/dev/null 2>&1
  done
}

attack_binds_links_inside_a_copied_directory_stay_links() {
  timeout 120 docker run -d --name atk-bind-dir -v "$BIND_ROOT/project:/p:ro" busybox sleep 300 >/dev/null || return 1
  local pod; pod=$(kc get pods -o name | grep -F atk-bind-dir | head -1)
  [ -n "$pod" ] || { echo "no pod"; return 1; }
  expect_eq "$(docker exec atk-bind-dir cat /p/src/main.c)" source-code &&
    expect_eq "$(docker exec atk-bind-dir readlink /p/src/escape)" "$BIND_OUTSIDE/secret" || return 1
  # read back through Kubernetes too: the secret is nowhere in the pod's copy
  local found; found=$(kc exec "${pod#pod/}" -c main -- grep -rl "$BIND_MARKER" /p 2>/dev/null)
  [ -z "$found" ] || { echo "the secret reached the pod: $found"; return 1; }
  docker rm -f atk-bind-dir >/dev/null
}

attack_binds_over_the_size_limit_fail_start() {
  local out
  out=$(timeout 180 docker run --name atk-bind-big -v "$BIND_ROOT/big:/big" busybox ls -l /big 2>&1) &&
    { echo "started: $out"; return 1; }
  grep -q 'bind_size_limit' <<<"$out" || { echo "$out"; return 1; }
  binds_no_pod atk-bind-big || return 1
  docker rm -f atk-bind-big >/dev/null 2>&1
}

attack_binds_under_the_root_still_work() {
  expect_eq "$(timeout 120 docker run --rm -v "$BIND_ROOT/project/src:/src" \
    -v "$BIND_ROOT/project/app.conf:/etc/app.conf:ro" busybox cat /src/main.c /etc/app.conf | tr '\n' ' ')" \
    "source-code setting=1 "
}
