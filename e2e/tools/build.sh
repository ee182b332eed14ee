#!/usr/bin/env bash
# Builds the Go tools the test bed runs, from the modules pinned under e2e/tools/:
#   kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl,
#               and agnhost (upstream's e2e test server, for e2e/images)
#   etcd:       etcd
#   cri-tools:  crictl, critest
#   metrics-server: metrics-server (packed into the bed's image by e2e/images/build.sh)
# Outputs go to $GANTRY_TOOLS (default /var/cache/gantry/tools, shared by every clone on
# the machine so a fresh clone reuses them), reachable from the repo as the git-ignored
# link .tools. A component is rebuilt only when its go.mod, go.sum, VERSION, this script
# or the Go version changed.
#
# Usage: build.sh [kubernetes|etcd|cri-tools|metrics-server ...]   (no argument: all of them)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tools=${GANTRY_TOOLS:-/var/cache/gantry/tools}
mkdir -p "$tools"
[ -e "$repo/.tools" ] || ln -sfn "$tools" "$repo/.tools"
bin=$tools/bin
stamps=$tools/stamps
mkdir -p "$bin" "$stamps"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
export GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}

key_of() {
  local c=$1
  cat "$here/$c/go.mod" "$here/$c/VERSION" "$here/$c/go.sum" "$0" 2>/dev/null | sha256sum | cut -c1-16
  go version | sha256sum | cut -c1-16
}

outputs_of() {
  case $1 in
    kubernetes) echo kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl agnhost ;;
    etcd) echo etcd ;;
    cri-tools) echo crictl critest ;;
    metrics-server) echo metrics-server ;;
    *) echo "unknown component: $1" >&2; return 1 ;;
  esac
}

up_to_date() {
  local c=$1 o
  [ -f "$stamps/$c" ] && [ "$(cat "$stamps/$c")" = "$(key_of "$c")" ] || return 1
  for o in $(outputs_of "$c"); do [ -x "$bin/$o" ] || return 1; done
}

build_kubernetes() {
  local v minor ldflags pkg
  v=$(cat "$here/kubernetes/VERSION"); minor=${v#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$here/kubernetes" && go build -trimpath -ldflags "$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/test/images/agnhost)
}

build_etcd() {
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
}

build_cri_tools() {
  local v ldflags
  v=$(cat "$here/cri-tools/VERSION")
  ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$v"
  (cd "$here/cri-tools" &&
    go build -trimpath -ldflags "$ldflags" -o "$bin/crictl" sigs.k8s.io/cri-tools/cmd/crictl &&
    go test -c -trimpath -ldflags "$ldflags" -o "$bin/critest" sigs.k8s.io/cri-tools/cmd/critest)
}

# metrics-server stamps its version as its Makefile does, through client-go's version package.
build_metrics_server() {
  local v ldflags pkg=k8s.io/client-go/pkg/version
  v=$(cat "$here/metrics-server/VERSION")
  ldflags="-s -w -X $pkg.gitVersion=$v -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  (cd "$here/metrics-server" &&
    go build -trimpath -ldflags "$ldflags" -o "$bin/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server)
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kubernetes etcd cri-tools metrics-server)
for c in "${components[@]}"; do
  outputs_of "$c" >/dev/null
  if up_to_date "$c"; then
    echo "tools: $c $(cat "$here/$c/VERSION") is up to date in $bin"
    continue
  fi
  echo "tools: building $c $(cat "$here/$c/VERSION") into $bin"
  start=$(date +%s)
  "build_${c//-/_}"
  key_of "$c" >"$stamps/$c"
  echo "tools: built $c in $(( $(date +%s) - start ))s"
done
