#!/usr/bin/env bash
# A longer hunt with the property tests that `cargo test` runs briefly: every parser of untrusted
# input (quantities, SPDY frames, registry challenges and URLs, image references, tar listings
# and archive paths, create bodies, event times, filters, stats output) gets PROPTEST_CASES cases
# per property instead of the few hundred of the default run.
#
#   tests/fuzz.sh                  # 20000 cases per property
#   tests/fuzz.sh 100000 quantity  # more cases, only the properties of one module (quantity,
#                                  # spdy, registry, image, prestart, archive, decode, system, stats)
#
# Debug build on purpose: overflow checks stay on, so arithmetic that would wrap in release
# panics and is reported. A failure is shrunk to a minimal input, printed, and saved under
# proptest-regressions/ (commit it: every later run replays it first).
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES=${1:-20000}
module=${2:-}
exec cargo test --lib -- "${module:+$module::tests::}properties"
