#!/usr/bin/env bash
# Builds demod's container images without any container registry, and saves them as OCI
# archives in ${BUILD_DIR:-build}/images/:
#   demod-coordinator   the coordinator and its runtime libraries, nothing else
#   demod-worker-cpu    the worker with Debian's CPU LibTorch runtime
#   demod-prometheus    Debian's Prometheus, for the local stack (deploy/compose.yaml)
#   demod-worker-cuda   only when asked for: the worker built inside NVIDIA's CUDA image
#                       against upstream's CUDA LibTorch (deploy/worker-cuda.Containerfile);
#                       needs NVIDIA's registry, download.pytorch.org and LIBTORCH_SHA256
# Each image is a Debian bookworm root file system made with mmdebstrap from Debian's
# packages (the packages that hold the program's shared libraries, found with ldd and dpkg,
# no recommends, no documentation), imported into podman, with the host-built bookworm
# program copied in (podman build --pull=never, deploy/*.Containerfile). A root file system
# is made again only when its package list changes. Prints each image's size.
#   scripts/images.sh [coordinator] [worker-cpu] [prometheus] [worker-cuda]
#                                                  (default: the first three)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build="${BUILD_DIR:-build}"
out="$build/images"
mkdir -p "$out"
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(coordinator worker-cpu prometheus)
# Every image but the CUDA worker carries programs built here.
[ "${images[*]}" = worker-cuda ] || bash scripts/build.sh >/dev/null

die() {
  echo "images: $*" >&2
  exit 1
}
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap --mode=root and podman's storage)"

# Podman on these machines: runc (crun refuses this host's cgroups), and root cannot raise the
# open-files limit above 20000.
export CONTAINERS_CONF="$PWD/$out/containers.conf"
cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF

version=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# rootfs NAME PACKAGES [mmdebstrap options]: $out/NAME-rootfs.tar, a bookworm system of
# PACKAGES and what they depend on, with a user 65532 and its /var/lib/demod; kept while
# PACKAGES and the options stay the same.
rootfs() {
  local name="$1" packages="$2"
  shift 2
  local tar="$out/$name-rootfs.tar" stamp="$out/$name-rootfs.packages"
  local recipe="$packages $*"
  if [ -f "$tar" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$recipe" ]; then return 0; fi
  echo "images: making the $name root file system (a few minutes)" >&2
  rm -f "$tar" "$stamp"
  mmdebstrap --quiet --variant=essential --mode=root \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --include="$packages,ca-certificates" \
    --customize-hook='echo "demod:x:65532:65532:demod:/var/lib/demod:/usr/sbin/nologin" >>"$1/etc/passwd"' \
    --customize-hook='echo "demod:x:65532:" >>"$1/etc/group"' \
    --customize-hook='mkdir -p "$1/var/lib/demod" && chown 65532:65532 "$1/var/lib/demod"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
    "$@" bookworm "$out/$name-rootfs.partial.tar" || die "mmdebstrap failed for $name"
  mv "$out/$name-rootfs.partial.tar" "$tar"
  echo "$recipe" >"$stamp"
}

# image NAME PROGRAM [mmdebstrap options]: localhost/demod-NAME:VERSION from
# deploy/NAME.Containerfile. PROGRAM is one of build/bin/, or a Debian package to install.
image() {
  local name="$1" program="$2"
  shift 2
  local binary="$build/bin/$program" packages
  if [ -x "$binary" ]; then
    packages=$(bash scripts/runtime_packages.sh "$binary")
  else
    binary=""
    packages="$program"
  fi
  rootfs "$name" "$packages" "$@"
  local base="localhost/demod-$name-base:$(sha256sum <"$out/$name-rootfs.tar" | cut -c1-12)"
  if ! podman image exists "$base"; then
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$out/$name-rootfs.tar" "$base" >/dev/null
  fi
  local context
  context=$(mktemp -d)
  # The image carries the program without its debug information.
  [ -z "$binary" ] || objcopy --strip-debug "$binary" "$context/$program"
  podman build --quiet --pull=never -f "deploy/$name.Containerfile" --build-arg "BASE=$base" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    -t "localhost/demod-$name:$version" -t "localhost/demod-$name:latest" "$context" >/dev/null ||
    die "podman build failed for $name"
  rm -rf "$context"
  save "$name"
}

# save NAME: localhost/demod-NAME:VERSION as an OCI archive in $out; prints its size.
save() {
  local name="$1"
  rm -f "$out/demod-$name.oci.tar"
  podman save --quiet --format oci-archive -o "$out/demod-$name.oci.tar" \
    "localhost/demod-$name:$version"
  local size
  size=$(podman image inspect --format '{{.Size}}' "localhost/demod-$name:$version")
  printf 'images: localhost/demod-%s:%s  %d MB uncompressed  (%s)\n' "$name" "$version" \
    $((size / 1000000)) "$out/demod-$name.oci.tar"
}

# The CUDA worker is built from the sources inside NVIDIA's image (nothing from the host's
# build): the context is the tracked and untracked-but-not-ignored files, as in a clean clone.
worker_cuda() {
  [ -n "${LIBTORCH_SHA256:-}" ] ||
    die "worker-cuda needs LIBTORCH_SHA256 (the sha256 of the LibTorch zip; docs/deploy.md)"
  local context args=()
  context=$(mktemp -d)
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$context"
  args+=(--build-arg "LIBTORCH_SHA256=$LIBTORCH_SHA256")
  [ -z "${LIBTORCH_URL:-}" ] || args+=(--build-arg "LIBTORCH_URL=$LIBTORCH_URL")
  [ -z "${CUDA_VERSION:-}" ] || args+=(--build-arg "CUDA_VERSION=$CUDA_VERSION")
  podman build --quiet -f deploy/worker-cuda.Containerfile "${args[@]}" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    -t "localhost/demod-worker-cuda:$version" -t "localhost/demod-worker-cuda:latest" \
    "$context" >/dev/null || {
    rm -rf "$context"
    die "podman build failed for worker-cuda (it needs docker.io/nvidia/cuda and download.pytorch.org)"
  }
  rm -rf "$context"
  save worker-cuda
}

for name in "${images[@]}"; do
  case "$name" in
    coordinator) image coordinator demod-coordinator ;;
    # Debian's LibTorch links OpenCV, FFmpeg, Qt and GDAL (for Caffe2's operators), so the worker
    # loads their libraries, which must stay; their data, plugins and programs it never reads.
    # Mesa's LLVM and Z3 (through libGL's drivers) and LibTorch's Python bindings it does not
    # load at all (ldd build/bin/demod-worker).
    worker-cpu)
      image worker-cpu demod-worker \
        --customize-hook='cd "$1/usr/share" && find . -mindepth 1 -maxdepth 1 \
          ! -name ca-certificates ! -name zoneinfo ! -name doc ! -name dpkg \
          ! -name debconf ! -name perl5 -exec rm -rf {} +' \
        --customize-hook='cd "$1/usr/lib/x86_64-linux-gnu" && rm -rf dri gstreamer-1.0 qt5/plugins \
          gdalplugins gio gdk-pixbuf-2.0 girepository-1.0 vdpau' \
        --customize-hook='rm -rf "$1"/usr/include "$1"/usr/lib/python3*' \
        --customize-hook='cd "$1/usr/lib/x86_64-linux-gnu" && rm -f libLLVM-15.so* libz3.so* \
          libtorch_python.so*'
      ;;
    prometheus) image prometheus prometheus ;;
    worker-cuda) worker_cuda ;;
    *) die "unknown image '$name' (coordinator, worker-cpu, prometheus, worker-cuda)" ;;
  esac
done
