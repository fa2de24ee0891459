#!/usr/bin/env bash
# Delta benchmark: for generated weight pairs and the real ONNX models, the size and time of a
# full `zstd -19`, `zstd --patch-from` (-19 --long), `xdelta3 -9`, `bsdiff` (within a time
# bound) and mota's delta (size, create time, apply time, apply throughput and peak RSS), all in
# this one script from Debian's packages. Prints a markdown table on stdout, progress on stderr.
# Run it through scripts/bench-delta (builds the binaries); see delta/README.md.
#
# Environment:
#   BENCH_BIN_DIR         build directory with manager/mota and bench/mota-bench-delta-gen
#   BENCH_DELTA_MIB       size of the generated pairs in MiB (default 128; 0 skips them)
#   BENCH_DELTA_BIG_MIB   size of the big fp16 pair (default 1024; 0 skips it)
#   BENCH_BSDIFF_TIMEOUT  seconds bsdiff may take per pair (default 300); "-" in the table if not
#   BENCH_PEERS           peer tools to run (default "zstd patch-from xdelta3 bsdiff"); the others
#                         show "not run" (the 1 GiB pair takes an hour of peers on 2 busy cores)
#   BENCH_TMPFS           directory on tmpfs for the second apply (default /dev/shm; "" skips it)
#   BENCH_REAL=0          skip the real ONNX pairs
#   BENCH_DIR             parent of the work directory (default /tmp)
#   BENCH_KEEP=1          keep the work directory
set -euo pipefail

bin="${BENCH_BIN_DIR:?set BENCH_BIN_DIR to a build directory (scripts/bench-delta does)}"
mota="$bin/manager/mota"
gen="$bin/bench/mota-bench-delta-gen"
mib="${BENCH_DELTA_MIB:-128}"
big_mib="${BENCH_DELTA_BIG_MIB:-1024}"
bsdiff_timeout="${BENCH_BSDIFF_TIMEOUT:-300}"
peers=" ${BENCH_PEERS-zstd patch-from xdelta3 bsdiff} "
tmpfs="${BENCH_TMPFS-/dev/shm}"
[ -n "$tmpfs" ] && [ ! -d "$tmpfs" ] && tmpfs=""
models="$(cd "$(dirname "$0")/.." && pwd)/../shared/models/ultraface"
gnu_time=/usr/bin/time

die() { echo "bench/delta: $*" >&2; exit 1; }
log() { echo "[bench-delta $(date +%T)] $*" >&2; }
[[ "$mib" =~ ^[0-9]+$ ]] || die "BENCH_DELTA_MIB: expected an integer"
[[ "$big_mib" =~ ^[0-9]+$ ]] || die "BENCH_DELTA_BIG_MIB: expected an integer"
for x in "$mota" "$gen" "$gnu_time"; do [ -x "$x" ] || die "$x: not found"; done
for x in zstd xdelta3 bsdiff bspatch timeout; do command -v "$x" >/dev/null || die "$x: not installed"; done

work="$(mktemp -d "${BENCH_DIR:-/tmp}/mota-bench-delta.XXXXXX")"
[ "${BENCH_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

# secs CMD...: runs CMD, prints its wall time in seconds (2 decimals); output discarded.
secs() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || return 1
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}'
}
size() { stat -c %s "$1"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
mib_of() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1048576 }'; }

echo "| pair | new MiB | zstd -19 | patch-from -19 --long | xdelta3 -9 | bsdiff | mota delta | mota/zstd | create s | apply s (CPU s) | apply MB/s | apply MB/s tmpfs | apply RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"

runs() { [[ "$peers" == *" $1 "* ]]; }

# row NAME OLD NEW: one line of the table. Sizes as bytes (time in s).
row() {
  local name="$1" old="$2" new="$3" n="$work/n" t
  local nsize; nsize=$(size "$new")
  local zcell="not run" z=""
  if runs zstd; then
    log "$name: zstd -19"
    t=$(secs zstd -q -19 -T2 -f "$new" -o "$n.zst"); z=$(size "$n.zst")
    zcell="$z ($t s)"
  fi
  local pcell="not run"
  if runs patch-from; then
    log "$name: zstd --patch-from"
    t=$(secs zstd -q -19 --long=31 -T2 -f --patch-from="$old" "$new" -o "$n.pf") || true
    pcell="-"; [ -f "$n.pf" ] && pcell="$(size "$n.pf") ($t s)"
  fi
  local xcell="not run"
  if runs xdelta3; then
    log "$name: xdelta3 -9"
    local srcwin=$(( $(size "$old") > 8388608 ? $(size "$old") : 8388608 ))
    [ "$srcwin" -gt 2147483648 ] && srcwin=2147483648
    t=$(secs xdelta3 -9 -e -f -B "$srcwin" -s "$old" "$new" "$n.xd") || true
    xcell="-"; [ -f "$n.xd" ] && xcell="$(size "$n.xd") ($t s)"
  fi
  local bcell="not run"
  if runs bsdiff; then
    log "$name: bsdiff (timeout ${bsdiff_timeout}s)"
    bcell="- (>${bsdiff_timeout} s)"
    if t=$(secs timeout "$bsdiff_timeout" bsdiff "$old" "$new" "$n.bs"); then
      bcell="$(size "$n.bs") ($t s)"
    else
      rm -f "$n.bs"  # a killed bsdiff leaves a partial patch
    fi
  fi
  log "$name: mota delta diff"
  local ct; ct=$(secs "$mota" delta diff "$old" "$new" "$n.md") || die "$name: mota delta diff failed"
  local m; m=$(size "$n.md")
  # Apply as a device does (to disk, fsync before the rename), then to tmpfs (the engine alone:
  # the disk's write speed is not in it).
  log "$name: mota delta apply"
  rm -f "$n.out"
  "$gnu_time" -f "%e %M %U %S" -o "$work/time" "$mota" delta apply "$old" "$n.md" "$n.out" >/dev/null \
    || die "$name: mota delta apply failed"
  cmp -s "$n.out" "$new" || die "$name: applied result differs from the new file"
  rm -f "$n.out"
  local at rss us sy; read -r at rss us sy < "$work/time"
  local cpu; cpu=$(awk -v u="$us" -v s="$sy" 'BEGIN { printf "%.2f", u + s }')
  local speed; speed=$(awk -v n="$nsize" -v t="$at" 'BEGIN { printf "%.0f", (t > 0 ? n / t / 1e6 : 0) }')
  local tspeed="-"
  if [ -n "$tmpfs" ]; then
    local tout="$tmpfs/mota-bench-delta.$$.out"
    "$gnu_time" -f "%e %M %U %S" -o "$work/time2" "$mota" delta apply "$old" "$n.md" "$tout" >/dev/null \
      || { rm -f "$tout"; die "$name: mota delta apply (tmpfs) failed"; }
    cmp -s "$tout" "$new" || { rm -f "$tout"; die "$name: applied result (tmpfs) differs"; }
    rm -f "$tout"
    local at2 rss2 rest; read -r at2 rss2 rest < "$work/time2"
    tspeed=$(awk -v n="$nsize" -v t="$at2" 'BEGIN { printf "%.0f", (t > 0 ? n / t / 1e6 : 0) }')
    [ "$rss2" -gt "$rss" ] && rss="$rss2"
  fi
  local best="$z"
  for c in "$n.pf" "$n.xd" "$n.bs"; do
    [ -f "$c" ] && { [ -z "$best" ] || [ "$(size "$c")" -lt "$best" ]; } && best=$(size "$c")
  done
  local mark=""; [ -z "$best" ] || [ "$m" -le "$best" ] || mark=" (not smallest)"
  local ratio="-"; [ -n "$z" ] && ratio=$(pct "$m" "$z")
  echo "| $name | $(mib_of "$nsize") | $zcell | $pcell | $xcell | $bcell | **$m**$mark | $ratio | $ct | $at ($cpu) | $speed | $tspeed | $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') |"
  rm -f "$n".*
}

pair() {  # pair KIND DTYPE MIB
  "$gen" "$1" "$2" "$3" "$work/old.st" "$work/new.st" || die "generator failed"
  row "$1 $2 ${3} MiB" "$work/old.st" "$work/new.st"
  rm -f "$work/old.st" "$work/new.st"
}

if [ "$mib" -gt 0 ]; then
  pair full-finetune F32 "$mib"
  pair full-finetune F16 "$mib"
  pair partial-finetune F32 "$mib"
  pair requantised I8 "$mib"
fi
[ "$big_mib" -gt 0 ] && pair full-finetune F16 "$big_mib"
if [ "${BENCH_REAL:-1}" = 0 ]; then
  :
elif [ -f "$models/version-slim-320.onnx" ]; then
  row "ultraface slim-320 -> RFB-320 (onnx)" "$models/version-slim-320.onnx" "$models/version-RFB-320.onnx"
  row "ultraface RFB-320 -> slim-320 (onnx)" "$models/version-RFB-320.onnx" "$models/version-slim-320.onnx"
else
  log "no ../shared/models/ultraface: real pairs skipped"
fi
