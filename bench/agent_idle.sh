#!/usr/bin/env bash
# The idle footprint of the mota-agent daemon: `mota-agent run` with a model installed and nothing
# new published, polling `mota serve` on loopback. After the first poll has settled, it samples the
# daemon over a window (2 minutes by default): resident memory (RSS, and PSS/USS from
# /proc/PID/smaps_rollup, because most of the RSS is shared library pages), threads, the CPU time
# and the requests in the window. Then it publishes an update (64 MiB of weights by default), waits
# until the daemon has installed it and polled once more, and samples the RSS again: what an
# install leaves resident. Also the floor: the peak RSS of `mota-agent --version`, which loads the
# same shared libraries and does nothing else. Each agent gets its own repository and server.
# Prints a markdown table on stdout, progress on stderr. Run it through scripts/bench-agent-idle
# (builds the binaries); see bench/README.md.
#
# Environment:
#   BENCH_BIN_DIR        build directory holding manager/mota and agent/mota-agent (required)
#   BENCH_AGENTS         "label=/path/to/mota-agent ..." to compare builds (default: this build's)
#   BENCH_IDLE_SECONDS   the window (default 120)
#   BENCH_POLL_INTERVAL  the daemon's poll_interval in seconds (default 30: polls in the window)
#   BENCH_UPDATE_MIB     weights of the update installed after the window (default 64; 0: none)
#   BENCH_DIR            parent of the work directory (default /tmp)
#   BENCH_KEEP=1         keep the work directory
set -euo pipefail

bin="${BENCH_BIN_DIR:?set BENCH_BIN_DIR to a build directory (scripts/bench-agent-idle does)}"
mota="$bin/manager/mota"
agents="${BENCH_AGENTS:-this=$bin/agent/mota-agent}"
window="${BENCH_IDLE_SECONDS:-120}"
poll="${BENCH_POLL_INTERVAL:-30}"
update_mib="${BENCH_UPDATE_MIB:-64}"
gnu_time=/usr/bin/time

die() { echo "agent_idle: $*" >&2; exit 1; }
log() { echo "[bench $(date +%T)] $*" >&2; }

[[ "$window" =~ ^[1-9][0-9]*$ ]] || die "BENCH_IDLE_SECONDS: expected a positive integer"
[[ "$poll" =~ ^[1-9][0-9]*$ ]] || die "BENCH_POLL_INTERVAL: expected a positive integer (seconds)"
[[ "$update_mib" =~ ^[0-9]+$ ]] || die "BENCH_UPDATE_MIB: expected an integer"
for x in "$mota" "$gnu_time"; do [ -x "$x" ] || die "$x: not found or not executable"; done
command -v python3 >/dev/null || die "python3: not installed"

work="$(mktemp -d "${BENCH_DIR:-/tmp}/mota-bench-idle.XXXXXX")"
pids=()
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kib_of() { awk -v key="$1:" '$1 == key {print $2}' "$2"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"

# model DIR MIB: a model directory with MIB MiB of random weights (framework "other").
model() {
  mkdir -p "$1"
  head -c $(($2 << 20)) /dev/urandom >"$1/model.onnx"
  cat >"$1/model.json" <<'EOF'
{"name": "detector", "framework": "other", "entry": "model.onnx",
 "inputs": [{"name": "input", "shape": [1], "dtype": "float32"}],
 "outputs": [{"name": "output", "shape": [1], "dtype": "float32"}]}
EOF
}

echo "| agent | idle RSS MiB | PSS MiB | private (USS) MiB | anon MiB | threads | CPU s in ${window} s | requests in ${window} s | idle RSS after a ${update_mib} MiB update (anon) MiB | \`--version\` RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
n=0
for entry in $agents; do
  label="${entry%%=*}" agent="${entry#*=}"
  [ -x "$agent" ] || die "$agent: not found or not executable"
  n=$((n + 1))
  dir="$work/$n"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  log "$label: repository with a 1 MiB model, mota serve on 127.0.0.1:$port"
  "$mota" init "$dir/repo" >/dev/null
  model "$dir/model-1" 1
  "$mota" --repo "$dir/repo" release add "$dir/model-1" --version 1.0.0 >/dev/null
  "$mota" --repo "$dir/repo" channel set stable detector 1.0.0 >/dev/null
  "$mota" --repo "$dir/repo" serve --listen "127.0.0.1:$port" >"$dir/serve.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
  done
  cat >"$dir/agent.toml" <<EOF
server_url = "http://127.0.0.1:$port"
state_dir = "$dir/state"
update_lock = "$dir/state/update.lock"
trusted_root = "$dir/repo/repo/metadata/1.root.json"
device_id = "bench-idle-$n"
poll_interval = "${poll}s"
poll_jitter = 0
log_level = "warn"
[health]
enabled = false
[[model]]
name = "detector"
channel = "stable"
EOF
  "$agent" --config "$dir/agent.toml" check-once >/dev/null
  floor_kib="$("$gnu_time" -f %M "$agent" --version 2>&1 >/dev/null | tail -1)"
  "$agent" --config "$dir/agent.toml" run >"$dir/agent.log" 2>&1 &
  pid="$!"
  pids+=("$pid")
  sleep 5  # the daemon's first poll (start-up, reconcile) settles
  before_ticks="$(ticks "$pid")"
  before_requests="$(grep -c 'METHOD=' "$dir/serve.log" || true)"
  log "$label: sampling pid $pid for ${window} s (poll_interval ${poll}s)"
  sleep "$window"
  after_ticks="$(ticks "$pid")"
  after_requests="$(grep -c 'METHOD=' "$dir/serve.log" || true)"
  cp "/proc/$pid/status" "$dir/status"
  cp "/proc/$pid/smaps_rollup" "$dir/smaps_rollup"
  after_update="-"
  if [ "$update_mib" -gt 0 ]; then
    log "$label: publishing 2.0.0 (${update_mib} MiB) and waiting for the daemon to install it"
    model "$dir/model-2" "$update_mib"
    "$mota" --repo "$dir/repo" release add "$dir/model-2" --version 2.0.0 --deltas 0 >/dev/null
    "$mota" --repo "$dir/repo" channel set stable detector 2.0.0 >/dev/null
    for _ in $(seq $((poll * 4 + 120))); do
      [ "$(readlink "$dir/state/models/detector/current")" = b ] && break
      sleep 1
    done
    [ "$(readlink "$dir/state/models/detector/current")" = b ] || die "$label: 2.0.0 not installed"
    sleep $((poll + 3))  # one idle poll after the install
    after_update="$(awk -v rss="$(kib_of VmRSS "/proc/$pid/status")" \
      -v anon="$(kib_of RssAnon "/proc/$pid/status")" \
      'BEGIN { printf "%.1f (%.1f)", rss / 1024, anon / 1024 }')"
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rss="$(kib_of VmRSS "$dir/status")"
  anon="$(kib_of RssAnon "$dir/status")"
  threads="$(kib_of Threads "$dir/status")"
  pss="$(kib_of Pss "$dir/smaps_rollup")"
  uss=$(($(kib_of Private_Clean "$dir/smaps_rollup") + $(kib_of Private_Dirty "$dir/smaps_rollup")))
  awk -v l="$label" -v rss="$rss" -v pss="$pss" -v uss="$uss" -v anon="$anon" -v th="$threads" \
    -v cpu="$((after_ticks - before_ticks))" -v hz="$hz" -v req="$((after_requests - before_requests))" \
    -v upd="$after_update" -v fl="$floor_kib" \
    'BEGIN { printf "| %s | %.1f | %.1f | %.1f | %.1f | %d | %.2f | %d | %s | %.1f |\n",
             l, rss / 1024, pss / 1024, uss / 1024, anon / 1024, th, cpu / hz, req, upd,
             fl / 1024 }'
done
