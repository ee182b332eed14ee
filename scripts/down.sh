#!/usr/bin/env bash
# Tears down the local cluster of scripts/up.sh and everything it made on the host.
set -euo pipefail
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/gantry/target}
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$CARGO_TARGET_DIR/debug/testbed" ] || (cd "$repo" && cargo build --quiet -p gantry-e2e --bin testbed)
exec "$CARGO_TARGET_DIR/debug/testbed" down --name dev
