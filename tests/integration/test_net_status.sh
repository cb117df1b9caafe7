#!/usr/bin/env bash
# qwave net status on examples/pair.conf: usage errors (exit 2), no state
# directory (exit 1), the merged view as JSON once the link has distilled
# (two nodes up, one link up with QBER and key rate, both pools filled),
# the table, node-b shown down after kill -9 (exit 0), net down leaving no
# qwaved running.
set -euo pipefail
src=${QW_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${QW_BUILD_DIR:-$src/build}
QWAVE=${QWAVE:-$build/qwave}
QWAVED=${QWAVED:-$build/qwaved}
export QWAVED
dir=$(mktemp -d)
state=$dir/net
passed=0
cleanup() {
	"$QWAVE" net down --state-dir "$state" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	for f in "$state"/nodes/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -20 "$f" >&2; }; done
	exit 1
}
ok() { passed=$((passed + 1)); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# usage errors and a missing state directory
for args in "--bogus" "extra-arg" "--state-dir"; do
	set +e
	# shellcheck disable=SC2086
	"$QWAVE" net status $args >/dev/null 2>&1
	rc=$?
	set -e
	[ "$rc" = 2 ] || fail "net status $args: exit $rc, expected 2"
done
set +e
"$QWAVE" net status --state-dir "$dir/none" >"$dir/out" 2>"$dir/err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "no state dir: exit $rc, expected 1"
grep -q "^qwave: error: no network state directory" "$dir/err" || fail "no state dir: $(cat "$dir/err")"
[ ! -s "$dir/out" ] || fail "no state dir: output on stdout"
"$QWAVE" net status --help | grep -q "usage: qwave net status" || fail "--help"
ok

"$QWAVE" net up "$src/examples/pair.conf" --state-dir "$state" --json >"$dir/up.json" || fail "net up"
pid_a=$(json '[n for n in d["nodes"] if n["id"]=="node-a"][0]["pid"]' <"$dir/up.json")
pid_b=$(json '[n for n in d["nodes"] if n["id"]=="node-b"][0]["pid"]' <"$dir/up.json")

# wait (up to ~3 minutes on a loaded machine) for a session's key rate
rate=None
for _ in $(seq 180); do
	"$QWAVE" net status --state-dir "$state" --json >"$dir/st.json" || fail "net status --json"
	rate=$(json 'd["links"][0]["key_rate_bps"] if d["links"] else None' <"$dir/st.json")
	[ "$rate" != None ] && break
	sleep 1
done
[ "$rate" != None ] || fail "no key rate after 3 minutes: $(cat "$dir/st.json")"
python3 - "$dir/st.json" "$state" <<'EOP' || fail "status JSON: $(cat "$dir/st.json")"
import json, os, sys
d = json.load(open(sys.argv[1]))
assert sorted(d) == ["alarms", "links", "nodes", "state_dir"]
assert d["state_dir"] == os.path.realpath(sys.argv[2])
assert [n["id"] for n in d["nodes"]] == ["node-a", "node-b"]
assert all(n["up"] is True and n["pid_alive"] is True and n["error"] is None for n in d["nodes"])
assert all(n["manager_url"].startswith("https://127.0.0.1:") for n in d["nodes"])
assert len(d["links"]) == 1, "one link, both ends' reports merged"
l = d["links"][0]
assert sorted((l["a"], l["b"])) == ["node-a", "node-b"] and l["up"] is True
assert sorted(l["reported_by"]) == ["node-a", "node-b"]
assert 0 < l["qber"] < 0.11 and l["qber_alarm"] is False and l["key_rate_bps"] > 0
assert l["length_km"] == 25
pa, pb = l["pool_bits"]["a"], l["pool_bits"]["b"]
assert isinstance(pa, int) and isinstance(pb, int) and pa > 0 and pb > 0
assert isinstance(d["alarms"], list) and len(d["alarms"]) <= 20
EOP
ok

# the table: both nodes, the link with its units
"$QWAVE" net status --state-dir "$state" >"$dir/st.txt" || fail "net status"
for w in node-a node-b "node-a -- node-b\|node-b -- node-a" "25.0 km" " %" "bit/s" "kbit" "alarms"; do
	grep -q -- "$w" "$dir/st.txt" || fail "table lacks '$w': $(cat "$dir/st.txt")"
done
[ "$(grep -c '^node-[ab] *up ' "$dir/st.txt")" = 2 ] || fail "table: nodes not up: $(cat "$dir/st.txt")"
ok

# node-b killed: shown down, not an error; node-a still answers and now
# reports the link down
kill -9 "$pid_b"
for _ in $(seq 100); do
	[ ! -e "/proc/$pid_b" ] || grep -q '^[^ ]* [^ ]* [ZX]' "/proc/$pid_b/stat" 2>/dev/null && break
	sleep 0.1
done
"$QWAVE" net status --state-dir "$state" --json >"$dir/st.json" || fail "net status with node-b down"
python3 - "$dir/st.json" <<'EOP' || fail "status JSON after kill: $(cat "$dir/st.json")"
import json, sys
d = json.load(open(sys.argv[1]))
n = {x["id"]: x for x in d["nodes"]}
assert n["node-a"]["up"] is True
assert n["node-b"]["up"] is False and n["node-b"]["pid_alive"] is False and n["node-b"]["error"]
assert len(d["links"]) == 1 and d["links"][0]["reported_by"] == ["node-a"]
EOP
"$QWAVE" net status --state-dir "$state" >"$dir/st.txt" || fail "net status (table) with node-b down"
grep -q '^node-b *DOWN' "$dir/st.txt" || fail "table: node-b not down: $(cat "$dir/st.txt")"
ok

"$QWAVE" net down --state-dir "$state" >/dev/null || fail "net down"
for p in $pid_a $pid_b; do
	if kill -0 "$p" 2>/dev/null && ! grep -q '^[^ ]* [^ ]* [ZX]' "/proc/$p/stat" 2>/dev/null; then
		fail "qwaved $p still running after net down"
	fi
done
# a stopped network: its nodes listed down, exit 0
"$QWAVE" net status --state-dir "$state" --json | json '[n["up"] for n in d["nodes"]]' |
	grep -qx '\[False, False\]' || fail "status after net down"
ok
echo "net_status: $passed passed, 0 failed"
