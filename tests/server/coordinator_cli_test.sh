#!/usr/bin/env bash
# demod-coordinator as a program: exit codes and one-line reasons for bad flags (unknown ones
# and bad values too), --help, the port file,
# a clean exit on SIGTERM, and a refused start on a state directory of another run.
# Usage: coordinator_cli_test.sh <path to demod-coordinator>
set -u
bin="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0

# expect_exit CODE PATTERN ARGS...: runs the coordinator, checks the exit code and that stderr
# holds PATTERN on a single line.
expect_exit() {
  local code="$1" pattern="$2"
  shift 2
  timeout 20 "$bin" --listen 127.0.0.1:0 --metrics "" "$@" >"$work/out" 2>"$work/err"
  local got=$?
  if [[ $got -ne $code ]] || ! grep -q -- "$pattern" "$work/err"; then
    echo "FAIL: $* -> exit $got (want $code), stderr:"; cat "$work/err"; failures=$((failures + 1))
  else
    echo "ok: $* -> exit $got: $(grep -- "$pattern" "$work/err" | head -1)"
  fi
}

# serving PORT_FILE PID: true once the coordinator wrote its --port_file; false if it exited
# or took more than 20 s.
serving() {
  for _ in $(seq 400); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# expect_start NAME ARGS...: the coordinator (run id NAME) starts serving with ARGS; then stops.
expect_start() {
  local name="$1"
  shift
  "$bin" --listen 127.0.0.1:0 --metrics "" --run_id "$name" --port_file "$work/$name.port" "$@" \
    >"$work/$name.log" 2>&1 &
  local pid=$!
  if serving "$work/$name.port" "$pid"; then
    echo "ok: $* starts"
  else
    echo "FAIL: $* did not start:"; cat "$work/$name.log"; failures=$((failures + 1))
  fi
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
}

printf 'optimizer:\n  compression_topk: 0\n' >"$work/bad.yaml"
expect_exit 2 "optimizer.compression_topk must be >= 1" --config "$work/bad.yaml"
printf 'optimiser: {}\n' >"$work/unknown.yaml"
expect_exit 2 "optimiser" --config "$work/unknown.yaml"
expect_exit 2 "cannot open run config file" --config "$work/missing.yaml"
expect_exit 2 "go together" --tls_cert "$work/bad.yaml"
expect_exit 2 "log level" --log_level loud
expect_exit 2 "unexpected argument" extra
expect_exit 2 "unknown flag --no_such_flag (--help lists them)" --no_such_flag=1
expect_exit 2 "unknown flag --lsten" --lsten 127.0.0.1:1
expect_exit 2 "total_steps=many: " --total_steps many
expect_exit 2 "needs a value" --run_id

# --help lists the program's flags (not absl's own) on stdout and exits 0.
timeout 20 "$bin" --help >"$work/help" 2>"$work/help.err"
help_exit=$?
if [ "$help_exit" -eq 0 ] && grep -q -- "--listen" "$work/help" &&
   grep -q -- "--exit_when_finished" "$work/help" && ! grep -q -- "--flagfile" "$work/help"; then
  echo "ok: --help lists the flags and exits 0"
else
  echo "FAIL: --help exited $help_exit:"; head -20 "$work/help" "$work/help.err"
  failures=$((failures + 1))
fi
expect_exit 2 "value encoding\|encoding" --value_encoding f8
expect_exit 2 "must be f32 or bf16 with algorithm adamw, got sign" --optimizer adamw \
  --value_encoding sign
: >"$work/empty-token"
expect_exit 2 "is empty" --token_file "$work/empty-token"
expect_exit 1 "cannot write the port file .*No such file or directory" \
  --port_file "$work/no/such/dir/port"

# Flags win over the file, and the file is judged with them: min_workers 100 needs
# --max_workers above the default 64.
printf 'min_workers: 100\n' >"$work/big.yaml"
expect_exit 2 "max_workers" --config "$work/big.yaml"
expect_start big --config "$work/big.yaml" --max_workers 128

# --optimizer adamw alone starts: the encoding follows the algorithm (bf16, not DeMo's sign).
expect_start dense --optimizer adamw

# The encoding follows the algorithm the flags or the file name, unless one of them names an
# encoding: check_encoding NAME WANT ARGS... starts a run with a state directory and reads the
# encoding its saved configuration holds.
check_encoding() {
  local name="$1" want="$2"
  shift 2
  expect_start "$name" --state_dir "$work/$name.state" "$@" >/dev/null
  if grep -rqs "\"value_encoding\":\"$want\"" "$work/$name.state"; then
    echo "ok: $* -> value_encoding $want"
  else
    echo "FAIL: $* -> not value_encoding $want:"; grep -rhos '"value_encoding":"[a-z0-9-]*"' "$work/$name.state"
    failures=$((failures + 1))
  fi
}
printf 'optimizer: {algorithm: adamw}\n' >"$work/adamw.yaml"
printf 'optimizer: {algorithm: demo, value_encoding: f16}\n' >"$work/demo-f16.yaml"
check_encoding enc-demo sign
check_encoding enc-adamw bf16 --optimizer adamw
check_encoding enc-file bf16 --config "$work/adamw.yaml"
check_encoding enc-flag-over-file sign --config "$work/adamw.yaml" --optimizer demo
check_encoding enc-named f32 --config "$work/adamw.yaml" --value_encoding f32
expect_exit 2 "must be f32 or bf16 with algorithm adamw, got f16" --config "$work/demo-f16.yaml" \
  --optimizer adamw

# A port in use: start on a fixed free port twice.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --listen "127.0.0.1:$port" --metrics "" --run_id cli --port_file "$work/first.port" \
  >"$work/first.log" 2>&1 &
first=$!
serving "$work/first.port" "$first"
check_port=$(cat "$work/first.port" 2>/dev/null)
if [[ "$check_port" != "$port" ]]; then
  echo "FAIL: --port_file holds '$check_port', the coordinator listens on $port"
  failures=$((failures + 1))
else
  echo "ok: --port_file holds the port"
fi
timeout 20 "$bin" --listen "127.0.0.1:$port" --metrics "" >"$work/out" 2>"$work/err"
got=$?
if [[ $got -ne 1 ]] || ! grep -q "cannot listen" "$work/err"; then
  echo "FAIL: port in use -> exit $got"; cat "$work/err"; failures=$((failures + 1))
else
  echo "ok: port in use -> exit 1"
fi

# SIGTERM: a clean exit 0 that says why.
kill -TERM "$first"
wait "$first"
got=$?
if [[ $got -ne 0 ]] || ! grep -q "shutting down" "$work/first.log"; then
  echo "FAIL: SIGTERM -> exit $got"; cat "$work/first.log"; failures=$((failures + 1))
else
  echo "ok: SIGTERM -> exit 0"
fi

# A state directory keeps its run: another run id is refused, the same one resumes.
"$bin" --listen 127.0.0.1:0 --metrics "" --run_id keep --state_dir "$work/state" \
  --port_file "$work/keep.port" >"$work/keep.log" 2>&1 &
keep=$!
serving "$work/keep.port" "$keep"
kill -TERM "$keep"; wait "$keep"
expect_exit 1 "holds run 'keep'" --run_id other --state_dir "$work/state"

if [[ $failures -ne 0 ]]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all passed"
