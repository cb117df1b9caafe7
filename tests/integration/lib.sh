# shellcheck shell=bash
# The preamble every network test repeats, sourced by tests/integration/test_*.sh
# (not a test itself: ctest only registers test_*.sh):
#
#   . "$(dirname "$0")/lib.sh"
#   qw_net_up "$src/examples/pair.conf"
#   qw_wait_keys sae-a sae-b 16 || fail "the pool did not fill"
#
# It sets src, build, QWAVE, QWAVED (exported), dir (a temporary directory,
# removed on exit), state (the network's state directory, $dir/net) and
# passed, and defines fail, ok and json as the tests had them. On EXIT it
# runs the test's own qw_cleanup_hook (if defined), kills every qwaved it
# restarted, and runs 'qwave net down' on the state directory.
set -euo pipefail
src=${QW_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${QW_BUILD_DIR:-$src/build}
QWAVE=${QWAVE:-$build/qwave}
QWAVED=${QWAVED:-$build/qwaved}
export QWAVED
dir=$(mktemp -d)
state=$dir/net
passed=0
qw_started=   # qwaved processes started here (restarts), killed on exit

qw_cleanup() {
	if declare -F qw_cleanup_hook >/dev/null; then qw_cleanup_hook || true; fi
	for p in $qw_started; do kill -9 "$p" 2>/dev/null || true; done
	"$QWAVE" net down --state-dir "$state" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap qw_cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	for f in "$state"/nodes/*.log; do
		[ -f "$f" ] || continue
		echo "== $f (QKD sessions per link: $(grep -o 'QKD link [^:]*: session' "$f" |
			sort | uniq -c | awk '{ printf "%s %d, ", $3, $1 }'))" >&2
		tail -20 "$f" >&2
	done
	exit 1
}
ok() { passed=$((passed + 1)); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# 1 when PID is a live process (not a zombie)
qw_alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^[^ ]* [^ ]* [ZX]' "/proc/$1/stat" 2>/dev/null; }

# qw_net_up TOPOLOGY: net up into $state, answer in $dir/up.json; sets ca.
qw_net_up() {
	"$QWAVE" net up "$1" --state-dir "$state" --json >"$dir/up.json" || fail "net up $1"
	ca=$(json 'd["ca"]' <"$dir/up.json")
}
# qw_sae SAE FIELD: node, cert or key of an SAE from net up's answer.
qw_sae() { json "[s for s in d['saes'] if s['id']=='$1'][0]['$2']" <"$dir/up.json"; }
# qw_nodes: every node ID, one per line.
qw_nodes() { json '"\n".join(n["id"] for n in d["nodes"])' <"$dir/up.json"; }
# qw_pid NODE: the node's current qwaved (the pids file net down reads).
qw_pid() { awk -v id="$1" '$1 == id { print $2 }' "$state/pids"; }
# qw_port NODE FIELD: etsi_port, metrics_port or km_port from the node's
# status file (it changes on every restart: ETSI and metrics ports are 0
# in the node configuration).
qw_port() { json "d['$2']" <"$state/nodes/$1.status.json"; }
# qw_url NODE: the node's KME URL now.
qw_url() { echo "https://127.0.0.1:$(qw_port "$1" etsi_port)"; }
# qw_curl SAE ARGS...: curl with the SAE's certificate (mutual TLS).
qw_curl() {
	local s=$1
	shift
	curl -sS --max-time 20 --cacert "$ca" --cert "$(qw_sae "$s" cert)" --key "$(qw_sae "$s" key)" "$@"
}
# qw_stored MASTER SLAVE: stored_key_count at the master's node (0 if it
# does not answer).
qw_stored() {
	qw_curl "$1" "$(qw_url "$(qw_sae "$1" node)")/api/v1/keys/$2/status" 2>/dev/null |
		json 'd["stored_key_count"]' 2>/dev/null || echo 0
}
# qw_wait_keys MASTER SLAVE MIN [SECONDS]: wait until the master's KME has
# MIN keys for the pair (default: up to 300 s, a loaded machine); 1 if not.
qw_wait_keys() {
	local t0=$SECONDS n=0
	while [ $((SECONDS - t0)) -lt "${4:-300}" ]; do
		n=$(qw_stored "$1" "$2")
		[ "$n" -ge "$3" ] && return 0
		sleep 0.5
	done
	echo "qw_wait_keys $1 -> $2: stored_key_count $n after ${4:-300} s" >&2
	return 1
}
# qw_pairs TOPOLOGY: every SAE pair at two different nodes of the network
# up now, one "MASTER:SLAVE 1" per line when the nodes are neighbours (a
# [link] of TOPOLOGY joins them), "MASTER:SLAVE 0" when not.
qw_pairs() {
	python3 - "$1" "$dir/up.json" <<'EOP'
import json, sys
links, sec, cur = set(), None, {}
for line in open(sys.argv[1]).read().splitlines() + ["[end]"]:
    line = line.split(";")[0].split("#")[0].strip()
    if line.startswith("["):
        if sec == "link":
            links.add(frozenset((cur["a"], cur["b"])))
        sec, cur = line.strip("[]").strip(), {}
    elif "=" in line:
        k, v = (x.strip() for x in line.split("=", 1))
        cur[k] = v
saes = json.load(open(sys.argv[2]))["saes"]
for m in saes:
    for s in saes:
        if m["node"] != s["node"]:
            print("%s:%s %d" % (m["id"], s["id"], frozenset((m["node"], s["node"])) in links))
EOP
}
# qw_kill_node NODE: kill -9 its qwaved and wait until it is gone.
qw_kill_node() {
	local pid
	pid=$(qw_pid "$1")
	kill -9 "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		qw_alive "$pid" || return 0
		sleep 0.05
	done
	fail "$1 ($pid) survived kill -9"
}
# qw_start_node NODE: start qwaved on the configuration net up wrote for it
# (the same data directory, so its store survives), record it in the pids
# file for net down, wait (up to 30 s) for its status file and its KME.
qw_start_node() {
	local id=$1 pid
	"$QWAVED" -c "$state/nodes/$id.conf" >>"$state/nodes/$id.log" 2>&1 </dev/null &
	pid=$!
	disown "$pid" # no "Killed" line from the shell when the test kills it
	qw_started="$qw_started $pid"
	sed -i "s/^$id .*/$id $pid/" "$state/pids"
	for _ in $(seq 300); do
		if [ "$(json 'd["pid"]' <"$state/nodes/$id.status.json" 2>/dev/null)" = "$pid" ] &&
			(: </dev/tcp/127.0.0.1/"$(qw_port "$id" etsi_port)") 2>/dev/null; then
			return 0
		fi
		qw_alive "$pid" || fail "$id exited at its restart"
		sleep 0.1
	done
	fail "$id did not restart in 30 s"
}
qw_restart_node() {
	qw_kill_node "$1"
	qw_start_node "$1"
}
# qw_net_down: net down, then no qwaved of this network may be left.
qw_net_down() {
	local pids
	pids="$(awk '{ print $2 }' "$state/pids") $(json '" ".join(str(n["pid"]) for n in d["nodes"])' <"$dir/up.json") $qw_started"
	"$QWAVE" net down --state-dir "$state" >/dev/null || fail "net down"
	for p in $pids; do
		qw_alive "$p" && fail "qwaved $p still running after net down"
	done
	qw_started=
}
