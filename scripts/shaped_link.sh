#!/usr/bin/env bash
# DeMo and the dense AdamW baseline on a slow link (issue 13, docs/benchmarks.md "On a slow
# link"): the coordinator in a network namespace of its own, the workers together in another,
# the two joined by one link that every byte of the run crosses: two TAP devices forwarded by
# demod-link-bridge (DELAY_MS each way: the kernel here has no netem) and shaped by tbf on each
# device's egress (RATE, each direction). Then one training run over it, as scripts/run.sh
# trains (its default GPT on the SOTU text, batch 8, its learning rates, warm-up of a tenth).
#
#   scripts/shaped_link.sh [bin dir] [data dir]           one run: RATE, DELAY_MS, MODE, ...
#   SWEEP=1 scripts/shaped_link.sh [bin dir] [data dir]   every RATES x MODES, a markdown table
#   MODE=link scripts/shaped_link.sh [bin dir]            only the link: ping RTT and TCP rate
#   MODE=clean scripts/shaped_link.sh                     removes what a SIGKILLed run left: the
#                                                         namespaces of PIDs no longer running
#
# Prints one line per run: mode, rate, round trip, median and p90 step time (steps without a
# validation, from the 4th; also its compute and its exchange, step - compute), wall time,
# final validation loss, time to TARGET_LOSS, bytes on the wire per worker per step each way
# (the bridge's counters, whole Ethernet frames: from a snapshot once every worker has trained
# 3 steps, so a step may fall on either side of it and short runs read a little low; and over
# the whole run, joins and parameter transfers included) and the payload and aggregate bytes
# the workers report (their CSVs). Appends the same to OUT/results.csv and
# keeps each run's logs, CSVs and the bridge's counters in OUT/<mode>-<rate>-<delay>ms/.
# Needs root (namespaces, TAP devices, tc), iproute2, python3; touches only its own
# namespaces (demod-c-PID, demod-w-PID), devices (dmlcPID, dmlwPID) and their loopbacks, and
# removes them, with every process it started, on exit and on Ctrl-C.
# Environment: RATE (tc units: 100mbit, 20mbit; "none": only the delay; default 100mbit),
# DELAY_MS (one way; default 20, a 40 ms round trip), MODE (demo-bf16, demo-sign, adamw: f32
# gradients; link; default demo-bf16), STEPS (200), WORKERS (4), TARGET_LOSS (the wall time,
# from the workers' start, at which worker-1's validation loss first reaches it), MODEL_FLAGS
# (demod-worker's model flags; default its own, scripts/run.sh's GPT), BATCH (8), LR (default
# 1e-3 DeMo, 3e-3 AdamW), DEADLINE_S (the coordinator's fixed step deadline, 600: every worker
# in every step), BURST (tbf bytes; default 5 ms of RATE, at least 4096), LIMIT_MS (tbf queue
# as delay, 50), BRIDGE_RATE_MBIT (the bridge's own rate limit each way, 0: none; with
# RATE=none it shapes instead of tbf), SLOW_START_AFTER_IDLE (net.ipv4.tcp_slow_start_after_idle
# in both namespaces: 1, the kernel's default, shrinks a connection's congestion window after
# it has been idle; 0 keeps it), TIMEOUT_S (per run, 3600), OUT (default
# runs/shaped-<UTC time>); SWEEP: RATES ("none 1000mbit 100mbit 20mbit"), MODES ("demo-bf16
# demo-sign adamw").
# Exits 0 when every run trained to its last step with one fingerprint, 1 otherwise, 2 on bad
# settings, 77 when this machine cannot build the namespaces (not root, no /dev/net/tun).
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(cd "${1:-$root/build/bin}" && pwd)"
data="$(cd "${2:-$root/data}" && pwd)"
rate="${RATE:-100mbit}"
delay_ms="${DELAY_MS:-20}"
mode="${MODE:-demo-bf16}"
steps="${STEPS:-200}"
workers="${WORKERS:-4}"
target="${TARGET_LOSS:-}"
read -r -a model_flags <<<"${MODEL_FLAGS:-}"
batch="${BATCH:-8}"
deadline_s="${DEADLINE_S:-600}"
limit_ms="${LIMIT_MS:-50}"
bridge_rate="${BRIDGE_RATE_MBIT:-0}"
timeout_s="${TIMEOUT_S:-3600}"
slow_start_after_idle="${SLOW_START_AFTER_IDLE:-1}"
out="${OUT:-$root/runs/shaped-$(date -u +%Y%m%d-%H%M%S)}"
bad() { echo "shaped_link: $*" >&2; exit 2; }
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || bad "STEPS must be a positive integer"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || bad "WORKERS must be a positive integer"
[[ "$slow_start_after_idle" =~ ^[01]$ ]] || bad "SLOW_START_AFTER_IDLE must be 0 or 1"
[[ "$delay_ms" =~ ^[0-9]+([.][0-9]+)?$ ]] || bad "DELAY_MS must be a number of milliseconds"
[ -z "$target" ] || [[ "$target" =~ ^[0-9]+([.][0-9]+)?$ ]] || bad "TARGET_LOSS must be a number"
for tool in ip tc python3; do
  command -v "$tool" >/dev/null || { echo "shaped_link: no '$tool' (iproute2, python3)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "shaped_link: needs root (namespaces, TAP devices, tc)"; exit 77; }
[ -c /dev/net/tun ] || { echo "shaped_link: no /dev/net/tun (TAP devices)"; exit 77; }
[ -x "$bin/demod-link-bridge" ] || bad "no $bin/demod-link-bridge (cmake --build build)"
python="$(command -v python3)"

# --- the link ---------------------------------------------------------------------------------
ns_c="demod-c-$$" ns_w="demod-w-$$" tap_c="dmlc$$" tap_w="dmlw$$"
net="10.77.$(($$ % 250 + 1))"
addr_c="$net.1" addr_w="$net.2"
bridge_pid=""
pids=()  # the coordinator and the workers of the run under way
# rate_bytes RATE: tc's rate units as bytes per second.
rate_bytes() {
  "$python" -c 'import re, sys
m = re.fullmatch(r"([0-9.]+)(gbit|mbit|kbit|bit|gbps|mbps|kbps|bps)", sys.argv[1].lower())
if not m: sys.exit(1)
f = {"gbit": 1e9 / 8, "mbit": 1e6 / 8, "kbit": 1e3 / 8, "bit": 1 / 8, "gbps": 1e9, "mbps": 1e6,
     "kbps": 1e3, "bps": 1}[m.group(2)]
print(int(float(m.group(1)) * f))' "$1"
}
rates="$rate" modes="$mode"
if [ -n "${SWEEP:-}" ]; then
  rates="${RATES:-none 1000mbit 100mbit 20mbit}" modes="${MODES:-demo-bf16 demo-sign adamw}"
fi
for r in $rates; do
  [ "$r" = none ] || rate_bytes "$r" >/dev/null || bad "RATE '$r': tc's units (100mbit) or none"
done
for m in $modes; do
  case "$m" in demo-bf16 | demo-sign | adamw | link | clean) ;; *)
    bad "MODE '$m': demo-bf16, demo-sign, adamw, link or clean" ;;
  esac
done
# link_up RATE DIR: the namespaces, the bridge (counters in DIR/link.json) and tbf at RATE.
link_up() {
  local rate="$1" dir="$2" ns dev addr bytes burst
  ip netns add "$ns_c"
  ip netns add "$ns_w"
  for ns in "$ns_c" "$ns_w"; do
    ip -n "$ns" link set lo up
    # No IPv6: no router solicitations or address detection in the bytes counted.
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 \
      net.ipv6.conf.default.disable_ipv6=1 \
      net.ipv4.tcp_slow_start_after_idle="$slow_start_after_idle" >/dev/null
  done
  # The bridge creates both devices here and they are moved (its descriptors stay attached);
  # they vanish when it exits. Not niced: it is the link, and costs little CPU.
  rm -f "$dir/link.ready"
  "$bin/demod-link-bridge" --tap_a "$tap_c" --tap_b "$tap_w" --delay_ms "$delay_ms" \
    --rate_mbit "$bridge_rate" --stats "$dir/link.json" --report_interval_s 5 \
    --ready_file "$dir/link.ready" \
    >"$dir/link.log" 2>&1 &
  bridge_pid=$!
  for _ in $(seq 100); do
    [ -s "$dir/link.ready" ] && break
    kill -0 "$bridge_pid" 2>/dev/null || { cat "$dir/link.log" >&2; return 1; }
    sleep 0.05
  done
  [ -s "$dir/link.ready" ] || { echo "shaped_link: the bridge did not start" >&2; return 1; }
  ip link set "$tap_c" netns "$ns_c"
  ip link set "$tap_w" netns "$ns_w"
  for ns in "$ns_c:$tap_c:$addr_c" "$ns_w:$tap_w:$addr_w"; do
    IFS=: read -r ns dev addr <<<"$ns"
    ip -n "$ns" addr add "$addr/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
    if [ "$rate" != none ]; then
      bytes=$(rate_bytes "$rate")
      burst="${BURST:-$((bytes / 200 > 4096 ? bytes / 200 : 4096))}"
      tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency "${limit_ms}ms"
    fi
  done
}
# link_down: the run's processes, the bridge (its final counters), the namespaces. Idempotent.
link_down() {
  local pid ns
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  if [ -n "$bridge_pid" ]; then
    kill -TERM "$bridge_pid" 2>/dev/null || true
    wait "$bridge_pid" 2>/dev/null || true
    bridge_pid=""
  fi
  for ns in "$ns_c" "$ns_w"; do
    [ -e "/run/netns/$ns" ] || continue
    # Anything else started in them (a check's python) goes with them.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for dev in "$tap_c" "$tap_w"; do ip link del "$dev" 2>/dev/null || true; done
}
tmp="$(mktemp -d)"
trap 'link_down; rm -rf "$tmp"' EXIT
trap 'echo; echo "shaped_link: interrupted; removing the namespaces" >&2; exit 130' INT TERM

# The link's checks, run inside the namespaces: `ping ADDR COUNT` (ICMP echo round trips),
# `sink ADDR PORT READY_FILE` (takes one TCP connection, prints its goodput) and `source ADDR
# PORT SECONDS` (sends for SECONDS). There is no ping, nc or iperf on the machines we run on.
cat >"$tmp/link_tool.py" <<'PY'
import socket, statistics, struct, sys, time

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

what = sys.argv[1]
if what == "ping":
    addr, count = sys.argv[2], int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(2)
    rtts = []
    for seq in range(count):
        body = b"demod-link" * 4
        unsummed = struct.pack("!BBHHH", 8, 0, 0, 0x4D44, seq) + body
        packet = struct.pack("!BBHHH", 8, 0, checksum(unsummed), 0x4D44, seq) + body
        sent = time.monotonic()
        s.sendto(packet, (addr, 0))
        try:
            while True:
                reply = s.recv(2048)
                ihl = (reply[0] & 15) * 4
                if reply[ihl] == 0 and struct.unpack("!H", reply[ihl + 6:ihl + 8])[0] == seq:
                    rtts.append((time.monotonic() - sent) * 1e3)
                    break
        except socket.timeout:
            pass
        time.sleep(0.05)
    if not rtts:
        sys.exit("ping %s: no reply" % addr)
    print("ping %s: %d/%d replies, rtt min %.1f median %.1f max %.1f ms"
          % (addr, len(rtts), count, min(rtts), statistics.median(rtts), max(rtts)))
elif what == "sink":
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((sys.argv[2], int(sys.argv[3])))
    server.listen(1)
    open(sys.argv[4], "w").close()
    server.settimeout(30)
    conn, _ = server.accept()
    received, first = 0, None
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        if first is None:
            first = time.monotonic()
        received += len(chunk)
    seconds = time.monotonic() - first
    print("%.1f Mbit/s (%d bytes in %.2f s, one TCP stream)"
          % (received * 8 / seconds / 1e6, received, seconds))
elif what == "source":
    conn = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=30)
    chunk = b"\0" * (1 << 16)
    end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end:
        conn.sendall(chunk)
    conn.close()
PY
# tcp_rate FROM_NS TO_NS TO_ADDR: one TCP stream FROM -> TO for 3 s: its goodput.
tcp_rate() {
  local from="$1" to="$2" to_addr="$3" sink
  rm -f "$tmp/listening"
  ip netns exec "$to" "$python" "$tmp/link_tool.py" sink "$to_addr" 5201 "$tmp/listening" \
    >"$tmp/sink.out" 2>&1 &
  sink=$!
  for _ in $(seq 100); do [ -e "$tmp/listening" ] && break; sleep 0.05; done
  ip netns exec "$from" "$python" "$tmp/link_tool.py" source "$to_addr" 5201 3
  wait "$sink" || true
  cat "$tmp/sink.out"
}
# link_check DIR: the link's round trip (20 pings) and TCP rate each way, also in DIR.
link_check() {
  {
    echo "link: rate $rate, delay ${delay_ms} ms each way"
    ip netns exec "$ns_w" "$python" "$tmp/link_tool.py" ping "$addr_c" 20
    echo "workers -> coordinator: $(tcp_rate "$ns_w" "$ns_c" "$addr_c")"
    echo "coordinator -> workers: $(tcp_rate "$ns_c" "$ns_w" "$addr_w")"
  } | tee "$1/link_check.txt"
}

# --- one training run -------------------------------------------------------------------------
# every_worker_at DIR N: every worker's CSV in DIR has reached step N.
every_worker_at() {
  local i step
  for i in $(seq 1 "$workers"); do
    step=$(tail -n 1 "$1/worker-$i.csv" 2>/dev/null | cut -d, -f1)
    [[ "$step" =~ ^[0-9]+$ ]] && [ "$step" -ge "$2" ] || return 1
  done
}
# train MODE RATE: a coordinator in $ns_c on $addr_c, WORKERS workers in $ns_w, the figures
# (status=1 when the run did not train every step to one fingerprint). A lab that cannot be
# built ends the script (set -e).
train() {
  local mode="$1" rate="$2" dir="$out/$1-$2-${delay_ms}ms" optimizer encoding lr started
  case "$mode" in
    demo-bf16) optimizer=demo encoding=bf16 lr="${LR:-1e-3}" ;;
    demo-sign) optimizer=demo encoding=sign lr="${LR:-1e-3}" ;;
    adamw) optimizer=adamw encoding=f32 lr="${LR:-3e-3}" ;;
    link) optimizer="" ;;
    *) bad "MODE must be demo-bf16, demo-sign, adamw or link, got '$mode'" ;;
  esac
  rm -rf "$dir"
  mkdir -p "$dir"
  link_up "$rate" "$dir"
  if [ "$mode" = link ]; then
    link_check "$dir"
    link_down
    return 0
  fi
  ip netns exec "$ns_c" nice -n 10 "$bin/demod-coordinator" --listen "$addr_c:7070" \
    --port_file "$dir/coordinator.port" --metrics "" --run_id "$(basename "$dir")" \
    --min_workers "$workers" --total_steps "$steps" --lr "$lr" --optimizer "$optimizer" \
    --warmup_steps $((steps / 10)) --value_encoding "$encoding" --step_deadline_s "$deadline_s" \
    >"$dir/coordinator.log" 2>&1 &
  local coordinator=$!
  pids=("$coordinator")
  for _ in $(seq 200); do
    [ -s "$dir/coordinator.port" ] || ! kill -0 "$coordinator" 2>/dev/null && break
    sleep 0.05
  done
  if [ ! -s "$dir/coordinator.port" ]; then
    echo "shaped_link: $(basename "$dir"): the coordinator did not start:" >&2
    tail -n 5 "$dir/coordinator.log" >&2
    link_down
    status=1
    return 0
  fi
  # Workers share the machine's cores, as in scripts/run.sh.
  local threads=$(($(nproc) / workers)) i
  [ "$threads" -ge 1 ] || threads=1
  started=$(date +%s.%N)
  for i in $(seq 1 "$workers"); do
    ip netns exec "$ns_w" nice -n 10 "$bin/demod-worker" --coordinator "$addr_c:7070" \
      --name "worker-$i" --device cpu --model gpt --data sotu --data_dir "$data" \
      --batch_size "$batch" --threads "$threads" "${model_flags[@]}" --csv "$dir/worker-$i.csv" \
      --summary_json "$dir/worker-$i.json" --progress=false --reconnect_for 60s \
      >"$dir/worker-$i.log" 2>&1 &
    pids+=($!)
  done
  local deadline=$((SECONDS + timeout_s)) orphaned_at="" snapshot="" alive pid before why
  while true; do
    alive=0
    for pid in "${pids[@]:1}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
    [ "$alive" -eq 0 ] && break
    # Once every worker has trained 3 steps (the joins and their parameter transfers are over),
    # a snapshot of the bridge's counters: what crosses after it is the steady state's bytes.
    if [ -z "$snapshot" ] && every_worker_at "$dir" 3; then
      before="$(cat "$dir/link.json")"
      snapshot=$(date +%s.%N)
      kill -USR1 "$bridge_pid"
      for _ in $(seq 40); do [ "$(cat "$dir/link.json")" != "$before" ] && break; sleep 0.025; done
      cp "$dir/link.json" "$dir/link.start.json"
      echo "$snapshot" >"$dir/link.start.time"
    fi
    # As scripts/run.sh: workers outlive the coordinator only briefly when the run finished.
    if kill -0 "$coordinator" 2>/dev/null; then
      orphaned_at=""
    else
      orphaned_at="${orphaned_at:-$SECONDS}"
    fi
    why=""
    [ -z "$orphaned_at" ] || [ $((SECONDS - orphaned_at)) -lt 20 ] || why="the coordinator exited"
    [ "$SECONDS" -lt "$deadline" ] || why="TIMEOUT_S=$timeout_s passed"
    if [ -n "$why" ]; then
      echo "shaped_link: $(basename "$dir"): stopping the workers ($why)" >&2
      for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
      break
    fi
    sleep 0.2
  done
  local ended
  ended=$(date +%s.%N)
  link_down
  "$python" - "$dir" "$mode" "$rate" "$delay_ms" "$workers" "$steps" "$started" "$ended" \
    "${target:-}" "$out/results.csv" <<'PY' || status=1
import csv, json, math, os, statistics, sys
folder, mode, rate, delay_ms, workers, steps, started, ended, target, results = sys.argv[1:]
workers, steps, started, ended = int(workers), int(steps), float(started), float(ended)
target = float(target) if target else None

def quantile(values, q):
    if not values: return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, int(math.ceil(q * len(values))) - 1)]

rows, summaries = {}, {}
for i in range(1, workers + 1):
    try:
        rows[i] = list(csv.DictReader(open(f"{folder}/worker-{i}.csv")))
    except OSError:
        rows[i] = []
    try:
        summaries[i] = json.load(open(f"{folder}/worker-{i}.json"))
    except (OSError, ValueError):
        summaries[i] = {}
# Step times: steps without a validation (those also evaluate), from the 4th (the first
# include the joins and the warm-up of the allocator and the connection).
timed = [r for rs in rows.values() for r in rs
         if int(r["step"]) > 3 and r["validation_loss"] in ("", "nan")]
step_s = [float(r["step_s"]) for r in timed]
compute_s = [float(r["compute_s"]) for r in timed]
exchange_s = [float(r["step_s"]) - float(r["compute_s"]) for r in timed]
all_rows = [r for rs in rows.values() for r in rs]
mean = lambda key: statistics.mean(float(r[key]) for r in all_rows) if all_rows else math.nan
first = rows.get(1, [])
val = summaries.get(1, {}).get("last_validation_loss")
to_target = None
if target is not None:
    for r in first:
        if r["validation_loss"] not in ("", "nan") and float(r["validation_loss"]) <= target:
            to_target = float(r["wall_s"]) - started
            break
def load(path, parse):
    try:
        return parse(open(path).read())
    except (OSError, ValueError):
        return None

# The bridge's counters (a is the coordinator's device, b the workers'): over the whole run,
# joins included, and from the snapshot once every worker had trained 3 steps to the end, per
# worker-step recorded after it (the steady state).
link = load(f"{folder}/link.json", json.loads) or {}
link_start = load(f"{folder}/link.start.json", json.loads)
snapshot = load(f"{folder}/link.start.time", float)
worker_steps = max(1, len(all_rows))
wire = {}
for way, key in (("up", "b_to_a_bytes"), ("down", "a_to_b_bytes")):
    wire[way + "_all"] = link.get(key, math.nan) / worker_steps
    after = sum(1 for r in all_rows if snapshot is not None and float(r["wall_s"]) > snapshot)
    wire[way] = ((link.get(key, math.nan) - link_start[key]) / after
                 if link_start and after else math.nan)
done_steps = max((int(s.get("last_step", 0)) for s in summaries.values()), default=0)
fingerprints = {s.get("fingerprint") for s in summaries.values()}
finished = sum(1 for s in summaries.values() if s.get("run_finished"))
ok = finished == workers and len(fingerprints) == 1 and None not in fingerprints
f = {
    "mode": mode, "rate": rate, "delay_ms": float(delay_ms), "workers": workers, "steps": steps,
    "steps_done": done_steps,
    "step_median_s": statistics.median(step_s) if step_s else math.nan,
    "step_p90_s": quantile(step_s, 0.9),
    "compute_median_s": statistics.median(compute_s) if compute_s else math.nan,
    "exchange_median_s": statistics.median(exchange_s) if exchange_s else math.nan,
    "wall_s": ended - started,
    "final_val_loss": val if val is not None else math.nan,
    "target_loss": target if target is not None else "",
    "time_to_target_s": to_target if to_target is not None else "",
    "wire_up_B_per_worker_step": wire["up"], "wire_down_B_per_worker_step": wire["down"],
    "wire_up_B_per_worker_step_with_joins": wire["up_all"],
    "wire_down_B_per_worker_step_with_joins": wire["down_all"],
    "wire_up_B": link.get("b_to_a_bytes", ""), "wire_down_B": link.get("a_to_b_bytes", ""),
    "link_dropped_frames":
        link.get("a_to_b_dropped_frames", 0) + link.get("b_to_a_dropped_frames", 0),
    "link_cpu_s": link.get("cpu_s", math.nan),
    "payload_up_B": mean("bytes_up"), "aggregate_down_B": mean("bytes_down"),
    "dense_fp32_B": mean("dense_fp32_bytes"), "contributors_mean": mean("contributors"),
    "finished": finished, "fingerprints": len(fingerprints - {None}), "ok": ok,
}
f = {k: round(v, 4) if isinstance(v, float) else v for k, v in f.items()}
new = not os.path.exists(results)
with open(results, "a", newline="") as out:
    w = csv.DictWriter(out, fieldnames=list(f))
    if new: w.writeheader()
    w.writerow(f)
json.dump(f, open(f"{folder}/figures.json", "w"), indent=1)
kb = lambda b: "%.1f kB" % (b / 1e3)
rtt = "%g ms" % (2 * float(delay_ms))
line = (f"{mode} rate {rate} rtt {rtt}: step median {f['step_median_s']:.3f} s p90 "
        f"{f['step_p90_s']:.3f} s (compute {f['compute_median_s']:.3f}, exchange "
        f"{f['exchange_median_s']:.3f}), wall {f['wall_s']:.0f} s for {done_steps}/{steps} steps, "
        f"val loss {f['final_val_loss']:.4f}")
if target is not None:
    line += f", to {target}: " + (f"{to_target:.1f} s" if to_target is not None else "not reached")
line += (f"; wire per worker-step up {kb(f['wire_up_B_per_worker_step'])} down "
         f"{kb(f['wire_down_B_per_worker_step'])} (with the joins "
         f"{kb(f['wire_up_B_per_worker_step_with_joins'])} / "
         f"{kb(f['wire_down_B_per_worker_step_with_joins'])}), payload "
         f"{kb(f['payload_up_B'])} aggregate "
         f"{kb(f['aggregate_down_B'])}; contributors {f['contributors_mean']:.2f}, "
         f"{finished}/{workers} finished, {f['fingerprints']} fingerprint(s)")
if f["link_dropped_frames"]: line += f", bridge dropped {f['link_dropped_frames']} frames"
print(line)
sys.exit(0 if ok and done_steps == steps else 1)
PY
}

# table: the markdown table of OUT/results.csv, with each DeMo step against the dense step at
# the same rate.
table() {
  "$python" - "$out/results.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
dense = {(r["rate"], r["delay_ms"]): float(r["step_median_s"]) for r in rows
         if r["mode"] == "adamw"}
print("| mode | rate | RTT | step median (s) | p90 (s) | exchange (s) | vs dense step | wall (s) "
      "| val loss | to target (s) | wire up / worker-step | wire down / worker-step |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for r in rows:
    at = (r["rate"], r["delay_ms"])
    ratio = float(r["step_median_s"]) / dense[at] if at in dense else None
    print(f"| {r['mode']} | {r['rate']} | {2 * float(r['delay_ms']):g} ms "
          f"| {float(r['step_median_s']):.3f} | {float(r['step_p90_s']):.3f} "
          f"| {float(r['exchange_median_s']):.3f} | {'-' if ratio is None else '%.3fx' % ratio} "
          f"| {float(r['wall_s']):.0f} | {float(r['final_val_loss']):.4f} "
          f"| {r['time_to_target_s'] or '-'} "
          f"| {float(r['wire_up_B_per_worker_step']) / 1e3:.1f} kB "
          f"| {float(r['wire_down_B_per_worker_step']) / 1e3:.1f} kB |")
PY
}

# clean: a run SIGKILLed has no chance to clean up (its bridge exits with it, and the devices
# with the bridge, but the namespaces and what runs in them stay): remove those of dead PIDs.
if [ "$mode" = clean ]; then
  for ns in $(ip netns list | sed -n 's/^\(demod-[cw]-[0-9][0-9]*\)\( .*\)\{0,1\}$/\1/p'); do
    kill -0 "${ns##*-}" 2>/dev/null && continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" && echo "shaped_link: removed $ns"
  done
  exit 0
fi
mkdir -p "$out"
status=0
if [ -n "${SWEEP:-}" ]; then
  for r in $rates; do
    for m in $modes; do
      train "$m" "$r"
    done
  done
  [ ! -s "$out/results.csv" ] || table | tee "$out/results.md"
else
  train "$mode" "$rate"
fi
echo "shaped_link: results in $out"
exit "$status"
