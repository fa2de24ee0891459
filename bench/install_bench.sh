#!/usr/bin/env bash
# Download + verify + unpack of one large package from nginx on loopback: mota-agent check-once
# against (a) curl -o, openssl dgst, tar -I zstd -x in sequence and (b) the one-pass pipeline
# curl | tee >(openssl dgst) | zstd -d | tar -x, with the stage limits measured in the same run,
# and the cost of an idle poll. Prints markdown tables to stdout, progress to stderr.
# Run it through scripts/bench (builds the binaries); see bench/README.md for what is measured.
#
# Environment:
#   BENCH_BIN_DIR     build directory holding manager/mota, agent/mota-agent and
#                     bench/mota-bench-gen-weights (required; scripts/bench sets it)
#   BENCH_SIZE_MIB    weights size in MiB (default 1024; e.g. 64 for a quick smoke run)
#   BENCH_RUNS        runs per contender, the median is reported (default 3)
#   BENCH_DIR         parent of the work directory (default /tmp); it needs ~4x the size free
#   BENCH_ZSTD_LEVEL  package compression level for `mota init` (default 10, mota's default)
#   BENCH_KEEP=1      keep the work directory (and its nginx logs) instead of deleting it
#   BENCH_STRICT=1    exit 1 when a target is not met (default: report only)
set -euo pipefail

bin="${BENCH_BIN_DIR:?set BENCH_BIN_DIR to a build directory (scripts/bench does)}"
mota="$bin/manager/mota"
agent="$bin/agent/mota-agent"
gen="$bin/bench/mota-bench-gen-weights"
size_mib="${BENCH_SIZE_MIB:-1024}"
runs="${BENCH_RUNS:-3}"
zstd_level="${BENCH_ZSTD_LEVEL:-10}"
nginx_bin=/usr/sbin/nginx
gnu_time=/usr/bin/time

die() { echo "install_bench: $*" >&2; exit 1; }
log() { echo "[bench $(date +%T)] $*" >&2; }

[[ "$size_mib" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB: expected a positive integer, got '$size_mib'"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS: expected a positive integer, got '$runs'"
for x in "$mota" "$agent" "$gen" "$nginx_bin" "$gnu_time"; do
  [ -x "$x" ] || die "$x: not found or not executable"
done
for x in curl openssl zstd tar dd python3; do
  command -v "$x" >/dev/null || die "$x: not installed"
done

work="$(mktemp -d "${BENCH_DIR:-/tmp}/mota-bench.XXXXXX")"
nginx_pid=""
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  if [ -n "$nginx_pid" ]; then
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the repository ------------------------------------------------------------------------------
log "work dir $work; generating a ${size_mib} MiB model (gaussian fp32, seed 42)"
"$gen" "$work/model" "$size_mib" 42
unpacked_bytes=$(find "$work/model" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
"$mota" init "$work/fleet" --zstd-level "$zstd_level" >/dev/null
export MOTA_REPO="$work/fleet"
log "mota release add (zstd level $zstd_level)"
"$mota" release add "$work/model" --version 1.0.0 >/dev/null
"$mota" channel set stable bench-model 1.0.0 >/dev/null
unset MOTA_REPO
pkg_file="$(ls "$work"/fleet/repo/targets/models/bench-model/1.0.0/*.mota)"
pkg_name="$(basename "$pkg_file")"
pkg_sha="${pkg_name%%.*}"
pkg_bytes=$(stat -c %s "$pkg_file")
pkg_mib=$(awk -v b="$pkg_bytes" 'BEGIN {printf "%.1f", b / 1048576}')
unpacked_mib=$(( (unpacked_bytes + 1048575) / 1048576 ))

# --- nginx on a free loopback port, access log with the byte counts ------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ng="$work/nginx"
mkdir -p "$ng"
start_nginx() {
  for _ in 1 2 3; do
    port="$(free_port)"
    {
      # As root, workers would switch to "nobody", who cannot read the 0700 work dir.
      [ "$(id -u)" = 0 ] && echo "user root root;"
      echo "daemon off; master_process off; worker_processes 1;"
      echo "pid $ng/nginx.pid; error_log $ng/error.log info;"
      echo "events { worker_connections 128; }"
      echo "http {"
      echo "  log_format bench '\$request_method \$uri \$status \$body_bytes_sent \$request_length \$bytes_sent';"
      echo "  access_log $ng/access.log bench;"
      for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $ng/${t}_temp;"; done
      echo "  types { application/json json; } default_type application/octet-stream;"
      echo "  sendfile on;"
      echo "  server {"
      echo "    listen 127.0.0.1:$port; root $work/fleet/repo;"
      echo "    location / { }"
      # Stands in for the fleet server: acknowledges every report batch (2xx, empty body), so
      # the agent's outbox is delivered once instead of piling up and being re-sent each poll.
      # Proxied to itself because a bare `return` discards the request body unread, and then
      # $request_length would not count it.
      echo "    location /v1/ { proxy_pass http://127.0.0.1:$port/ack/; }"
      echo "    location /ack/ { access_log off; return 204; }"
      echo "  }"
      echo "}"
    } >"$ng/nginx.conf"
    "$nginx_bin" -p "$ng/" -c "$ng/nginx.conf" -e "$ng/error.log" >"$ng/nginx.out" 2>&1 &
    nginx_pid=$!
    for _ in $(seq 100); do
      if curl -fs -o /dev/null "http://127.0.0.1:$port/metadata/timestamp.json"; then return 0; fi
      kill -0 "$nginx_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    nginx_pid=""
  done
  cat "$ng/error.log" "$ng/nginx.out" >&2 || true
  die "nginx did not start"
}
start_nginx
base="http://127.0.0.1:$port"
url="$base/targets/models/bench-model/1.0.0/$pkg_name"
log "nginx pid $nginx_pid serving $work/fleet/repo at $base; package $pkg_mib MiB, unpacked $unpacked_mib MiB"
curl -fs -o /dev/null "$url"  # the package is in the page cache anyway; make sure it is served

# --- measurement helpers -------------------------------------------------------------------------
res="$work/results"
mkdir -p "$res"
now_ns() { date +%s%N; }
# timed FILE CMD...: runs CMD under GNU time; sets T_NS (wall, ns), T_RSS (peak RSS, KiB) and
# T_CPU (user + sys, s). GNU time's %M is the largest single process of what it waited for.
timed() {
  local f="$1"; shift
  local t0 t1
  t0=$(now_ns)
  "$gnu_time" -f '%M %U %S' -o "$f" "$@"
  t1=$(now_ns)
  T_NS=$((t1 - t0))
  read -r T_RSS usr sys < <(tail -n 1 "$f")
  T_CPU=$(awk -v u="$usr" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
}
# Starts every measurement from the same point: previous outputs deleted, dirty pages written.
settle() { rm -rf "$@"; sync; }
sync_dir() {  # sync_dir DIR: times `sync -f DIR` (syncfs of DIR's filesystem) into S_NS
  local t0
  t0=$(now_ns)
  sync -f "$1"
  S_NS=$(($(now_ns) - t0))
}
# record NAME FIELDS...: one line per run: wall_ns rss_kib sync_ns rss_sum_kib cpu_s extra
record() { local n="$1"; shift; echo "$*" >>"$res/$n"; }
check_tree() {  # check_tree DIR WHO: the unpacked weights are all there
  local got
  got=$(stat -c %s "$1/model.onnx" 2>/dev/null || echo missing)
  [ "$got" = "$((size_mib * 1048576))" ] || die "$2: $1/model.onnx is $got bytes"
}
check_sum() {  # check_sum FILE WHO: openssl's digest equals the signed one
  local got
  got=$(cut -d' ' -f1 <"$1")
  [ "$got" = "$pkg_sha" ] || die "$2: sha256 $got, expected $pkg_sha"
}
requests_since() {  # requests_since LINE: access log lines after LINE (nginx logs on completion)
  sleep 0.3
  tail -n +"$(($1 + 1))" "$ng/access.log"
}

# (b) as a script: each stage under its own GNU time (for the sum of the peak RSS); the
# process substitution is opened by this shell so that it can be waited for.
cat >"$work/pipeline.sh" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
url="$1" dir="$2" t="$3" tm=/usr/bin/time
exec 3> >("$tm" -f %M -o "$t.openssl" openssl dgst -sha256 -r >"$t.sum")
sum_pid=$!
"$tm" -f %M -o "$t.curl" curl -fs "$url" \
  | "$tm" -f %M -o "$t.tee" tee /dev/fd/3 \
  | "$tm" -f %M -o "$t.zstd" zstd -d -q \
  | "$tm" -f %M -o "$t.tar" tar -x -C "$dir"
exec 3>&-
wait "$sum_pid"
EOF
chmod +x "$work/pipeline.sh"

write_agent_config() {  # write_agent_config FILE STATE_DIR
  cat >"$1" <<EOF
server_url = "$base"
state_dir = "$2"
update_lock = "$2/update.lock"
trusted_root = "$work/fleet/repo/metadata/1.root.json"
device_id = "bench-device"
log_level = "warn"
[health]
# The benchmark measures download + verify + unpack; no mota-runtime runs here.
enabled = false
[[model]]
name = "bench-model"
channel = "stable"
EOF
}

# --- the runs: contenders interleaved so that drift (writeback, thermal) hits all alike ---------
for run in $(seq "$runs"); do
  # mota: a fresh device each time.
  state="$work/mota-state"
  settle "$state" "$work/mota-state.toml"
  write_agent_config "$work/mota-state.toml" "$state"
  before=$(wc -l <"$ng/access.log")
  log "run $run/$runs: mota-agent check-once"
  timed "$work/t.mota" "$agent" --config "$work/mota-state.toml" check-once \
    >"$work/mota.out" 2>"$work/mota.err" \
    || { cat "$work/mota.out" "$work/mota.err" >&2; die "mota-agent check-once failed"; }
  wall=$T_NS rss=$T_RSS cpu=$T_CPU
  sync_dir "$state"
  grep -q "installed 1.0.0" "$work/mota.out" || { cat "$work/mota.out" >&2; die "mota: no install"; }
  check_tree "$state/models/bench-model/current" mota
  nreq=$(requests_since "$before" | wc -l)
  record mota "$((wall + S_NS)) $rss $S_NS $rss $cpu $nreq"

  # (a) three commands in sequence; the digest is checked before unpacking.
  settle "$work/a"
  mkdir -p "$work/a/out"
  log "run $run/$runs: (a) curl -o; openssl dgst; tar -I zstd -x"
  timed "$work/t.a1" curl -fs -o "$work/a/pkg" "$url"
  w1=$T_NS r1=$T_RSS c1=$T_CPU
  # shellcheck disable=SC2016  # $1 and $2 are sh's
  timed "$work/t.a2" sh -c 'exec openssl dgst -sha256 -r "$1" >"$2"' sh "$work/a/pkg" "$work/a/sum"
  w2=$T_NS r2=$T_RSS c2=$T_CPU
  check_sum "$work/a/sum" "(a)"
  timed "$work/t.a3" tar -I zstd -xf "$work/a/pkg" -C "$work/a/out"
  w3=$T_NS r3=$T_RSS c3=$T_CPU
  sync_dir "$work/a/out"
  check_tree "$work/a/out" "(a)"
  rmax=$(printf '%s\n' "$r1" "$r2" "$r3" | sort -n | tail -1)
  record a "$((w1 + w2 + w3 + S_NS)) $rmax $S_NS $rmax $(awk -v a="$c1" -v b="$c2" -v c="$c3" \
    'BEGIN {printf "%.2f", a + b + c}') $w1,$w2,$w3"

  # (b) the one-pass pipeline.
  settle "$work/b"
  mkdir -p "$work/b/out"
  log "run $run/$runs: (b) curl | tee >(openssl dgst) | zstd -d | tar -x"
  timed "$work/t.b" "$work/pipeline.sh" "$url" "$work/b/out" "$work/b/t"
  wall=$T_NS rss=$T_RSS cpu=$T_CPU
  sync_dir "$work/b/out"
  check_sum "$work/b/t.sum" "(b)"
  check_tree "$work/b/out" "(b)"
  rsum=$(for s in curl tee openssl zstd tar; do tail -n 1 "$work/b/t.$s"; done | awk '{s += $1} END {print s}')
  record b "$((wall + S_NS)) $rss $S_NS $rsum $cpu"

  # Stage limits, in the same run.
  settle "$work/disk"
  log "run $run/$runs: stage limits"
  timed "$work/t.net" curl -fs -o /dev/null "$url"
  record net "$T_NS $T_RSS 0 $T_RSS $T_CPU"
  timed "$work/t.sha" openssl dgst -sha256 -r "$pkg_file" >/dev/null
  record sha "$T_NS $T_RSS 0 $T_RSS $T_CPU"
  timed "$work/t.dec" zstd -d -q -c "$pkg_file" >/dev/null
  record dec "$T_NS $T_RSS 0 $T_RSS $T_CPU"
  mkdir -p "$work/disk"
  timed "$work/t.disk" dd if=/dev/zero of="$work/disk/x" bs=1M count="$unpacked_mib" conv=fsync \
    status=none
  record disk "$T_NS $T_RSS 0 $T_RSS $T_CPU"
done
settle "$work/a" "$work/b" "$work/disk"

# --- idle poll: the device from the last mota run, nothing new published ------------------------
log "idle poll"
before=$(wc -l <"$ng/access.log")
timed "$work/t.idle" "$agent" --config "$work/mota-state.toml" check-once \
  >"$work/idle.out" 2>"$work/idle.err" \
  || { cat "$work/idle.out" "$work/idle.err" >&2; die "idle check-once failed"; }
idle_wall=$T_NS idle_rss=$T_RSS
grep -q "up to date 1.0.0" "$work/idle.out" || { cat "$work/idle.out" >&2; die "idle poll: not up to date"; }
requests_since "$before" >"$work/idle.log"

# --- report --------------------------------------------------------------------------------------
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
col() { awk -v c="$2" '{print $c}' "$res/$1"; }
med_s() { col "$1" "$2" | median | awk '{printf "%.2f", $1 / 1e9}'; }   # median of an ns column
med() { col "$1" "$2" | median; }
max_mib() { col "$1" "$2" | sort -g | tail -1 | awk '{printf "%.1f", $1 / 1024}'; }
rate() { awk -v s="$1" -v m="$2" 'BEGIN {printf (s > 0) ? "%.0f" : "-", m / s}'; }

m_wall=$(med_s mota 1) a_wall=$(med_s a 1) b_wall=$(med_s b 1)
declare -A stage_wall stage_name
stage_name=([net]="network: curl -o /dev/null" [sha]="hash: openssl dgst -sha256"
  [dec]="decode: zstd -d -c > /dev/null" [disk]="disk write: dd conv=fsync ${unpacked_mib} MiB")
for s in net sha dec disk; do stage_wall[$s]=$(med_s "$s" 1); done
slowest=dec
for s in net sha disk; do
  awk -v x="${stage_wall[$s]}" -v y="${stage_wall[$slowest]}" 'BEGIN {exit !(x > y)}' && slowest=$s
done
a_parts=$(awk -F'[ ,]' '{print $6, $7, $8}' "$res/a" | awk '{c += $1; o += $2; t += $3} END {printf "curl %.2f + openssl %.2f + tar %.2f", c / NR / 1e9, o / NR / 1e9, t / NR / 1e9}')

echo "## Download + verify + unpack, ${pkg_mib} MiB package (${unpacked_mib} MiB unpacked), nginx on loopback"
echo
echo "$(date -u +%F), $(nproc) cores $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
  "$(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r), $(df -PT "$work" | awk 'NR == 2 {print $2 " on " $1}'),"\
  "mota $(git -C "$(dirname "$0")/.." describe --always --dirty 2>/dev/null || echo unknown); $runs runs each (median wall, max peak RSS);"\
  "page cache warm (nginx serves from memory); zstd level $zstd_level."
echo
echo "| contender | wall s (median) | MiB/s | peak RSS MiB | notes |"
echo "|---|---:|---:|---:|---|"
echo "| mota-agent check-once | $m_wall | $(rate "$m_wall" "$pkg_mib") | $(max_mib mota 2) |"\
  "incl. final sync -f $(med_s mota 3) s (output already fsynced); CPU $(med mota 5) s; $(med mota 6) HTTP requests (fresh device: metadata, channel, package, report) |"
echo "| (a) curl -o; openssl dgst; tar -I zstd -x | $a_wall | $(rate "$a_wall" "$pkg_mib") | $(max_mib a 2) |"\
  "sequential, so peak = largest command; mean $a_parts s + sync -f $(med_s a 3) s; CPU $(med a 5) s |"
echo "| (b) curl \\| tee >(openssl dgst) \\| zstd -d \\| tar -x | $b_wall | $(rate "$b_wall" "$pkg_mib") | $(max_mib b 2) |"\
  "largest process; sum over its 5 processes $(max_mib b 4) MiB; incl. sync -f $(med_s b 3) s; CPU $(med b 5) s |"
echo
echo "Stage limits (same run; MiB/s of package bytes, so the seconds compare directly):"
echo
echo "| stage | wall s (median) | MiB/s | peak RSS MiB | notes |"
echo "|---|---:|---:|---:|---|"
for s in net sha dec disk; do
  note=""
  [ "$s" = "$slowest" ] && note="slowest stage"
  echo "| ${stage_name[$s]} | ${stage_wall[$s]} | $(rate "${stage_wall[$s]}" "$pkg_mib") | $(max_mib "$s" 2) | $note |"
done
echo
idle_n=$(wc -l <"$work/idle.log")
read -r idle_body idle_req idle_sent idle_maxbody < <(awk '{b += $4; r += $5; s += $6; if ($4 > m) m = $4} END {print b + 0, r + 0, s + 0, m + 0}' "$work/idle.log")
echo "Idle poll (check-once again, nothing new published), from nginx's access log for that run only:"
echo
echo "| requests | response body bytes | request bytes | body + request | incl. response headers | wall s | peak RSS MiB |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
echo "| $idle_n | $idle_body | $idle_req | $((idle_body + idle_req)) | $((idle_sent + idle_req)) |"\
  "$(awk -v n="$idle_wall" 'BEGIN {printf "%.2f", n / 1e9}') | $(awk -v k="$idle_rss" 'BEGIN {printf "%.1f", k / 1024}') |"
echo
awk '{printf "- `%s %s` -> %s, body %s B, request %s B\n", $1, $2, $3, $4, $5}' "$work/idle.log"
echo

# --- targets -------------------------------------------------------------------------------------
ok=1
verdict() {  # verdict CONDITION_AWK_EXPR TEXT
  if awk "BEGIN {exit !($1)}"; then echo "- met: $2"; else echo "- NOT met: $2"; ok=0; fi
}
limit="${stage_wall[$slowest]}"
echo "Targets:"
echo
verdict "$m_wall <= $b_wall" "mota $m_wall s <= (b) $b_wall s"
verdict "$m_wall <= 1.1 * $limit" "mota $m_wall s <= 1.1 x slowest stage (${stage_name[$slowest]%%:*}, $limit s) = $(awk -v l="$limit" 'BEGIN {printf "%.2f", 1.1 * l}') s"
verdict "$(max_mib mota 2) < 32" "mota peak RSS $(max_mib mota 2) MiB < 32 MiB"
verdict "$idle_n <= 2 && $idle_maxbody < 4096" "idle poll $idle_n requests <= 2, each response body < 4 KiB (largest $idle_maxbody B)"
echo
if [ "$ok" != 1 ] && [ "${BENCH_STRICT:-0}" = 1 ]; then exit 1; fi
exit 0
