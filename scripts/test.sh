#!/usr/bin/env bash
# Runs every test: the unit tests of all crates and the end-to-end suites on real
# components. Sets the machine up first (idempotent), removes beds a killed earlier run
# left behind, and tears down every bed at the end, passed, failed or interrupted.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
"$repo/scripts/setup.sh" || exit 1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/gantry/target}
# A failing e2e check's error ends with its cause; a captured backtrace after it would
# push the cause out of the tail that CI shows. Panics still print theirs.
export RUST_LIB_BACKTRACE=0
testbed="$CARGO_TARGET_DIR/debug/testbed"
"$testbed" down --all || exit 1
cleanup() { "$testbed" down --all || echo "test: teardown reported problems (see above)" >&2; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log=$(mktemp)
start=$(date +%s)
cargo test --workspace --no-fail-fast -- --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

echo
echo "==== test summary ($(( $(date +%s) - start ))s) ===="
grep -E '^\s+(Running|Doc-tests) |^test result:' "$log" | sed -E 's/^\s+(Running|Doc-tests) /suite: \1 /'
passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -oE '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
ignored=$(grep -oE '[0-9]+ ignored' "$log" | awk '{s+=$1} END {print s+0}')
echo "total: $passed passed, $failed failed, $ignored ignored; cargo exit status $status"
rm -f "$log"
exit "$status"
