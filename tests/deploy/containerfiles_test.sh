#!/usr/bin/env bash
# The CUDA worker image may differ from the CPU one only in its base and its LibTorch
# (deploy/worker-cuda.Containerfile says why). CI cannot build it (no registry), so this checks
# the recipe: the final stages of both run the program the same way (user, folder, entrypoint,
# the same OCI label keys), and the CUDA build stage uses the project's own scripts.
#   containerfiles_test.sh SOURCE_DIR
set -uo pipefail
deploy="$1/deploy"
bin="" data=""
source "$1/tests/support/process_test_lib.sh"

# The instructions of a Containerfile's last stage, continuation lines joined, comments dropped.
final_stage() {
  sed -e '/^[[:space:]]*#/d' "$1" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' |
    awk '/^FROM /{stage=""} {stage=stage $0 "\n"} END {printf "%s", stage}'
}
# What running the image depends on: USER, WORKDIR, ENTRYPOINT, and the label keys.
run_contract() {
  final_stage "$1" | grep -E '^(USER|WORKDIR|ENTRYPOINT) '
  final_stage "$1" | grep -E '^LABEL ' | grep -oE 'org\.opencontainers\.image\.[a-z.]+' | sort
}
cpu="$deploy/worker-cpu.Containerfile"
cuda="$deploy/worker-cuda.Containerfile"
check "both recipes exist" '[ -f "$cpu" ] && [ -f "$cuda" ]'
check "the images run the worker the same way" \
  'diff <(run_contract "$cpu") <(run_contract "$cuda") && [ -n "$(run_contract "$cpu")" ]'
check "the CUDA build installs with scripts/setup.sh, without Debian's LibTorch" \
  'grep -q "scripts/setup.sh --build-only --no-libtorch" "$cuda"'
check "the CUDA build builds with scripts/build.sh against /opt/libtorch" \
  'grep -q "bash scripts/build.sh" "$cuda" && grep -q "CMAKE_PREFIX_PATH=/opt/libtorch" "$cuda"'
check "the CUDA runtime packages come from scripts/runtime_packages.sh" \
  'grep -q "scripts/runtime_packages.sh /demod-worker" "$cuda"'
check "LibTorch's zip is checked against a pinned sha256" 'grep -q "sha256sum -c" "$cuda"'
finish
