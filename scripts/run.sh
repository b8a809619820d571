#!/usr/bin/env bash
# The main job. Until the worker program lands, it replays the reference DeMo runs in
# ../shared/golden through demod's optimizer, codec and aggregation (demod-replay) and prints
# the measured errors. Installs and builds what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh >/dev/null
golden_dir="${GOLDEN_DIR:-../shared/golden}"
shopt -s nullglob
files=("$golden_dir"/*.json)
if [ ${#files[@]} -eq 0 ]; then
  echo "run: no golden files in $golden_dir (set GOLDEN_DIR)" >&2
  exit 2
fi
exec "${BUILD_DIR:-build}/bin/demod-replay" "${files[@]}"
