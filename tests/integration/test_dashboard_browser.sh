#!/usr/bin/env bash
# The manager's web dashboard in a real browser (docs/dashboard.md): headless
# Chromium loads the page from the test_dashboard shim (plain HTTP on
# 127.0.0.1, a kernel-chosen port, the embedded assets and a sample metro
# ring: 4 nodes + a cross link, carol-delta in QBER alarm), takes a
# screenshot and dumps the DOM after 5 s of virtual time. Checks: the four
# node IDs and the alarm text are rendered, the pool level that only the
# SECOND and later /api/network replies carry is shown (and the first one
# is gone) while the page itself was fetched once (live update, no reload),
# and the screenshot is a 1280x800 PNG over 10 kB, kept in the build dir.
set -euo pipefail

fail() { echo "test_dashboard_browser: FAIL: $*" >&2; exit 1; }

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || fail "$CHROMIUM not found: the Debian package chromium is needed (scripts/install-deps.sh)"
build=${QW_BUILD_DIR:-}
[ -n "$build" ] || fail "QW_BUILD_DIR not set (run through ctest)"
shim=$build/test_dashboard
[ -x "$shim" ] || fail "$shim not built"
outdir=$build/dashboard-test
mkdir -p "$outdir"
png=$outdir/dashboard.png
rm -f "$png" "$outdir/dom.html"

work=$(mktemp -d /tmp/qw-dash-XXXXXX)
shim_pid=""
chrome_pid=""
cleanup() {
	# chromium runs in its own session: end its whole process group
	# (crashpad, zygote) along with the shim
	[ -n "$chrome_pid" ] && kill -- "-$chrome_pid" 2>/dev/null || true
	if [ -n "$shim_pid" ]; then
		kill "$shim_pid" 2>/dev/null || true
		wait "$shim_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

"$shim" --serve "$work/port" 120 >"$work/requests.log" 2>"$work/shim.err" &
shim_pid=$!
for _ in $(seq 50); do
	[ -s "$work/port" ] && break
	kill -0 "$shim_pid" 2>/dev/null || fail "shim exited: $(cat "$work/shim.err")"
	sleep 0.1
done
[ -s "$work/port" ] || fail "shim did not start"
port=$(cat "$work/port")
url="http://127.0.0.1:$port/"

# One browser run; "$@" adds --screenshot or --dump-dom. Output on stdout.
browse() {
	local profile
	profile=$(mktemp -d "$work/profile-XXXXXX")
	# a hung browser must not hang the test: 60 s of real time at most
	setsid timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic \
		--no-first-run --disable-background-networking --disable-component-update \
		--disable-sync --disable-dev-shm-usage --hide-scrollbars \
		--user-data-dir="$profile" --virtual-time-budget=5000 --window-size=1280,800 \
		"$@" "$url" >"$work/chrome.out" 2>"$work/chrome.err" &
	chrome_pid=$!
	local rc=0
	wait "$chrome_pid" || rc=$?
	kill -- "-$chrome_pid" 2>/dev/null || true
	chrome_pid=""
	[ "$rc" -eq 0 ] || fail "chromium exited with $rc: $(tail -5 "$work/chrome.err")"
}

# ---- the DOM after 5 s of virtual time ----
before=$(wc -l <"$work/requests.log")
browse --dump-dom
cp "$work/chrome.out" "$outdir/dom.html"
dom=$outdir/dom.html
log=$(tail -n +"$((before + 1))" "$work/requests.log")
pages=$(grep -c '^/ 200$' <<<"$log" || true)
polls=$(grep -c '^/api/network 200$' <<<"$log" || true)
echo "dump-dom run: $pages page load(s), $polls /api/network poll(s)"
grep -q '^/dashboard/app.js 200$' <<<"$log" || fail "the page did not load app.js"
grep -q '^/dashboard/style.css 200$' <<<"$log" || fail "the page did not load style.css"
[ "$pages" -eq 1 ] || fail "the page was loaded $pages times (a reload?)"
[ "$polls" -ge 2 ] || fail "only $polls /api/network poll(s) in 5 s"
for id in alpha bravo carol delta; do
	grep -q "<text[^>]*>$id</text>" "$dom" || fail "node $id not drawn"
done
grep -qF 'QBER 13.40 % above the threshold 11.00 % (eavesdropper?)' "$dom" || fail "alarm text missing"
grep -qF 'carol-delta' "$dom" || fail "alarm link missing"
grep -qF '2026-11-21 11:49:37 UTC' "$dom" || fail "alarm timestamp missing"
# 1337.5 kbit is only in the second and later replies; 812.0 only in the first
grep -qF '1337.5 kbit' "$dom" || fail "the pool level of the second /api/network reply is not shown (no live update)"
if grep -qF '812.0 kbit' "$dom"; then fail "the first reply's pool level is still shown"; fi
grep -qF 'QBER 2.13 %' "$dom" || fail "QBER in % missing"
grep -qF 'bit/s' "$dom" || fail "key rate unit missing"
grep -q 'class="link alarm"' "$dom" || fail "no link drawn in alarm state"
grep -q 'class="link down off"' "$dom" || grep -q 'class="link alarm off"' "$dom" || fail "the down link is not drawn as down"
grep -q 'class="status ok"' "$dom" || fail "status badge not live"

# ---- the screenshot ----
browse --screenshot="$png"
[ -f "$png" ] || fail "no screenshot written"
size=$(stat -c %s "$png")
[ "$size" -gt 10240 ] || fail "screenshot only $size bytes"
magic=$(od -An -tx1 -N8 "$png" | tr -d ' \n')
[ "$magic" = "89504e470d0a1a0a" ] || fail "screenshot is not a PNG"
# IHDR width and height (big-endian u32 at offsets 16 and 20)
dims=$(od -An -tu1 -j16 -N8 "$png" | awk '{ printf "%dx%d", (($1*256+$2)*256+$3)*256+$4, (($5*256+$6)*256+$7)*256+$8 }')
[ "$dims" = "1280x800" ] || fail "screenshot is $dims, want 1280x800"
echo "screenshot: $png ($size bytes, $dims)"
echo "test_dashboard_browser: OK"
