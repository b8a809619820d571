#!/usr/bin/env bash
# Prints, comma-separated, the Debian (or Ubuntu) packages that hold the shared libraries a
# program loads, found with ldd and dpkg -S. Libraries no package owns (an upstream LibTorch
# under /opt, libc6's few under /lib) are left out: the image carries or already has them.
#   scripts/runtime_packages.sh PROGRAM
set -euo pipefail
[ $# -eq 1 ] && [ -x "$1" ] || {
  echo "runtime_packages: usage: $0 PROGRAM (an executable)" >&2
  exit 2
}
ldd "$1" | awk '/=> \// { print $3 }' | xargs -r readlink -f |
  { xargs -r dpkg -S 2>/dev/null || true; } | cut -d: -f1 | sort -u | paste -sd,
