#!/usr/bin/env bash
# The benchmark (issue 7): Gantry's node against the upstream kubelet on containerd's
# CRI plugin, on one test bed. Sets up this machine if needed (scripts/setup.sh), builds
# `gantry` in the `lean` profile (release with whole-program LTO) and the
# `bench` program in release mode, and runs it with that gantry.
#   scripts/bench.sh [--rounds N] [--out DIR] [--quick] [--p5-only]
# Results: e2e/bench-results/<date>/ (results.md, results.json, startup.svg).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/gantry/target}
echo "bench: building gantry (lean) and bench (release)"
(cd "$repo" && cargo build --quiet --profile lean -p gantry --bin gantry)
(cd "$repo" && cargo build --quiet --release -p gantry-e2e --bin bench)
# Private copies: the target directory may be shared with other checkouts' builds.
bin=$(mktemp -d /var/tmp/gantry-bench.XXXXXX)
trap 'rm -rf "$bin"' EXIT
cp "$CARGO_TARGET_DIR/lean/gantry" "$CARGO_TARGET_DIR/release/bench" "$bin/"
GANTRY_BIN="$bin/gantry" CARGO_MANIFEST_DIR="$repo/e2e" "$bin/bench" "$@"
