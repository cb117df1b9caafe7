#!/usr/bin/env bash
# Link-state routing on a real network (docs/relay-routing.md, "Routing";
# docs/operations.md): examples/metro-ring.conf up, its [routing] and
# [policy] copied into every node's configuration with every SAE; every
# node's database holds all 4 nodes and reaches the 3 others; node-b hangs
# (SIGSTOP: its sockets stay open, TCP notices nothing) and its neighbours'
# heartbeat drops their links to it; node-b killed: its LSA ages out
# everywhere, net status shows it DOWN and unreachable with a node_down
# alarm; net down leaves no qwaved running. Then examples/chain6.conf: every
# node's database holds all 6 nodes (5 hops end to end).
set -euo pipefail
src=${QW_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${QW_BUILD_DIR:-$src/build}
QWAVE=${QWAVE:-$build/qwave}
QWAVED=${QWAVED:-$build/qwaved}
export QWAVED
dir=$(mktemp -d)
state=$dir/ring
state6=$dir/chain
passed=0
stopped=""
cleanup() {
	[ -n "$stopped" ] && kill -CONT "$stopped" 2>/dev/null || true
	"$QWAVE" net down --state-dir "$state" >/dev/null 2>&1 || true
	"$QWAVE" net down --state-dir "$state6" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	for f in "$state"/nodes/*.log "$state6"/nodes/*.log; do
		[ -f "$f" ] && { echo "== $f" >&2; grep -v 'routing: ' "$f" | tail -15 >&2; }
	done
	exit 1
}
ok() { passed=$((passed + 1)); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
alive() { [ -e "/proc/$1" ] && ! grep -q '^[^ ]* [^ ]* [ZX]' "/proc/$1/stat" 2>/dev/null; }

declare -A PORT
# the manager ports of the nodes of state dir S (after net up)
read_ports() {
	local s=$1 line
	while read -r line; do
		PORT[$s/${line% *}]=${line#* }
	done < <(python3 - "$s" <<'EOP'
import json, os, sys
d = os.path.join(sys.argv[1], "nodes")
for f in sorted(os.listdir(d)):
    if f.endswith(".status.json"):
        print(f[:-len(".status.json")], json.load(open(os.path.join(d, f)))["metrics_port"])
EOP
)
}

# GET /metrics of node ID in state dir S (empty when it does not answer)
scrape() {
	local s=$1 id=$2
	curl -s --max-time 5 --cert "$s/pki/node-$id.crt" --key "$s/pki/node-$id.key" \
		--cacert "$s/pki/ca.crt" "https://127.0.0.1:${PORT[$s/$id]}/metrics" || true
}

# the value of metric NAME in a scrape on stdin (first sample whose labels
# contain LABELS, default any)
pick() {
	awk -v n="$1" -v l="${2:-}" 'index($0, n "{") == 1 && index($0, l) { print $NF; exit }'
}

# metric NAME of node ID in state dir S (LABELS as pick)
metric() {
	scrape "$1" "$2" | pick "$3" "${4:-}"
}

# wait up to $1 seconds (wall clock) for the command "$2..." to succeed
wait_for() {
	local end=$((SECONDS + $1))
	shift
	while :; do
		"$@" && return 0
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}

db_full() { # state dir, node count, nodes...
	local s=$1 want=$2 id m
	shift 2
	for id in "$@"; do
		m=$(scrape "$s" "$id")
		[ "$(pick qwave_route_db_lsas <<<"$m")" = "$want" ] || return 1
		[ "$(pick qwave_route_nodes_reachable <<<"$m")" = "$((want - 1))" ] || return 1
	done
}

"$QWAVE" net up "$src/examples/metro-ring.conf" --state-dir "$state" --json >"$dir/up.json" ||
	fail "net up metro-ring"
read_ports "$state"
pid() { json "[n for n in d['nodes'] if n['id']=='$1'][0]['pid']" <"$dir/up.json"; }
pid_b=$(pid node-b)

# the topology's network-wide sections and every SAE reach every node
for id in node-a node-b node-c node-d; do
	c=$state/nodes/$id.conf
	for w in "^\[routing\]" "^heartbeat_ms = 500" "^dead_ms = 1500" "^\[policy\]" "^default = allow"; do
		grep -q "$w" "$c" || fail "$c lacks '$w'"
	done
	[ "$(grep -c '^\[sae\]' "$c")" = 4 ] || fail "$c does not list the 4 SAEs"
done
ok

# flooding: every database holds the 4 nodes, each node reaches the 3 others
wait_for 30 db_full "$state" 4 node-a node-b node-c node-d ||
	fail "databases not full after 30 s: a=$(metric "$state" node-a qwave_route_db_lsas) b=$(metric "$state" node-b qwave_route_db_lsas) c=$(metric "$state" node-c qwave_route_db_lsas) d=$(metric "$state" node-d qwave_route_db_lsas)"
ok

# node-b hangs: only the heartbeat can tell (dead_ms 1.5 s)
kill -STOP "$pid_b"
stopped=$pid_b
b_links_down() {
	[ "$(metric "$state" node-a qwave_km_link_up 'peer="node-b"')" = 0 ] &&
		[ "$(metric "$state" node-c qwave_km_link_up 'peer="node-b"')" = 0 ]
}
wait_for 10 b_links_down || fail "node-a/node-c still see the link to the hung node-b after 10 s"
[ "$(metric "$state" node-a qwave_km_heartbeat_drops_total)" -ge 1 ] || fail "node-a: no heartbeat drop counted"
# the others still reach each other, not node-b
[ "$(metric "$state" node-d qwave_route_nodes_reachable)" = 2 ] || fail "node-d: reachable != 2"
ok

# node-b dies: its LSA ages out (max_age 4 s) and net status says so
kill -9 "$pid_b"
kill -CONT "$pid_b" 2>/dev/null || true
stopped=""
wait_for 5 bash -c "! [ -e /proc/$pid_b ] || grep -q '^[^ ]* [^ ]* [ZX]' /proc/$pid_b/stat" || fail "node-b survived kill -9"
b_gone() {
	[ "$(metric "$state" node-a qwave_route_db_lsas)" = 3 ] &&
		[ "$(metric "$state" node-d qwave_route_db_lsas)" = 3 ]
}
wait_for 10 b_gone || fail "node-b's LSA still held after 10 s"
"$QWAVE" net status --state-dir "$state" --json >"$dir/st.json" || fail "net status --json"
python3 - "$dir/st.json" <<'EOP' || fail "status JSON after kill: $(cat "$dir/st.json")"
import json, sys
d = json.load(open(sys.argv[1]))
n = {x["id"]: x for x in d["nodes"]}
assert sorted(n) == ["node-a", "node-b", "node-c", "node-d"]
b = n["node-b"]
assert b["up"] is False and b["pid_alive"] is False
assert b["reachable"] is False and b["reachable_from"] == []
assert "node_down" in b["alarms"], b
for x in ("node-a", "node-c", "node-d"):
    assert n[x]["up"] is True and n[x]["reachable"] is True, n[x]
    assert sorted(n[x]["reachable_from"]) == sorted({"node-a", "node-c", "node-d"} - {x}), n[x]
# the five links, from the LSAs; node-b's two down
pairs = {tuple(sorted((l["a"], l["b"]))): l for l in d["links"]}
assert len(pairs) == 5, sorted(pairs)
for p, l in pairs.items():
    assert l["up"] is ("node-b" not in p), (p, l)
assert any(a["kind"] == "node_down" and a["node"] == "node-b" for a in d["alarms"])
EOP
"$QWAVE" net status --state-dir "$state" >"$dir/st.txt" || fail "net status"
grep -q '^node-b *DOWN *UNREACHABLE' "$dir/st.txt" || fail "table: $(cat "$dir/st.txt")"
grep -q '^node-a *up *reachable' "$dir/st.txt" || fail "table: $(cat "$dir/st.txt")"
ok

"$QWAVE" net down --state-dir "$state" >/dev/null || fail "net down"
for p in $(json '" ".join(str(n["pid"]) for n in d["nodes"])' <"$dir/up.json"); do
	alive "$p" && fail "qwaved $p still running after net down"
done
ok

# a chain of six: the ends learn each other over five hops
"$QWAVE" net up "$src/examples/chain6.conf" --state-dir "$state6" --json >"$dir/up6.json" ||
	fail "net up chain6"
read_ports "$state6"
grep -q '^rule = allow sae-first <-> sae-last' "$state6/nodes/n3.conf" || fail "chain6: policy not copied"
wait_for 30 db_full "$state6" 6 n1 n2 n3 n4 n5 n6 || fail "chain6: databases not full after 30 s"
"$QWAVE" net down --state-dir "$state6" >/dev/null || fail "net down chain6"
for p in $(json '" ".join(str(n["pid"]) for n in d["nodes"])' <"$dir/up6.json"); do
	alive "$p" && fail "qwaved $p still running after net down"
done
ok
echo "routing_net: $passed passed, 0 failed"
