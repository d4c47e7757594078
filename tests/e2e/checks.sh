# The check runner and helpers of run.sh, clients.sh and lifecycle.sh (sourced). The caller sets
# WORK, PASSED=0, FAILED=0, FAILURES=() and may set CHECK_TAIL (lines of a failure's output
# shown, default 15).

# check NAME COMMAND...: runs the command (a shell function), records pass/fail. E2E_ONLY is a
# regex: only matching checks run.
check() {
  local name=$1; shift
  if [ -n "${E2E_ONLY:-}" ] && ! [[ $name =~ $E2E_ONLY ]]; then return; fi
  local out=$WORK/check.out
  if "$@" >"$out" 2>&1; then
    PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$name"
  else
    FAILED=$((FAILED + 1)); FAILURES+=("$name"); printf 'FAIL %s\n' "$name"
    sed 's/^/     | /' "$out" | tail -"${CHECK_TAIL:-15}"
  fi
}

# finish [LOG]: the closing line "N passed, M failed" (after LOG's tail when something failed);
# the exit status says whether all passed.
finish() {
  if [ "$FAILED" -gt 0 ]; then
    log "failed: ${FAILURES[*]}"
    if [ -n "${1:-}" ]; then log "podbridge log tail:"; tail -20 "$1" >&2; fi
  fi
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

expect_eq() { [ "$1" = "$2" ] || { echo "expected [$2], got [$1]"; return 1; }; }

# wait_gone SECONDS COMMAND...: until the command prints nothing
wait_gone() {
  local deadline=$((SECONDS + $1)) out; shift
  while :; do
    out=$("$@" 2>&1); [ -z "$out" ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && { echo "still there: $out"; return 1; }
    sleep 0.5
  done
}

# leaks KUBECTL_FN [ALLOWED_REGEX]: leak accounting at the end of a module. Prints every object
# podbridge manages (by label) that KUBECTL_FN (a `kubectl -n NS` wrapper) still finds, except
# those whose name matches ALLOWED_REGEX (left on purpose); fails naming them.
leaks() {
  local fn=$1 allowed=${2:-^$} found
  found=$("$fn" get pods,services,configmaps,persistentvolumeclaims,secrets \
    -l app.kubernetes.io/managed-by=podbridge -o name 2>&1 | grep -Ev "$allowed")
  [ -z "$found" ] || { echo "left behind:"; echo "$found"; return 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# api_call METHOD PATH [CURL ARGS...] (podbridge on $API_PORT, else $PORT): prints "STATUS BODY"
api_call() {
  local method=$1 path=$2; shift 2
  curl -s -m 90 -o "$WORK/body" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' \
    "$@" "127.0.0.1:${API_PORT:-$PORT}$path"
  printf ' %s' "$(cat "$WORK/body")"
}
# expect_error STATUS_REGEX MESSAGE_REGEX METHOD PATH [CURL ARGS...]: a Docker error body
expect_error() {
  local status=$1 pattern=$2 got; shift 2
  got=$(api_call "$@")
  [[ ${got%% *} =~ ^($status)$ ]] && jq -e --arg p "$pattern" '.message | test($p)' <<<"${got#* }" >/dev/null ||
    { echo "$*: expected $status with a message matching /$pattern/, got: ${got:0:400}"; return 1; }
}
