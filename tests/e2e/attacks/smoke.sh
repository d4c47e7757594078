# Baseline of the hostile suite: a plain run is hardened as the policy says (the audit after it
# reads the pod), and podbridge's own credential never reaches a container's environment.
attack_00_plain_run() {
  local out; out=$(timeout 120 docker run --name atk-plain busybox sh -c 'env; id -u') || { echo "$out"; return 1; }
  ! grep -q "$(cat "$WORK/token")" <<<"$out" || { echo "the token is in the container's environment"; return 1; }
  [ "$POLICY" = baseline ] || [ "$(tail -1 <<<"$out")" != 0 ] || { echo "restricted container runs as root"; return 1; }
}
