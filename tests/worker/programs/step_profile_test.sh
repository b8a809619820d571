#!/usr/bin/env bash
# demod-step-profile on the CPU, small: DeMo (bf16, sign) and the dense baseline each report
# every phase of the step and append one CSV line of ten fields; bad flags exit 2 with a reason.
set -euo pipefail
bin="$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
small=(--d_model 64 --layers 2 --heads 4 --context 32 --batch 2 --steps 2 --warmup 1
       --csv "$work/profile.csv")
"$bin/demod-step-profile" "${small[@]}" --optimizer demo --encoding bf16 | tee "$work/out"
"$bin/demod-step-profile" "${small[@]}" --optimizer demo --encoding sign --label sign-run
"$bin/demod-step-profile" "${small[@]}" --optimizer adamw --encoding f32
grep -q "forward+backward .* | encode .* | exchange .* | decode+apply .* | step" "$work/out"
[ "$(wc -l <"$work/profile.csv")" -eq 3 ] || { cat "$work/profile.csv"; exit 1; }
awk -F, 'NF != 10 || $2 != "cpu" || $10 <= 0 { bad = 1 } END { exit bad }' "$work/profile.csv"
grep -q "^sign-run," "$work/profile.csv"
for bad in "--device tpu" "--optimizer sgd" "--encoding f64" "--batch 0"; do
  set +e
  # shellcheck disable=SC2086
  "$bin/demod-step-profile" $bad 2>"$work/err"
  rc=$?
  set -e
  [ "$rc" -eq 2 ] && [ "$(wc -l <"$work/err")" -eq 1 ] || { echo "$bad: rc $rc"; cat "$work/err"; exit 1; }
done
echo PASS
