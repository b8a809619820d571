#!/usr/bin/env bash
# The test command: installs what is missing, configures, builds and runs every test.
# Idempotent and quick when everything is already in place.
#   BUILD_DIR  build folder (default: build)
#   CI=true    turns warnings into errors
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_data.sh data  # the training process test reads the real text
bash scripts/tools.sh            # Helm and the checkers of the chart and the dashboards
bash scripts/build.sh
bash scripts/fuzz.sh build >/dev/null  # the fuzz targets, with clang (label fuzz)
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j2 --timeout 600 "$@"
