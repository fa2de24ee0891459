#!/usr/bin/env bash
# Packaging test (issue 7): builds the .debs, checks them with lintian, installs them on THIS
# machine, checks what they installed, runs the installed binaries the way the units do, then
# purges both packages and checks that nothing is left but what packaging/README.md says purge
# keeps. Needs root on Debian 12 and changes the system while it runs: CI (.ci/run) or a
# throwaway machine only. It refuses to run when mota packages are already installed.
#
#   tests/packaging/test.sh            # builds with scripts/package into build-pkgtest/
#   MOTA_PKG_DEBS=DIR tests/packaging/test.sh   # tests the .debs already in DIR
#
# The journald check needs a private mount namespace (unshare -m); without CAP_SYS_ADMIN it is
# skipped with a message, everything else still runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export DEBIAN_FRONTEND=noninteractive
started=$(date +%s)

fail() {
  echo "tests/packaging: FAIL: $*" >&2
  exit 1
}
step() { echo "== packaging: $*"; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages)"
for p in mota-agent mota-manager; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
    fail "$p is already installed: this test would purge it; remove it first"
  fi
done

work=$root/build-pkgtest
tmp=$(mktemp -d /tmp/mota-pkgtest.XXXXXX)
had_user_mota=0
getent passwd mota >/dev/null && had_user_mota=1
had_user_server=0
getent passwd mota-server >/dev/null && had_user_server=1

created_server_dir=0
cleanup() {
  local rc=$?
  # Leave the machine as we found it, also after a failure.
  [ "$created_server_dir" = 0 ] || rm -rf /var/lib/mota-server
  apt-get purge -y -qq mota-agent mota-manager >/dev/null 2>&1 || true
  [ "$had_user_mota" = 1 ] || userdel mota >/dev/null 2>&1 || true
  [ "$had_user_server" = 1 ] || userdel mota-server >/dev/null 2>&1 || true
  rm -rf "$tmp"
  [ -n "${MOTA_PKG_DEBS:-}" ] || rm -rf "$work"
  echo "== packaging: $([ $rc = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s"
  exit $rc
}
trap cleanup EXIT

# Paths the packages may touch, listed before and after, so the purge check is a real diff.
snapshot() {
  find /usr /etc /lib/systemd /var/lib -xdev \
    -path /var/lib/dpkg -prune -o -path /var/lib/apt -prune -o -path /var/lib/ucf -prune -o \
    -path /etc/ld.so.cache -prune -o -print 2>/dev/null | LC_ALL=C sort
}
snapshot >"$tmp/before"

# --- build -------------------------------------------------------------------------------------
if [ -n "${MOTA_PKG_DEBS:-}" ]; then
  debs=$MOTA_PKG_DEBS
else
  step "build (scripts/package)"
  t0=$(date +%s)
  scripts/package --work "$work" --out "$work/debs"
  echo "   built in $(($(date +%s) - t0)) s"
  debs=$work/debs
fi
version=$(sed -n 's/^project(mota VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
agent_deb=$(ls "$debs"/mota-agent_"$version"_*.deb)
manager_deb=$(ls "$debs"/mota-manager_"$version"_*.deb)

# --- lintian -----------------------------------------------------------------------------------
# Errors and warnings fail; the warnings we accept are overridden, with the reason, in
# packaging/debian/*.lintian-overrides (and listed in packaging/README.md).
step "lintian"
lintian --fail-on error,warning --tag-display-limit 0 "$agent_deb" "$manager_deb" ||
  fail "lintian reported errors or warnings (above)"

# --- install -----------------------------------------------------------------------------------
step "install (dpkg -i, then apt-get install -f for dependencies)"
if ! dpkg -i "$agent_deb" "$manager_deb" >"$tmp/dpkg.log" 2>&1; then
  apt-get install -f -y -qq >>"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "install"; }
fi
for p in mota-agent mota-manager; do
  dpkg-query -W -f='${Status}\n' "$p" | grep -qx "install ok installed" ||
    { cat "$tmp/dpkg.log"; fail "$p is not fully installed"; }
done

step "installed files"
out=$(/usr/bin/mota-agent --version) || fail "mota-agent --version exited $?"
[ "$out" = "mota-agent $version" ] || fail "mota-agent --version printed '$out'"
out=$(/usr/bin/mota --version) || fail "mota --version exited $?"
[ "$out" = "mota $version" ] || fail "mota --version printed '$out'"
/usr/bin/mota-runtime --help | grep -q "probe" || fail "mota-runtime --help does not list probe"

mode_is() {  # path mode owner:group
  local got
  got=$(stat -c '%a %U:%G' "$1" 2>/dev/null) || fail "$1 is missing"
  [ "$got" = "$2 $3" ] || fail "$1 is '$got', want '$2 $3'"
}
for b in mota-agent mota-runtime mota; do mode_is /usr/bin/$b 755 root:root; done
for u in mota-agent mota-runtime mota-server mota-refresh; do mode_is /lib/systemd/system/$u.service 644 root:root; done
mode_is /lib/systemd/system/mota-refresh.timer 644 root:root
mode_is /etc/mota/agent.toml 644 root:root
mode_is /etc/mota/runtime.toml 644 root:root
mode_is /etc/mota/health.d 755 root:root
mode_is /etc/default/mota-server 644 root:root
for m in man8/mota-agent.8.gz man8/mota-runtime.8.gz man1/mota.1.gz; do
  [ -f /usr/share/man/$m ] || fail "/usr/share/man/$m is missing"
done
# roff writes a hyphen as "\-".
zcat /usr/share/man/man8/mota-agent.8.gz | sed 's/\\-/-/g' | grep -q "check-once" ||
  fail "mota-agent.8 lacks the subcommands"
cmp -s /etc/mota/agent.toml agent/agent.toml.example || fail "/etc/mota/agent.toml is not agent/agent.toml.example"
# The hand-over examples (docs/handover.md) ship with the agent, as written in the tree.
for e in triton-load systemd-reload; do
  cmp -s /usr/share/doc/mota-agent/examples/handover/$e docs/examples/handover/$e ||
    fail "/usr/share/doc/mota-agent/examples/handover/$e is not docs/examples/handover/$e"
done
# dh_compress gzips documentation over 4 KiB.
[ -f /usr/share/doc/mota-agent/handover.md ] || [ -f /usr/share/doc/mota-agent/handover.md.gz ] ||
  fail "/usr/share/doc/mota-agent/handover.md(.gz) is missing"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' mota-agent mota-manager | awk '{print $1}' | sort | xargs)
[ "$conffiles" = "/etc/default/mota-server /etc/mota/agent.toml /etc/mota/runtime.toml" ] ||
  fail "conffiles are '$conffiles'"

step "system users"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd mota) || fail "no user mota"
[ "$uid" -lt 1000 ] || fail "mota is not a system user (uid $uid)"
[ "$home" = /var/lib/mota ] || fail "mota's home is $home"
case "$shell" in */nologin|/bin/false) ;; *) fail "mota has a login shell: $shell" ;; esac
getent group mota >/dev/null || fail "no group mota"
getent passwd mota-server >/dev/null || fail "no user mota-server"

step "units enabled for boot (started by systemd when it runs; not here)"
for u in mota-agent mota-runtime mota-server; do
  [ -L /etc/systemd/system/multi-user.target.wants/$u.service ] || fail "$u.service is not enabled"
done
[ -L /etc/systemd/system/timers.target.wants/mota-refresh.timer ] ||
  fail "mota-refresh.timer is not enabled"
# The service runs only from the timer: static, not enabled on its own.
[ ! -e /etc/systemd/system/multi-user.target.wants/mota-refresh.service ] ||
  fail "mota-refresh.service is enabled by itself"

step "systemd-analyze verify"
# verify also loads the units' dependencies (network-online.target, ...): run it on the installed
# copies. Any output is a finding.
verify=$(systemd-analyze verify /lib/systemd/system/mota-agent.service \
  /lib/systemd/system/mota-runtime.service /lib/systemd/system/mota-server.service \
  /lib/systemd/system/mota-refresh.service /lib/systemd/system/mota-refresh.timer 2>&1) ||
  { echo "$verify"; fail "systemd-analyze verify failed"; }
[ -z "$verify" ] || { echo "$verify"; fail "systemd-analyze verify is not clean"; }

step "systemd-analyze security --offline=true (at most 2.0 each)"
scripts/security-scores --installed --max 2.0 || fail "a unit's exposure is above 2.0"

# --- mota-refresh.service once, on a real repository in /var/lib/mota-server ---------------------
# Under systemd (PID 1) the unit itself is started; otherwise its ExecStart= runs as its User=
# with its UMask=. The timestamp is made due by lengthening its lifetime in mota.toml (3d: the
# refresh window becomes 1.5d, and the 1d timestamp signed by init falls inside it), so the run
# must re-sign it; a second run finds nothing due and changes nothing.
step "mota-refresh.service on a real repository"
[ ! -e /var/lib/mota-server ] || fail "/var/lib/mota-server exists already: this test would change it"
created_server_dir=1
install -d -o mota-server -g mota-server -m 0750 /var/lib/mota-server
as_server=(setpriv --reuid=mota-server --regid=mota-server --init-groups --)
"${as_server[@]}" /usr/bin/mota init /var/lib/mota-server >"$tmp/server-init.log" 2>&1 ||
  { cat "$tmp/server-init.log"; fail "mota init /var/lib/mota-server"; }
grep -q "mota-refresh.timer" "$tmp/server-init.log" || fail "mota init does not mention the timer"
sed -i 's/^timestamp = "1d"$/timestamp = "3d"/' /var/lib/mota-server/mota.toml
grep -q '^timestamp = "3d"$' /var/lib/mota-server/mota.toml || fail "could not edit mota.toml"
run_refresh() {
  if [ -d /run/systemd/system ]; then
    systemctl start mota-refresh.service || return 1
    [ "$(systemctl show -p Result --value mota-refresh.service)" = success ] || return 1
    journalctl -u mota-refresh.service -o cat -n 10 --no-pager
  else
    local exec user umask_
    exec=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/mota-refresh.service)
    user=$(sed -n 's/^User=//p' /lib/systemd/system/mota-refresh.service)
    umask_=$(sed -n 's/^UMask=//p' /lib/systemd/system/mota-refresh.service)
    # shellcheck disable=SC2086 # ExecStart= is split on spaces, as systemd does here
    (umask "$umask_" && setpriv --reuid="$user" --regid="$user" --init-groups -- $exec)
  fi
}
run_refresh >"$tmp/refresh1.log" 2>&1 || { cat "$tmp/refresh1.log"; fail "mota-refresh.service failed"; }
grep -q "timestamp version 2: re-signed" "$tmp/refresh1.log" ||
  { cat "$tmp/refresh1.log"; fail "the first run did not re-sign the due timestamp"; }
[ "$(stat -c '%U' /var/lib/mota-server/repo/metadata/timestamp.json)" = mota-server ] ||
  fail "timestamp.json is owned by $(stat -c '%U' /var/lib/mota-server/repo/metadata/timestamp.json)"
before_ts=$(sha256sum </var/lib/mota-server/repo/metadata/timestamp.json)
run_refresh >"$tmp/refresh2.log" 2>&1 || { cat "$tmp/refresh2.log"; fail "mota-refresh.service failed (2nd run)"; }
grep -q "nothing was due" "$tmp/refresh2.log" || { cat "$tmp/refresh2.log"; fail "the second run re-signed"; }
[ "$before_ts" = "$(sha256sum </var/lib/mota-server/repo/metadata/timestamp.json)" ] ||
  fail "a run with nothing due changed timestamp.json"
"${as_server[@]}" /usr/bin/mota verify /var/lib/mota-server >"$tmp/verify.log" 2>&1 ||
  { cat "$tmp/verify.log"; fail "mota verify after the refresh"; }
grep -q "^warning:" "$tmp/verify.log" && { cat "$tmp/verify.log"; fail "mota verify warns after the refresh"; }
rm -rf /var/lib/mota-server
created_server_dir=0
echo "   re-signed the due timestamp as mota-server, then nothing due: unchanged; mota verify clean"

# --- the installed binaries, run like the units run them ------------------------------------------
# A private mount namespace gets its own /run: the runtime's socket directory as systemd's
# RuntimeDirectory= makes it (/run/mota, mota:mota 0750) and a stand-in for journald's socket,
# so JOURNAL_STREAM-detected structured logging can be checked field by field.
step "runtime on /run/mota/runtime.sock as user mota, agent health through it, journald fields"
if ! unshare --mount --propagation private true 2>/dev/null; then
  echo "   SKIPPED: no private mount namespace here (unshare -m needs CAP_SYS_ADMIN)"
else
  mota init "$tmp/repo" >"$tmp/init.log" 2>&1 || { cat "$tmp/init.log"; fail "mota init"; }
  root_json=$(ls "$tmp"/repo/repo/metadata/1.root.json) || fail "mota init wrote no 1.root.json"
  mkdir -p "$tmp/state" && chown mota:mota "$tmp/state" && chmod 755 "$tmp"
  cat >"$tmp/agent.toml" <<EOF
server_url = "http://127.0.0.1:9"
device_id = "pkgtest-device"
state_dir = "$tmp/state"
update_lock = "$tmp/state/update.lock"
trusted_root = "$root_json"
poll_interval = "1h"
[[model]]
name = "detector"
channel = "stable"
EOF
  chmod 644 "$tmp/agent.toml"
  unshare --mount --propagation private bash -s "$tmp" <<'NS' || fail "namespace checks (above)"
set -euo pipefail
tmp=$1
as_mota=(setpriv --reuid=mota --regid=mota --init-groups --)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/journal
install -d -o mota -g mota -m 0750 /run/mota
python3 tests/packaging/journal_capture.py /run/systemd/journal/socket "$tmp/journal.jsonl" &
cap=$!
pids+=("$cap")
for _ in $(seq 50); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done
# stderr to a file whose device:inode is JOURNAL_STREAM: what systemd sets up for a service.
: >"$tmp/stderr" && chmod 666 "$tmp/stderr"
stream=$(stat -c '%d:%i' "$tmp/stderr")
# The runtime with the installed default config (socket /run/mota/runtime.sock), one bad model.
"${as_mota[@]}" env JOURNAL_STREAM="$stream" /usr/bin/mota-runtime serve --config /etc/mota/runtime.toml \
  --model ghost=/nonexistent/slot 2>>"$tmp/stderr" &
rt=$!
pids+=("$rt")
for _ in $(seq 100); do [ -S /run/mota/runtime.sock ] && break; sleep 0.1; done
[ -S /run/mota/runtime.sock ] || { cat "$tmp/stderr"; echo "no /run/mota/runtime.sock"; exit 1; }
[ "$(stat -c '%a %U:%G' /run/mota/runtime.sock)" = "660 mota:mota" ] ||
  { stat /run/mota/runtime.sock; echo "socket mode/owner"; exit 1; }
"${as_mota[@]}" curl -sf --unix-socket /run/mota/runtime.sock http://localhost/v1/health >"$tmp/health" ||
  { echo "user mota cannot reach the runtime"; exit 1; }
grep -q '"status"' "$tmp/health" || { cat "$tmp/health"; exit 1; }
if setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
  curl -sf --unix-socket /run/mota/runtime.sock http://localhost/v1/health >/dev/null 2>&1; then
  echo "user nobody reached the runtime socket"; exit 1
fi
# The agent as the unit runs it: one poll against a closed port fails and is logged, then SIGTERM.
"${as_mota[@]}" env JOURNAL_STREAM="$stream" /usr/bin/mota-agent --config "$tmp/agent.toml" run \
  2>>"$tmp/stderr" &
ag=$!
pids+=("$ag")
for _ in $(seq 200); do grep -q '"poll failed' "$tmp/journal.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -TERM "$ag" "$rt"
wait "$ag" || { echo "mota-agent run exited $? after SIGTERM"; cat "$tmp/stderr"; exit 1; }
wait "$rt" || { echo "mota-runtime serve exited $? after SIGTERM"; cat "$tmp/stderr"; exit 1; }
sleep 0.2
kill "$cap"
[ ! -s "$tmp/stderr" ] || { echo "lines on stderr instead of the journal:"; cat "$tmp/stderr"; exit 1; }
python3 - "$tmp/journal.jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
def find(ident, prefix):
    for r in recs:
        if r.get("SYSLOG_IDENTIFIER") == ident and r.get("MESSAGE", "").startswith(prefix):
            return r
    sys.exit(f"no {ident} record starting with {prefix!r} in the journal: {recs}")
r = find("mota-runtime", "mota-runtime serving")
assert r["PRIORITY"] == "6" and r["SOCKET"] == "/run/mota/runtime.sock", r
r = find("mota-runtime", "startup load failed")
assert r["PRIORITY"] == "3" and r["MODEL"] == "ghost" and "/nonexistent/slot" in r["REASON"], r
r = find("mota-agent", "poll failed")
assert r["PRIORITY"] == "3" and r["DEVICE"] == "pkgtest-device", r
print(f"   {len(recs)} journal records; fields MODEL, REASON, SOCKET, DEVICE, PRIORITY as expected")
PY
NS
fi

# --- purge -------------------------------------------------------------------------------------
step "purge"
mkdir -p /var/lib/mota/models && touch /var/lib/mota/device.key  # as if the agent had run
touch /etc/mota/root.json /etc/mota/health.d/10-check  # what an operator adds
apt-get purge -y -qq mota-agent mota-manager >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log"; fail "purge"; }
for p in mota-agent mota-manager; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qv "not-installed"; then
    fail "$p still known to dpkg: $(dpkg-query -W -f='${Status}' "$p")"
  fi
done
[ ! -e /etc/mota ] || fail "/etc/mota is left after purge: $(find /etc/mota | xargs)"
[ ! -e /var/lib/mota ] || fail "/var/lib/mota is left after purge"
[ ! -e /etc/default/mota-server ] || fail "/etc/default/mota-server is left after purge"
ls /var/lib/systemd/deb-systemd-helper-enabled 2>/dev/null | grep -q mota &&
  fail "deb-systemd-helper still remembers a mota unit"
snapshot >"$tmp/after"
if ! diff "$tmp/before" "$tmp/after" >"$tmp/diff"; then
  cat "$tmp/diff"
  fail "the system differs after purge (above: < removed, > left behind)"
fi
# Documented: purge keeps the system users (packaging/README.md).
getent passwd mota >/dev/null || fail "purge removed the user mota (documented to stay)"
echo "   nothing left under /usr, /etc, /lib/systemd, /var/lib; users mota, mota-server kept"
