#!/usr/bin/env bash
# Prepares this machine (Debian 12, as root) for Gantry's test bed. Idempotent: what
# is already installed or built for the pinned versions is reused.
#   1. Debian packages: containerd, runc, CNI plugins, the distribution registry,
#      skopeo/umoci, busybox-static, iptables, iproute2, openssl, protoc, ...
#   2. Go-built tools from the modules pinned in e2e/tools/ (Kubernetes, etcd, cri-tools,
#      metrics-server)
#   3. Test images, built locally into the mirror's store (e2e/images/build.sh)
#   4. The Rust workspace (gantry and the testbed command)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (the test bed manages containerd, mounts, cgroups and network)"
start=$(date +%s)

packages=(containerd runc containernetworking-plugins docker-registry skopeo umoci
  busybox-static iptables iproute2 openssl protobuf-compiler conntrack socat util-linux
  kmod procps psmisc curl jq ca-certificates gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  # The bed runs its own containerd: keep the package from starting the system one.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $had_policy = 1 ] || rm -f "$policy"
else
  say "Debian packages present"
fi

command -v go >/dev/null || die "Go 1.26 or newer is needed to build the pinned Kubernetes tools (https://go.dev/dl)"
command -v cargo >/dev/null || die "a Rust toolchain (cargo) is needed (https://rustup.rs)"
modprobe overlay 2>/dev/null || true

"$repo/e2e/tools/build.sh"
"$repo/e2e/images/build.sh"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/gantry/target}
say "building the Rust workspace (target dir $CARGO_TARGET_DIR)"
(cd "$repo" && cargo build --quiet --workspace --bins)
say "done in $(( $(date +%s) - start ))s"
