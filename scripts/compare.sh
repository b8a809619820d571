#!/usr/bin/env bash
# DeMo against the dense AdamW baseline, tuned and over seeds (issue 13 part 1,
# docs/benchmarks.md "DeMo against AdamW over seeds"): every configuration ("row") is trained
# as a real run, a coordinator and WORKERS worker processes on loopback (as scripts/run.sh
# starts them), with one recipe: the byte-level GPT (d_model 128, 4 layers, 4 heads, context
# 128) on the SOTU text, batch 8 per worker, warm-up over 5% of the steps then cosine to 0.1 x
# lr, weight decay 0.1, AdamW betas 0.9/0.95, a fixed step deadline (every worker in every step).
#   phase 1  each row at each of its learning rates (LRS_DEMO or LRS_ADAMW), first seed only;
#            the best rate is the lowest final validation loss (the workers' split, the last 5%
#            of the text; nothing else is tuned on it). When the best is the grid's largest
#            (smallest) rate, the grid grows by twice (half) that rate, at most EXTEND times a
#            row, so that the best rate is not an edge of the sweep
#   phase 2  each row at its best rate, the other SEEDS
#   long     with LONG=1: the best two DeMo rows and the best AdamW row (mean over SEEDS) at
#            their best rate, every seed, for LONG_STEPS (no new tuning)
# Seeds: worker i of seed S runs with --seed S*100+i (its initialization and data order). The
# workers are started one after another, each once the previous one has joined, so worker-1
# joins first and its initialization becomes the run's, and worker ids (data shards, order of
# summation) follow i.
#
#   scripts/compare.sh [bin dir] [data dir]          the sweep (resumes in a reused OUT)
#   DRY_RUN=1 scripts/compare.sh                     the plan and the exact commands only
#   ROWS="adamw-f32 demo-bf16-k32-c64-d0.999" LRS_DEMO=1e-3 LRS_ADAMW=3e-3 SEEDS=1 STEPS=20 \
#       WORKERS=2 LONG=0 scripts/compare.sh          a smoke run
#
# Rows: adamw-f32, adamw-bf16 (the dense baseline's gradient encoding) and
# demo-ENC-kTOPK-cCHUNK-dDECAY (ENC f32, bf16, f16 or sign; top-k per chunk, DCT chunk size,
# compression decay), e.g. demo-sign-k32-c64-d0.999.
# Results in OUT: runs.csv (one line per finished run: row, lr, seed, steps, final validation
# loss, upload / download / fp32-gradient bytes per worker-step, wall seconds; a run with its
# line there is skipped when OUT is reused), failed.csv (runs that did not train every step
# to one fingerprint; retried on the next call), summary.md (per row: best lr, validation loss
# mean ± std and min-max over seeds, bytes, fp32 gradient / upload, gap to the best AdamW
# row; the learning-rate sweep), loss_vs_step.png and loss_vs_bytes.png (best rate of each
# row, mean over seeds; long_*.png for the long runs; gnuplot, as scripts/run.sh), and
# runs/ROW/lrLR-seedS-stepsN/ with each run's run.yaml, commands.sh, logs, CSVs, summaries.
# Environment: ROWS (default: the issue's nine rows), LRS_DEMO ("5e-4 1e-3 2e-3"), LRS_ADAMW
# ("1e-3 3e-3 6e-3"), EXTEND (2; 0 keeps the grids as given), SEEDS ("1 2 3"; the first is the
# sweep's), STEPS (300), LONG (1),
# LONG_STEPS (1000), WORKERS (4), BATCH (8), VAL_INTERVAL (worker-1's validation every N steps;
# 10; STEPS and LONG_STEPS must be multiples), VAL_TOKENS (held-out bytes in each validation, as
# windows of 128: demod-worker --validation_samples; default 8,192), WEIGHT_DECAY (0.1), DEADLINE_S
# (600), TIMEOUT_S (per run; default 60 + 3 s a step), OUT (runs/compare-<UTC time>), DRY_RUN.
# Exits 0 when every run finished, 1 when some did not (failed.csv), 2 on bad settings.
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
bad() { echo "compare: $*" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
# Absolute paths: the commands written to each run folder work from anywhere.
bin="$(realpath -m "${1:-$root/build/bin}")"
data="$(realpath -m "${2:-$root/data}")"

default_rows="adamw-f32 adamw-bf16 demo-bf16-k32-c64-d0.999 demo-f32-k32-c64-d0.999
  demo-sign-k32-c64-d0.999 demo-bf16-k16-c64-d0.999 demo-bf16-k8-c64-d0.999
  demo-bf16-k32-c32-d0.999 demo-bf16-k32-c64-d0.99"
# words LIST: the words of a list that may span lines, one per line.
words() { local w; for w in $1; do echo "$w"; done; }
mapfile -t rows < <(words "${ROWS:-$default_rows}")
mapfile -t lrs_demo < <(words "${LRS_DEMO:-5e-4 1e-3 2e-3}")
mapfile -t lrs_adamw < <(words "${LRS_ADAMW:-1e-3 3e-3 6e-3}")
mapfile -t seeds < <(words "${SEEDS:-1 2 3}")
extend="${EXTEND:-2}"
steps="${STEPS:-300}"
long="${LONG:-1}"
long_steps="${LONG_STEPS:-1000}"
workers="${WORKERS:-4}"
batch="${BATCH:-8}"
val_interval="${VAL_INTERVAL:-10}"
weight_decay="${WEIGHT_DECAY:-0.1}"
deadline_s="${DEADLINE_S:-600}"
dry_run="${DRY_RUN:-0}"
out="$(realpath -m "${OUT:-$root/runs/compare-$(date -u +%Y%m%d-%H%M%S)}")"

# --- settings ---------------------------------------------------------------------------------
positive() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
number() { [[ "$1" =~ ^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE]-?[0-9]+)?$ ]]; }
[ "${#rows[@]}" -gt 0 ] || bad "ROWS is empty"
# row_settings ROW: optimizer, encoding, topk, chunk, decay of a row name (1 if it is none).
row_settings() {
  if [[ "$1" =~ ^adamw-(f32|bf16)$ ]]; then
    optimizer=adamw encoding="${BASH_REMATCH[1]}" topk=32 chunk=64 decay=0.999
  elif [[ "$1" =~ ^demo-(f32|bf16|f16|sign)-k([1-9][0-9]*)-c([1-9][0-9]*)-d(0?[.][0-9]+|0|1)$ ]]; then
    optimizer=demo encoding="${BASH_REMATCH[1]}" topk="${BASH_REMATCH[2]}"
    chunk="${BASH_REMATCH[3]}" decay="${BASH_REMATCH[4]}"
  else
    return 1
  fi
}
for row in "${rows[@]}"; do
  row_settings "$row" ||
    bad "row '$row': adamw-f32, adamw-bf16 or demo-ENC-kTOPK-cCHUNK-dDECAY (demo-bf16-k32-c64-d0.999)"
done
[ "$(printf '%s\n' "${rows[@]}" | sort | uniq -d)" = "" ] || bad "ROWS names a row twice"
for lr in "${lrs_demo[@]}" "${lrs_adamw[@]}"; do
  number "$lr" && awk -v x="$lr" 'BEGIN { exit !(x > 0) }' ||
    bad "learning rate '$lr' must be a number > 0 (5e-4, 0.001)"
done
[ "${#seeds[@]}" -gt 0 ] || bad "SEEDS is empty"
for s in "${seeds[@]}"; do positive "$s" || bad "seed '$s' must be a positive integer"; done
[ "$(printf '%s\n' "${seeds[@]}" | sort | uniq -d)" = "" ] || bad "SEEDS names a seed twice"
positive "$steps" || bad "STEPS must be a positive integer"
positive "$long_steps" || bad "LONG_STEPS must be a positive integer"
positive "$workers" || bad "WORKERS must be a positive integer"
positive "$batch" || bad "BATCH must be a positive integer"
positive "$val_interval" || bad "VAL_INTERVAL must be a positive integer"
[ $((steps % val_interval)) -eq 0 ] || bad "STEPS ($steps) must be a multiple of VAL_INTERVAL ($val_interval)"
[ "$long" = 0 ] || [ $((long_steps % val_interval)) -eq 0 ] ||
  bad "LONG_STEPS ($long_steps) must be a multiple of VAL_INTERVAL ($val_interval)"
case "$long" in 0 | 1) ;; *) bad "LONG must be 0 or 1" ;; esac
[[ "$extend" =~ ^[0-9]+$ ]] || bad "EXTEND must be an integer >= 0"
case "$dry_run" in 0 | 1) ;; *) bad "DRY_RUN must be 0 or 1" ;; esac
number "$weight_decay" || bad "WEIGHT_DECAY must be a number >= 0"
number "$deadline_s" || bad "DEADLINE_S must be a number of seconds"
[ -z "${TIMEOUT_S:-}" ] || positive "$TIMEOUT_S" || bad "TIMEOUT_S must be a positive integer"
# The validation size: demod-worker's --validation_samples windows of the context (128 bytes),
# 64 by default (8,192 predicted bytes).
val_flag=()
if [ -n "${VAL_TOKENS:-}" ]; then
  positive "$VAL_TOKENS" || bad "VAL_TOKENS must be a positive integer"
  val_flag=(--validation_samples $(((VAL_TOKENS + 127) / 128)))
fi
if [ "$dry_run" = 0 ]; then
  for b in demod-coordinator demod-worker; do
    [ -x "$bin/$b" ] || bad "no $bin/$b (scripts/build.sh builds it)"
  done
  command -v python3 >/dev/null || bad "no python3"
fi
[ "$dry_run" = 1 ] || mkdir -p "$out"

# --- processes --------------------------------------------------------------------------------
pids=()  # the run under way: the coordinator, then the workers
tmp=""
stop_run() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  trap - EXIT INT TERM
  stop_run
  [ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo; echo "compare: interrupted; stopping every process (finished runs are kept in $out)" >&2; exit 130' INT TERM

# --- results ----------------------------------------------------------------------------------
# One Python helper (standard library only) for reading the runs: record a run, pick rates and
# rows, write the summary and the plots' data.
tmp="$(mktemp -d)"
py="$tmp/compare.py"
cat >"$py" <<'PY'
import csv, json, math, os, statistics, sys

out = os.environ["OUT"]
runs_csv = os.path.join(out, "runs.csv")
FIELDS = ["row", "lr", "seed", "steps", "val_loss", "up_B_per_worker_step",
          "down_B_per_worker_step", "dense_fp32_B_per_worker_step", "wall_s"]
rows = os.environ["ROWS"].split()
seeds = os.environ["SEEDS"].split()
steps, long_steps = os.environ["STEPS"], os.environ["LONG_STEPS"]
lrs = {"demo": os.environ["LRS_DEMO"].split(), "adamw": os.environ["LRS_ADAMW"].split()}
family = lambda row: row.split("-")[0]

def load_results():
    if not os.path.exists(runs_csv):
        return []
    return list(csv.DictReader(open(runs_csv)))

def val(r):
    v = float(r["val_loss"])
    return v if math.isfinite(v) else math.inf

def rate_name(x):
    """4e-3 for 0.004: the grids' own way of writing rates."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"

def sweep(row, results):
    """Phase 1's rates for a row: its grid, grown while the best rate is an edge (at most
    EXTEND times), and the next rate to run (None when the sweep is complete)."""
    rates = sorted(lrs[family(row)], key=float)
    grown = 0
    while True:
        done = {r["lr"]: val(r) for r in results if r["row"] == row and r["steps"] == steps
                and r["seed"] == seeds[0]}
        if any(lr not in done for lr in rates) or grown >= int(os.environ["EXTEND"]):
            return rates, None
        best = min(rates, key=lambda lr: done[lr])
        if len(rates) > 1 and best == rates[-1]:
            new = rate_name(float(best) * 2)
        elif len(rates) > 1 and best == rates[0]:
            new = rate_name(float(best) / 2)
        else:
            return rates, None
        rates = sorted(rates + [new], key=float)
        grown += 1
        if new not in done:
            return rates, new

def best_lr(row, results):
    """Phase 1: the row's rates at the first seed; the lowest final validation loss."""
    rates, _ = sweep(row, results)
    done = [r for r in results if r["row"] == row and r["steps"] == steps and
            r["seed"] == seeds[0] and r["lr"] in rates]
    return min(done, key=val)["lr"] if done else None

def at_best(row, n, results):
    lr = best_lr(row, results)
    return lr, [r for r in results if r["row"] == row and r["lr"] == lr and r["steps"] == n
                and r["seed"] in seeds]

def mean_val(row, results):
    _, rs = at_best(row, steps, results)
    return statistics.mean(val(r) for r in rs) if rs else math.inf

def record(folder, row, lr, seed, n, workers, wall):
    """Checks a run (every worker finished every step, one fingerprint) and appends its line."""
    workers, n = int(workers), int(n)
    summaries, all_rows = [], []
    for i in range(1, workers + 1):
        try:
            summaries.append(json.load(open(f"{folder}/worker-{i}.json")))
            all_rows += list(csv.DictReader(open(f"{folder}/worker-{i}.csv")))
        except (OSError, ValueError) as e:
            sys.exit(f"worker-{i} left no summary or CSV ({e.__class__.__name__})")
    unfinished = [i + 1 for i, s in enumerate(summaries)
                  if not s.get("run_finished") or s.get("last_step") != n]
    if unfinished:
        sys.exit(f"workers {unfinished} did not finish step {n}")
    fingerprints = {s.get("fingerprint") for s in summaries}
    if len(fingerprints) != 1:
        sys.exit(f"{len(fingerprints)} different final fingerprints")
    v = summaries[0].get("last_validation_loss")
    mean = lambda k: statistics.mean(float(r[k]) for r in all_rows)
    line = {"row": row, "lr": lr, "seed": seed, "steps": n,
            "val_loss": "nan" if v is None else f"{v:.5f}",
            "up_B_per_worker_step": f"{mean('bytes_up'):.0f}",
            "down_B_per_worker_step": f"{mean('bytes_down'):.0f}",
            "dense_fp32_B_per_worker_step": f"{mean('dense_fp32_bytes'):.0f}",
            "wall_s": f"{float(wall):.1f}"}
    new = not os.path.exists(runs_csv)
    with open(runs_csv, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow(line)
    contributors = statistics.mean(float(r["contributors"]) for r in all_rows)
    print(f"val {line['val_loss']}, up {mean('bytes_up') / 1e3:.1f} kB, down "
          f"{mean('bytes_down') / 1e3:.1f} kB per worker-step, contributors {contributors:.2f}, "
          f"{float(wall):.0f} s")

def long_rows(results):
    """The best two DeMo rows and the best AdamW row, by mean validation loss over seeds."""
    ranked = lambda fam: sorted((r for r in rows if family(r) == fam and best_lr(r, results)),
                                key=lambda r: mean_val(r, results))
    return ranked("demo")[:2] + ranked("adamw")[:1]

def curve(row, lr, n):
    """Mean over seeds of worker-1's validation losses: (step, loss, cumulative upload B)."""
    per_seed = []
    for seed in seeds:
        path = f"{out}/runs/{row}/lr{lr}-seed{seed}-steps{n}/worker-1.csv"
        if not os.path.exists(path):
            continue
        up, points = 0.0, {}
        for r in csv.DictReader(open(path)):
            up += float(r["bytes_up"])
            if r["validation_loss"] not in ("", "nan"):
                points[int(r["step"])] = (float(r["validation_loss"]), up)
        per_seed.append(points)
    if not per_seed:
        return []
    common = sorted(set.intersection(*(set(p) for p in per_seed)))
    return [(s, statistics.mean(p[s][0] for p in per_seed),
             statistics.mean(p[s][1] for p in per_seed)) for s in common]

def table(results, n, chosen):
    kB = lambda b: f"{b / 1e3:,.1f} kB"
    stats = {}
    for row in chosen:
        lr, rs = at_best(row, n, results)
        if rs:
            vals = [val(r) for r in rs]
            f = lambda k: statistics.mean(float(r[k]) for r in rs)
            stats[row] = (lr, vals, f("up_B_per_worker_step"), f("down_B_per_worker_step"),
                          f("dense_fp32_B_per_worker_step"))
    adamw = [r for r in stats if family(r) == "adamw"]
    ref = min(adamw, key=lambda r: statistics.mean(stats[r][1])) if adamw else None
    ref_mean = statistics.mean(stats[ref][1]) if ref else None
    lines = [f"| row | best lr | val loss, mean ± std | min - max | seeds | upload / worker-step "
             f"| download / worker-step | fp32 gradient / upload | vs {ref or 'AdamW'} |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for row, (lr, vals, up, down, dense) in stats.items():
        m = statistics.mean(vals)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        gap = f"{100 * (m - ref_mean) / ref_mean:+.1f}%" if ref_mean else "-"
        lines.append(f"| {row} | {lr} | {m:.4f} ± {sd:.4f} | {min(vals):.4f} - {max(vals):.4f} "
                     f"| {len(vals)} | {kB(up)} | {kB(down)} | {dense / up:.1f}x | {gap} |")
    return lines

def plots(results, n, chosen, prefix):
    """Data files and a gnuplot script: validation loss against step and cumulative upload."""
    folder = f"{out}/plots"
    os.makedirs(folder, exist_ok=True)
    series = []
    for row in chosen:
        lr = best_lr(row, results)
        points = curve(row, lr, int(n)) if lr else []
        if points:
            path = f"{folder}/{prefix}{row}.dat"
            with open(path, "w") as f:
                f.write("# step val_loss cumulative_upload_bytes_per_worker\n")
                f.writelines(f"{s} {v} {u:.0f}\n" for s, v, u in points)
            series.append((path, f"{row} (lr {lr})"))
    if not series:
        return None
    plot = lambda using: ", \\\n     ".join(
        f'"{p}" using {using} with linespoints pointsize 0.5 title "{t}"' for p, t in series)
    title = f"demod: validation loss, mean over seeds {' '.join(seeds)}, {n} steps"
    return f"""set terminal pngcairo size 1100,700 noenhanced
set grid; set key top right
set output "{out}/{prefix}loss_vs_step.png"
set title "{title}"; set xlabel "step"; set ylabel "validation loss"
unset logscale x; set format x "%g"
plot {plot("1:2")}
set output "{out}/{prefix}loss_vs_bytes.png"
set logscale x; set format x "%.0s%cB"
set xlabel "bytes uploaded per worker (cumulative, log)"
plot {plot("3:2")}
"""

def report():
    results = load_results()
    os.makedirs(f"{out}/plots", exist_ok=True)
    md = [f"# DeMo against AdamW (scripts/compare.sh)", "",
          os.environ["SETTINGS"], "",
          f"Final validation loss: worker-1's at the last step ({os.environ['VAL_WINDOWS']} "
          f"windows of 128 bytes spread "
          f"over the last 5% of the text). Best rate per row: the lowest at seed {seeds[0]}.", "",
          f"## {steps} steps", ""] + table(results, steps, rows)
    width = max(len(sweep(row, results)[0]) for row in rows)
    md += ["", f"### Learning-rate sweep (seed {seeds[0]}, {steps} steps; best in bold; a grid "
           f"whose best rate was an edge grew by twice or half that rate)", "",
           "| row | " + " | ".join(f"lr {i + 1}" for i in range(width)) + " |",
           "|---|" + "--:|" * width]
    for row in rows:
        best = best_lr(row, results)
        cells = []
        for lr in sweep(row, results)[0]:
            r = [x for x in results if x["row"] == row and x["lr"] == lr and
                 x["steps"] == steps and x["seed"] == seeds[0]]
            cell = f"{lr}: {r[0]['val_loss']}" if r else f"{lr}: -"
            cells.append(f"**{cell}**" if lr == best else cell)
        md.append(f"| {row} | " + " | ".join(cells) + " |")
    scripts = [plots(results, steps, rows, "")]
    md += ["", "Plots: loss_vs_step.png, loss_vs_bytes.png (best rate per row, mean over seeds)."]
    if os.environ.get("LONG") == "1":
        chosen = long_rows(results)
        if any(r["steps"] == long_steps for r in results):
            md += ["", f"## {long_steps} steps (best two DeMo rows and the best AdamW row, their "
                   f"{steps}-step rates)", ""] + table(results, long_steps, chosen)
            scripts.append(plots(results, long_steps, chosen, "long_"))
            md += ["", "Plots: long_loss_vs_step.png, long_loss_vs_bytes.png."]
    open(f"{out}/summary.md", "w").write("\n".join(md) + "\n")
    open(f"{out}/plots/plot.gp", "w").write("\n".join(s for s in scripts if s))

what = sys.argv[1]
if what == "record":
    record(*sys.argv[2:])
elif what == "next-rate":
    print(sweep(sys.argv[2], load_results())[1] or "")
elif what == "best-lr":
    print(best_lr(sys.argv[2], load_results()) or "")
elif what == "long-rows":
    print(" ".join(long_rows(load_results())))
elif what == "report":
    report()
PY
export OUT="$out" ROWS="${rows[*]}" SEEDS="${seeds[*]}" STEPS="$steps" LONG_STEPS="$long_steps"
export LRS_DEMO="${lrs_demo[*]}" LRS_ADAMW="${lrs_adamw[*]}" LONG="$long" EXTEND="$extend"
export VAL_WINDOWS=$(((${VAL_TOKENS:-8192} + 127) / 128))
export SETTINGS="Recipe: GPT d_model 128, 4 layers, 4 heads, context 128; $workers workers, batch \
$batch each; SOTU; warm-up 5% then cosine to 0.1 x lr; weight decay $weight_decay; AdamW betas \
0.9/0.95; fixed step deadline ${deadline_s} s. Seeds ${seeds[*]}; DeMo rates ${lrs_demo[*]}, \
AdamW rates ${lrs_adamw[*]}."

# --- one run ----------------------------------------------------------------------------------
# done_run ROW LR SEED STEPS: the run has its line in runs.csv.
done_run() {
  [ -s "$out/runs.csv" ] &&
    awk -F, -v k="$1,$2,$3,$4" '$1 "," $2 "," $3 "," $4 == k { found = 1 } END { exit !found }' \
      "$out/runs.csv"
}
# run_config ROW LR STEPS: the run configuration (YAML) of a run.
run_config() {
  row_settings "$1"
  local warmup=$(($3 * 5 / 100))
  [ "$warmup" -ge 1 ] || warmup=1
  cat <<EOF
optimizer:
  algorithm: $optimizer
  lr: {base_lr: $2, warmup_steps: $warmup, final_factor: 0.1}
  value_encoding: $encoding
  compression_topk: $topk
  compression_chunk: $chunk
  compression_decay: $decay
  weight_decay: $weight_decay
  adam_beta1: 0.9
  adam_beta2: 0.95
deadline: {kind: fixed, fixed_s: $deadline_s}
EOF
}
# coordinator_command DIR RUN_ID STEPS: sets coordinator_cmd.
coordinator_command() {
  coordinator_cmd=("$bin/demod-coordinator" --config "$1/run.yaml" --listen 127.0.0.1:0
    --port_file "$1/coordinator.port" --metrics "" --run_id "$2" --min_workers "$workers"
    --max_workers "$workers" --total_steps "$3")
}
# worker_command DIR I SEED PORT: sets worker_cmd, worker I's command. Only worker-1
# validates: the parameters are the same on every worker.
worker_command() {
  local dir="$1" i="$2" threads=$(($(nproc) / workers)) interval=0
  [ "$threads" -ge 1 ] || threads=1
  [ "$i" -ne 1 ] || interval="$val_interval"
  worker_cmd=("$bin/demod-worker" --coordinator "127.0.0.1:$4" --name "worker-$i"
    --device cpu --model gpt --gpt_d_model 128 --gpt_layers 4 --gpt_heads 4 --context 128
    --data sotu --data_dir "$data" --batch_size "$batch" --seed $(($3 * 100 + i))
    --threads "$threads" --validation_interval "$interval" "${val_flag[@]}"
    --csv "$dir/worker-$i.csv" --summary_json "$dir/worker-$i.json" --progress=false
    --reconnect_for 60s)
}
# wait_for FILE PATTERN PID SECONDS: FILE holds PATTERN (0), or PID exited or time ran out (1).
wait_for() {
  local i
  for i in $(seq $(($4 * 20))); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
planned=0 finished=0 failed=0
# run_one ROW LR SEED STEPS: one run (skipped when runs.csv has it); 1 when it failed.
run_one() {
  local row="$1" lr="$2" seed="$3" n="$4"
  local dir="$out/runs/$row/lr$lr-seed$seed-steps$n" id="$row-lr$lr-s$seed-n$n" i why=""
  planned=$((planned + 1))
  if done_run "$row" "$lr" "$seed" "$n"; then
    echo "[$planned] $row lr $lr seed $seed, $n steps: done before (runs.csv)"
    return 0
  fi
  id="${id:0:64}"
  if [ "$dry_run" = 1 ]; then
    echo "[$planned] $row lr $lr seed $seed, $n steps: $dir/run.yaml"
    run_config "$row" "$lr" "$n" | sed 's/^/    /'
    coordinator_command "$dir" "$id" "$n"
    printf '    '; printf '%q ' "${coordinator_cmd[@]}"; echo '&'
    echo "    # PORT: the number in coordinator.port; each worker once the one before has joined"
    for i in $(seq 1 "$workers"); do
      worker_command "$dir" "$i" "$seed" PORT
      printf '    '; printf '%q ' "${worker_cmd[@]}"; echo '&'
    done
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  run_config "$row" "$lr" "$n" >"$dir/run.yaml"
  printf '[%d] %s lr %s seed %s, %d steps: ' "$planned" "$row" "$lr" "$seed" "$n"
  local started
  started=$(date +%s.%N)
  coordinator_command "$dir" "$id" "$n"
  { printf '%q ' "${coordinator_cmd[@]}"; echo '&'; } >"$dir/commands.sh"
  "${coordinator_cmd[@]}" >"$dir/coordinator.log" 2>&1 &
  pids=($!)
  if wait_for "$dir/coordinator.port" . "${pids[0]}" 10; then
    local port
    port=$(cat "$dir/coordinator.port")
    # One after another: worker-1 joins first and seeds the run's parameters.
    for i in $(seq 1 "$workers"); do
      worker_command "$dir" "$i" "$seed" "$port"
      { printf '%q ' "${worker_cmd[@]}"; [ "$i" -eq 1 ] && echo "&" || echo "&  # once worker-$((i - 1)) has joined"; } >>"$dir/commands.sh"
      "${worker_cmd[@]}" >"$dir/worker-$i.log" 2>&1 &
      pids+=($!)
      wait_for "$dir/worker-$i.log" "joined run " "$!" 60 || { why="worker-$i did not join"; break; }
    done
  else
    why="the coordinator did not start"
  fi
  # Until every worker has exited; workers outlive the coordinator only briefly when the run
  # finished (as in scripts/run.sh).
  local deadline=$((SECONDS + ${TIMEOUT_S:-$((60 + 3 * n))})) orphaned_at="" alive pid
  while [ -z "$why" ]; do
    alive=0
    for pid in "${pids[@]:1}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
    [ "$alive" -eq 0 ] && break
    if kill -0 "${pids[0]}" 2>/dev/null; then orphaned_at=""; else orphaned_at="${orphaned_at:-$SECONDS}"; fi
    [ -z "$orphaned_at" ] || [ $((SECONDS - orphaned_at)) -lt 20 ] || why="the coordinator exited"
    [ "$SECONDS" -lt "$deadline" ] || why="TIMEOUT_S passed"
    if [ -t 1 ] && [ -s "$dir/worker-1.csv" ]; then
      printf '\r[%d] %s lr %s seed %s: step %s/%d\033[K' "$planned" "$row" "$lr" "$seed" \
        "$(tail -n 1 "$dir/worker-1.csv" | cut -d, -f1)" "$n"
    fi
    sleep 1
  done
  stop_run
  [ -t 1 ] && printf '\r[%d] %s lr %s seed %s, %d steps: \033[K' "$planned" "$row" "$lr" "$seed" "$n"
  local wall result
  wall=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ -z "$why" ] && result=$(python3 "$py" record "$dir" "$row" "$lr" "$seed" "$n" "$workers" "$wall" 2>&1); then
    echo "$result"
    finished=$((finished + 1))
    return 0
  fi
  why="${why:-$result}"
  echo "FAILED: $why (logs in $dir)"
  [ -s "$out/failed.csv" ] || echo "row,lr,seed,steps,reason" >"$out/failed.csv"
  echo "$row,$lr,$seed,$n,\"${why//\"/\'}\"" >>"$out/failed.csv"
  failed=$((failed + 1))
  return 1
}

# --- the plan ---------------------------------------------------------------------------------
rates_of() { if [[ "$1" == adamw-* ]]; then echo "${lrs_adamw[*]}"; else echo "${lrs_demo[*]}"; fi; }
# The run count and an estimate from docs/benchmarks.md: 4 workers of this GPT on a 2-core
# machine take about 0.27 s a DeMo step and 0.5 s a dense AdamW step; the step's compute grows
# with the workers, and each run spends some 5 s starting.
n1=0 n2=0 est=0
for row in "${rows[@]}"; do
  read -r -a r <<<"$(rates_of "$row")"
  s=$([[ "$row" == adamw-* ]] && echo 0.5 || echo 0.27)
  n1=$((n1 + ${#r[@]})) n2=$((n2 + ${#seeds[@]} - 1))
  est=$(awk -v e="$est" -v k=$((${#r[@]} + ${#seeds[@]} - 1)) -v s="$s" -v n="$steps" -v w="$workers" \
    'BEGIN { print e + k * (n * s * w / 4 + 5) }')
done
n3=0
if [ "$long" = 1 ]; then
  demo_rows=$(printf '%s\n' "${rows[@]}" | grep -c '^demo-' || true)
  adamw_rows=$(printf '%s\n' "${rows[@]}" | grep -c '^adamw-' || true)
  long_demo=$((demo_rows < 2 ? demo_rows : 2)) long_adamw=$((adamw_rows < 1 ? adamw_rows : 1))
  n3=$(((long_demo + long_adamw) * ${#seeds[@]}))
  est=$(awk -v e="$est" -v d=$((long_demo * ${#seeds[@]})) -v a=$((long_adamw * ${#seeds[@]})) \
    -v n="$long_steps" -v w="$workers" 'BEGIN { print e + d * (n * 0.27 * w / 4 + 5) + a * (n * 0.5 * w / 4 + 5) }')
fi
others="${seeds[*]:1}"
others="${others:-none}"
echo "compare: ${#rows[@]} rows, $workers workers, $steps steps; phase 1 (rates, seed ${seeds[0]}):" \
  "$n1 runs, phase 2 (seeds $others): $n2 runs, long ($long_steps steps): $n3 runs;" \
  "about $(awk -v e="$est" 'BEGIN { printf "%.0f", e / 60 }') min on a 2-core machine; results in $out"
if [ "$dry_run" = 0 ]; then
  bash "$root/scripts/fetch_data.sh" "$data"
fi

# --- phase 1, phase 2, long -------------------------------------------------------------------
echo "phase 1: every rate at seed ${seeds[0]}"
for row in "${rows[@]}"; do
  for lr in $(rates_of "$row"); do run_one "$row" "$lr" "${seeds[0]}" "$steps" || true; done
  if [ "$dry_run" = 1 ]; then
    [ "$extend" = 0 ] || echo "  $row: when the best of these is the largest (smallest) rate," \
      "twice (half) that rate too, at most $extend times"
    continue
  fi
  while lr=$(python3 "$py" next-rate "$row") && [ -n "$lr" ]; do
    echo "  $row: the best rate is an edge of the grid; adding $lr"
    run_one "$row" "$lr" "${seeds[0]}" "$steps" || break
  done
done
echo "phase 2: the best rate at seeds $others"
declare -A best
for row in "${rows[@]}"; do
  if [ "$dry_run" = 1 ]; then
    echo "  $row: the rate of $(rates_of "$row" | sed 's/ /, /g') with the lowest validation loss at seed ${seeds[0]}," \
      "at seeds $others: the commands above with that rate and --seed S*100+i"
    continue
  fi
  best[$row]=$(python3 "$py" best-lr "$row")
  [ -n "${best[$row]}" ] || { echo "  $row: no finished phase-1 run, skipped"; continue; }
  for seed in "${seeds[@]:1}"; do run_one "$row" "${best[$row]}" "$seed" "$steps" || true; done
done
if [ "$long" = 1 ]; then
  if [ "$dry_run" = 1 ]; then
    echo "long: the best two DeMo rows and the best AdamW row (mean over seeds), $long_steps steps," \
      "at their best rate and every seed"
  else
    read -r -a long_rows <<<"$(python3 "$py" long-rows)"
    echo "long: ${long_rows[*]:-none}, $long_steps steps"
    for row in "${long_rows[@]}"; do
      for seed in "${seeds[@]}"; do run_one "$row" "${best[$row]}" "$seed" "$long_steps" || true; done
    done
  fi
fi
[ "$dry_run" = 1 ] && exit 0

# --- the summary and the plots ----------------------------------------------------------------
if [ -s "$out/runs.csv" ]; then
  python3 "$py" report
  if ! command -v gnuplot >/dev/null; then
    echo "compare: no gnuplot (scripts/setup.sh installs it): no plots; data in $out/plots" >&2
  elif [ -s "$out/plots/plot.gp" ]; then
    gnuplot "$out/plots/plot.gp"
  fi
  cat "$out/summary.md"
fi
echo "compare: $finished runs finished, $failed failed, $((planned - finished - failed)) done before;" \
  "results in $out (runs.csv, summary.md, *.png)"
[ "$failed" -eq 0 ]
