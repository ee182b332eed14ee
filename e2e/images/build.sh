#!/usr/bin/env bash
# Builds the container images the end-to-end suites pull, locally and offline, and stores
# them in a distribution-registry storage directory. A registry started over that directory
# on 127.0.0.1 serves them as a mirror of registry.k8s.io, k8s.gcr.io, gcr.io and
# public.ecr.aws in one namespace: an image is stored under its original path without the
# registry host (registry.k8s.io/e2e-test-images/busybox:1.29-2 as
# e2e-test-images/busybox:1.29-2, registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9 both
# as pause:3.9).
#
# What goes in the images is what cri-tools' critest specs (pkg/validate, pkg/benchmark) and
# the images' upstream Dockerfiles (cri-tools images/, kubernetes test/images/) need; the
# push list at the end of this file names them. Every image is linux/amd64 with OCI manifests, built from:
#   - Debian's `busybox` package (glibc build, downloaded once with `apt-get download` into
#     $GANTRY_TOOLS/debs), its applets as hard links in /bin, plus the host's glibc. Not
#     busybox-static: that build runs applets in-process before searching PATH (its
#     FEATURE_SH_STANDALONE), so a masked /bin/ls would still run, and the MaskedPaths spec
#     expects `/bin/sh -c ls` to fail with "/bin/sh: ls: Permission denied";
#   - rootfs/ (passwd, group, stand-ins for the missing pgrep and ipcs applets, web content);
#   - src/*.c compiled statically: /pause, the nginx and httpd stand-ins (a master process
#     around `busybox httpd`), nonewprivs' setuid nnp;
#   - upstream's agnhost test server (HTTP/HTTPS netexec, gRPC health checking, …), built
#     from the pinned Kubernetes module by e2e/tools/build.sh, as /agnhost on the base;
#   - metrics-server, built from its Go module by e2e/tools/build.sh into $GANTRY_TOOLS/bin,
#     alone in its image as upstream's distroless one (/metrics-server, user 65534).
# Builds are reproducible (fixed mtimes, owners and order, gzip -n): the same inputs give
# the same digests.
#
# Usage: build.sh [--storage DIR]
#   DIR defaults to $GANTRY_TOOLS/registry; GANTRY_TOOLS defaults to the repo's git-ignored
#   .tools, a link to /var/cache/gantry/tools (as e2e/tools/build.sh makes it).
# The images are pushed through a temporary registry on a free 127.0.0.1 port, checked with
# skopeo inspect, and the registry is stopped again. A stamp in DIR records the hash of this
# folder and of the outside inputs; while it matches, the script only says so.
# Needs: e2e/tools/build.sh metrics-server run first; docker-registry, skopeo, gcc with glibc's static libc, GNU tar, gzip, jq, curl, ss,
# flock, apt-get (the first time, for the busybox package).
set -euo pipefail
umask 022

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() {
  sed -n 's/^# Usage: //p' "$0" >&2
  exit 2
}

storage=
while [ $# -gt 0 ]; do
  case $1 in
    --storage) [ $# -ge 2 ] || usage; storage=$2; shift 2 ;;
    --storage=*) storage=${1#--storage=}; shift ;;
    -h | --help) usage ;;
    *) echo "images: unknown argument: $1" >&2; usage ;;
  esac
done

if [ -n "${GANTRY_TOOLS:-}" ]; then
  tools=$GANTRY_TOOLS
else
  tools=$repo/.tools
  if [ ! -e "$tools" ]; then
    mkdir -p /var/cache/gantry/tools
    ln -sfn /var/cache/gantry/tools "$tools"
  fi
fi
storage=${storage:-$tools/registry}
deb=$tools/debs/busybox_amd64.deb
agnhost=$tools/bin/agnhost
[ -x "$agnhost" ] || { echo "images: $agnhost is missing: run e2e/tools/build.sh first" >&2; exit 1; }
metrics_server=$tools/bin/metrics-server
metrics_server_version=$(cat "$repo/e2e/tools/metrics-server/VERSION")
if [ ! -x "$metrics_server" ]; then
  echo "images: $metrics_server is missing: run e2e/tools/build.sh metrics-server first" >&2
  exit 1
fi
stamp=$storage/.gantry-images-stamp
# The host's glibc, copied next to the dynamically linked busybox.
glibc_libs=(/lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libresolv.so.2)

# key_of: the hash of everything the images are made of.
key_of() {
  {
    (cd "$here" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    sha256sum "$deb" "${glibc_libs[@]}" "$agnhost" "$metrics_server"
    echo "$metrics_server_version"
    gcc --version | head -n 1
  } | sha256sum | cut -c1-64
}

up_to_date() {
  [ -f "$deb" ] && [ -f "$stamp" ] && [ -d "$storage/docker/registry/v2/repositories" ] &&
    [ "$(cat "$stamp")" = "$(key_of)" ]
}

if up_to_date; then
  echo "images: up to date in $storage"
  exit 0
fi

mkdir -p "$storage" "$tools/debs"
exec 9>"$storage/.gantry-images-lock"
flock 9 # another build over the same storage finishes first
if up_to_date; then
  echo "images: up to date in $storage"
  exit 0
fi

start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/gantry-images.XXXXXX")
registry_pid=
registry_log=$work/registry.log

stop_registry() {
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
    registry_pid=
  fi
}

cleanup() {
  stop_registry
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

epoch=0 # mtime of every file in every layer
created=1970-01-01T00:00:00Z
path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
layout=$work/oci
mkdir -p "$layout/blobs/sha256" "$work/tmp"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
export TMPDIR=$work/tmp # skopeo's scratch files

# --- inputs -------------------------------------------------------------------------------

if [ ! -f "$deb" ]; then
  echo "images: fetching Debian's busybox package into $tools/debs"
  mkdir -p "$work/apt"
  fetch() { (cd "$work/apt" && apt-get download -q -o APT::Sandbox::User=root busybox); }
  fetch || { apt-get update -q && fetch; }
  mv "$work"/apt/busybox_*.deb "$deb"
fi
mkdir -p "$work/deb"
dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$work/deb" ./bin/busybox
busybox=$work/deb/bin/busybox
for lib in $(ldd "$busybox" | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }'); do
  case " ${glibc_libs[*]} " in
    *" $lib "*) ;;
    *) echo "images: busybox needs $lib, which build.sh does not copy" >&2; exit 1 ;;
  esac
done

bin=$work/bin
mkdir -p "$bin"
compile() { gcc -static -Os -s -Wall -o "$@"; }
compile "$bin/nnp" "$here/src/nnp.c"
compile "$bin/nginx" -DWS_NGINX "$here/src/webserver.c"
compile "$bin/httpd" -DWS_HTTPD "$here/src/webserver.c"
pause_versions=(3.6 3.9 3.10.2)
for v in "${pause_versions[@]}"; do
  compile "$bin/pause-$v" -DPAUSE_VERSION="\"$v\"" "$here/src/pause.c"
done

# --- layers -------------------------------------------------------------------------------

declare -A layer_digest layer_diffid layer_size

# rootfs NAME: a new, empty staging directory for layer NAME.
rootfs() {
  rm -rf "$work/rootfs/$1"
  mkdir -p "$work/rootfs/$1"
  echo "$work/rootfs/$1"
}

# copy_tree SRC DEST: copies a folder of rootfs/, modes normalised (git keeps only +x).
copy_tree() {
  cp -R "$1/." "$2/"
  find "$2" -type d -exec chmod 0755 {} +
  find "$2" -type f -perm -u+x -exec chmod 0755 {} +
  find "$2" -type f ! -perm -u+x -exec chmod 0644 {} +
}

# layer NAME [PATH=UID:GID ...]: packs the staging directory of NAME into a gzipped layer
# blob. Everything belongs to root except the PATHs given; bin/busybox, if there, comes
# first so that it is the file its hard links point to.
layer() {
  local name=$1 root=$work/rootfs/$1 tar=$work/$1.tar list=$work/$1.list owned=() own
  shift
  local common=(--format=gnu --numeric-owner --mtime="@$epoch" --no-recursion -C "$root")
  for own in "$@"; do owned+=("${own%%=*}"); done
  (cd "$root" && find . -mindepth 1 -printf '%P\n') | LC_ALL=C sort |
    awk -v owned=" ${owned[*]} " 'index(owned, " " $0 " ") { next } $0 == "bin/busybox" { next }
      { print } $0 == "bin" { print "bin/busybox" }' >"$list"
  [ -e "$root/bin/busybox" ] || sed -i '\|^bin/busybox$|d' "$list"
  tar -cf "$tar" "${common[@]}" --owner=0 --group=0 --verbatim-files-from -T "$list"
  for own in "$@"; do
    local ids=${own#*=}
    tar -rf "$tar" "${common[@]}" --owner="${ids%%:*}" --group="${ids#*:}" -- "${own%%=*}"
  done
  layer_diffid[$name]=sha256:$(sha256sum <"$tar" | cut -c1-64)
  gzip -n -9 <"$tar" >"$tar.gz"
  add_blob "$tar.gz" >/dev/null
  layer_digest[$name]=$blob_digest
  layer_size[$name]=$blob_size
  rm -f "$tar" "$list"
}

# add_blob FILE: moves FILE into the OCI layout; sets blob_digest and blob_size.
add_blob() {
  blob_digest=sha256:$(sha256sum <"$1" | cut -c1-64)
  blob_size=$(stat -c %s "$1")
  mv "$1" "$layout/blobs/sha256/${blob_digest#sha256:}"
}

# marker NAME FILE [CONTENT]: a layer holding one file, as the test images' `ADD x x`.
marker() {
  local root
  root=$(rootfs "$1")
  mkdir -p "$(dirname "$root/$2")"
  printf '%s' "${3:-}" >"$root/$2"
  chmod 0644 "$root/$2"
  layer "$1"
}

# Base: busybox and its applets, glibc, passwd/group, pgrep/ipcs stand-ins.
root=$(rootfs base)
mkdir -p "$root"/{bin,dev,etc,home,proc,root,sys,tmp,usr/bin,usr/sbin,usr/local/bin,var/spool/mail,var/www}
copy_tree "$here/rootfs/base" "$root"
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln "$root/bin/busybox" "$root/bin/$applet"
done
for lib in "${glibc_libs[@]}"; do
  mkdir -p "$root$(dirname "$lib")"
  install -m 0755 "$lib" "$root$lib" # install follows the ld.so symlink
done
layer base

# nginx (port 80) and its hostnet variant (port 12003).
root=$(rootfs nginx)
copy_tree "$here/rootfs/nginx" "$root"
mkdir -p "$root/usr/sbin" "$root/var/run" "$root/var/log/nginx"
install -m 0755 "$bin/nginx" "$root/usr/sbin/nginx"
layer nginx
root=$(rootfs hostnet-nginx)
copy_tree "$here/rootfs/hostnet-nginx" "$root"
layer hostnet-nginx

# httpd
root=$(rootfs httpd)
copy_tree "$here/rootfs/httpd" "$root"
mkdir -p "$root/usr/local/apache2/bin" "$root/usr/local/apache2/logs"
install -m 0755 "$bin/httpd" "$root/usr/local/apache2/bin/httpd"
layer httpd

# nonewprivs: nnp setuid root.
root=$(rootfs nonewprivs)
mkdir -p "$root/usr/local/bin"
install -m 4755 "$bin/nnp" "$root/usr/local/bin/nnp"
layer nonewprivs

# agnhost: upstream's test server as /agnhost.
root=$(rootfs agnhost)
install -m 0755 "$agnhost" "$root/agnhost"
layer agnhost

# pause: /pause alone.
for v in "${pause_versions[@]}"; do
  root=$(rootfs "pause-$v")
  install -m 0755 "$bin/pause-$v" "$root/pause"
  layer "pause-$v"
done

# metrics-server: the binary, and a /tmp for its self-signed serving certificate when the
# pod mounts none there.
root=$(rootfs metrics-server)
mkdir -p "$root/tmp"
chmod 1777 "$root/tmp"
install -m 0755 "$metrics_server" "$root/metrics-server"
layer metrics-server

# test-image-predefined-group: as upstream's `adduser -u 1000 -D default-user &&
# addgroup -g 50000 group-defined-in-image && addgroup default-user group-defined-in-image`.
root=$(rootfs predefined-group)
mkdir -p "$root/etc" "$root/home/default-user"
{ cat "$here/rootfs/base/etc/passwd"
  echo "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh"; } >"$root/etc/passwd"
{ cat "$here/rootfs/base/etc/group"
  echo "default-user:x:1000:"
  echo "group-defined-in-image:x:50000:default-user"; } >"$root/etc/group"
layer predefined-group home/default-user=1000:1000

# The cri-tools test images add one empty file named after the image (images/image-test).
for f in test-image-1 test-image-2 test-image-3 test-image-latest same-image test all; do
  marker "file-$f" "$f"
done
# public.ecr.aws/docker/library/busybox variants (critest's image benchmarks): distinct.
busybox_variants=(1.35.0-glibc 1-uclibc 1 1-glibc 1-musl)
for v in "${busybox_variants[@]}"; do
  marker "variant-$v" etc/busybox-variant "$v"$'\n'
done

# --- images -------------------------------------------------------------------------------

declare -A image_digest
index_entries=()

# image REF CONFIG LAYER...: writes the config and manifest of image REF into the layout.
# CONFIG is the image config's "config" object; Env defaults to the usual PATH.
image() {
  local ref=$1 config=$2 l diffids=() layers=()
  shift 2
  for l in "$@"; do
    diffids+=("${layer_diffid[$l]}")
    layers+=("$(jq -cn --arg d "${layer_digest[$l]}" --argjson s "${layer_size[$l]}" \
      '{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}')")
  done
  jq -cnj --argjson c "$config" --arg created "$created" --arg path "$path_env" \
    --argjson d "$(printf '%s\n' "${diffids[@]}" | jq -R . | jq -sc .)" \
    '{created: $created, architecture: "amd64", os: "linux", config: ({Env: [$path]} + $c),
      rootfs: {type: "layers", diff_ids: $d}}' >"$work/config.json"
  add_blob "$work/config.json"
  jq -cnj --arg d "$blob_digest" --argjson s "$blob_size" \
    --argjson l "$(printf '%s\n' "${layers[@]}" | jq -sc .)" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s},
      layers: $l}' >"$work/manifest.json"
  add_blob "$work/manifest.json"
  image_digest[$ref]=$blob_digest
  index_entries+=("$(jq -cn --arg d "$blob_digest" --argjson s "$blob_size" --arg r "$ref" \
    '{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
      annotations: {"org.opencontainers.image.ref.name": $r}}')")
}

sh_cmd='"Cmd":["sh"]'
nginx_cmd='"Cmd":["nginx","-g","daemon off;"]'
image busybox "{$sh_cmd}" base
image nginx "{$nginx_cmd,\"ExposedPorts\":{\"80/tcp\":{}},\"StopSignal\":\"SIGTERM\"}" base nginx
image hostnet-nginx "{$nginx_cmd,\"ExposedPorts\":{\"12003/tcp\":{}},\"StopSignal\":\"SIGQUIT\"}" \
  base nginx hostnet-nginx
image httpd '{"Cmd":["httpd-foreground"],"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGWINCH",
  "WorkingDir":"/usr/local/apache2","Env":["PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","HTTPD_PREFIX=/usr/local/apache2"]}' \
  base httpd
image nonewprivs '{"Cmd":["nnp"]}' base nonewprivs
image agnhost '{"Entrypoint":["/agnhost"]}' base agnhost
for v in "${pause_versions[@]}"; do
  image "pause-$v" '{"Entrypoint":["/pause"],"User":"65535:65535","WorkingDir":"/"}' "pause-$v"
done
for f in test-image-1 test-image-2 test-image-3 test-image-latest same-image test all; do
  image "$f" "{$sh_cmd}" base "file-$f"
done
image user-uid "{$sh_cmd,\"User\":\"1002\"}" base
image user-username "{$sh_cmd,\"User\":\"www-data\"}" base
image user-uid-group "{$sh_cmd,\"User\":\"1003:1004\"}" base
image user-username-group "{$sh_cmd,\"User\":\"www-data:1004\"}" base
image predefined-group "{$sh_cmd,\"User\":\"1000\"}" base predefined-group
for v in "${busybox_variants[@]}"; do
  image "busybox-$v" "{$sh_cmd}" base "variant-$v"
done
image metrics-server '{"Entrypoint":["/metrics-server"],"User":"65534","WorkingDir":"/"}' metrics-server

printf '%s\n' "${index_entries[@]}" | jq -sc '{schemaVersion: 2, manifests: .}' >"$layout/index.json"

# --- push ---------------------------------------------------------------------------------

# Start a registry of our own over the storage, on a free port.
start_registry() {
  local _attempt _i
  for _attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    if [ -n "$(ss -Htln "sport = :$port")" ]; then continue; fi
    cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    docker-registry serve "$work/registry.yml" >>"$registry_log" 2>&1 &
    registry_pid=$!
    for _i in $(seq 100); do
      kill -0 "$registry_pid" 2>/dev/null || break
      if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
        return 0
      fi
      sleep 0.1
    done
    stop_registry
  done
  echo "images: could not start docker-registry; its log:" >&2
  cat "$registry_log" >&2
  exit 1
}

# push REF NAME...: pushes image REF as each NAME (as the suites spell it) under NAME's path.
pushed=0
push() {
  local ref=$1 name path done_paths=" " info
  shift
  for name in "$@"; do
    path=${name#*/}
    case $done_paths in *" $path "*) continue ;; esac
    done_paths+="$path "
    skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
      "oci:$layout:$ref" "docker://127.0.0.1:$port/$path"
    info=$(skopeo inspect --tls-verify=false "docker://127.0.0.1:$port/$path")
    if [ "$(jq -r '[.Digest, .Architecture, .Os] | join(" ")' <<<"$info")" != \
      "${image_digest[$ref]} amd64 linux" ]; then
      echo "images: $path in the registry is not what was pushed: $info" >&2
      exit 1
    fi
    pushed=$((pushed + 1))
  done
  echo "images: ${done_paths:1:-1} ${image_digest[$ref]} ($*)"
}

start_registry
e2e=registry.k8s.io/e2e-test-images
cri=gcr.io/k8s-staging-cri-tools
push busybox $e2e/busybox:1.29-2        # critest's default container image
push nginx $e2e/nginx:1.14-2            # web server, HostPID/PodPID/ContainerPID specs
push httpd $e2e/httpd:2.4.39-4          # multi-container specs
push nonewprivs $e2e/nonewprivs:1.3     # NoNewPrivs specs
# agnhost: the tag is test/images/agnhost/VERSION of the pinned Kubernetes release.
push agnhost $e2e/agnhost:2.66.1        # probes over HTTPS and gRPC
# pause: 3.9 is critest's "same image from two registries" (one ID for both names); 3.6 is
# containerd 1.6's default sandbox image, 3.10.2 Kubernetes 1.37's. Each tag is a distinct
# image, so pulling a sandbox image never adds a third tag to pause:3.9's image.
push pause-3.9 registry.k8s.io/pause:3.9 k8s.gcr.io/pause:3.9
push pause-3.6 registry.k8s.io/pause:3.6
push pause-3.10.2 registry.k8s.io/pause:3.10.2
# cri-tools' own test images (images/build in cri-tools). Not built: test-image-digest,
# whose spec pins upstream's digest, which no local build can reproduce.
push hostnet-nginx $cri/hostnet-nginx-amd64:latest
push test-image-latest $cri/test-image-latest:latest
push test $cri/test-image-tag:test
push all $cri/test-image-tag:all
push test-image-1 $cri/test-image-1:latest
push test-image-2 $cri/test-image-2:latest
push test-image-3 $cri/test-image-3:latest
push same-image $cri/test-image-tags:1
push same-image $cri/test-image-tags:2
push same-image $cri/test-image-tags:3
push user-uid $cri/test-image-user-uid:latest
push user-username $cri/test-image-user-username:latest
push user-uid-group $cri/test-image-user-uid-group:latest
push user-username-group $cri/test-image-user-username-group:latest
push predefined-group $cri/test-image-predefined-group:latest
for v in "${busybox_variants[@]}"; do # critest -benchmark's image listing
  push "busybox-$v" "public.ecr.aws/docker/library/busybox:$v"
done
# metrics-server for `kubectl top` (manifests/demo/metrics-server.yaml), under the name
# of upstream's release image.
push metrics-server "registry.k8s.io/metrics-server/metrics-server:$metrics_server_version"
stop_registry

# Drop what earlier builds left untagged (the registry must not be serving writes).
docker-registry garbage-collect --delete-untagged "$work/registry.yml" >>"$registry_log" 2>&1 || {
  echo "images: garbage-collect failed; registry log:" >&2
  cat "$registry_log" >&2
  exit 1
}

key_of >"$stamp"
echo "images: pushed $pushed tags to $storage in $(($(date +%s) - start))s"
