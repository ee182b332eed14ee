#!/usr/bin/env bash
# The one command: sets up this machine if needed, then brings up a local cluster (bed
# "dev") with a node and the demo manifests (manifests/demo) running. Idempotent: an
# earlier "dev" bed is torn down and replaced.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/gantry/target}
exec "$CARGO_TARGET_DIR/debug/testbed" up --name dev --apply "$repo/manifests/demo"
