#!/usr/bin/env bash
# The eavesdropper drill on examples/pair.conf: once the link distils,
# 'qwave net attack node-a:node-b --fraction 1' makes its QBER rise to about
# 25 %, its sessions abort on the QBER alarm, the alarm shows in the metrics
# and on the dashboard (the link's qber_alarm and a "qber" alarm), and
# neither pool grows while the attack lasts; '--fraction 0' brings the key
# back. Bounded: every wait has a deadline; the test waits for about six
# sessions of pair.conf.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || { echo "SKIP: curl not installed"; exit 77; }
t_start=$SECONDS

qw_net_up "$src/examples/pair.conf"
# the nodes' own certificates open their manager listeners
N=(curl -sS --max-time 10 --cacert "$ca")
metrics() { # NODE
	"${N[@]}" --cert "$state/pki/node-$1.crt" --key "$state/pki/node-$1.key" \
		"https://127.0.0.1:$(qw_port "$1" metrics_port)/metrics"
}
network() { # NODE
	"${N[@]}" --cert "$state/pki/node-$1.crt" --key "$state/pki/node-$1.key" \
		"https://127.0.0.1:$(qw_port "$1" metrics_port)/api/network"
}
metric() { # NODE NAME PEER -> value (0 when absent)
	metrics "$1" 2>/dev/null | awk -v m="$2{node=\"$1\",peer=\"$3\"}" '$1 == m { print $2; f = 1 } END { if (!f) print 0 }'
}
# wait_for SECONDS COMMAND...: until COMMAND succeeds; 1 at the deadline
wait_for() {
	local t0=$SECONDS lim=$1
	shift
	while [ $((SECONDS - t0)) -lt "$lim" ]; do
		"$@" && return 0
		sleep 0.3
	done
	return 1
}
# ok, and when (the test's phases wait for sessions)
step() {
	ok
	echo "  [$((SECONDS - t_start)) s] check $passed" >&2
}
gt() { python3 -c "import sys; sys.exit(0 if float('$1') > float('$2') else 1)"; }
pool_grew() { gt "$(metric node-a qwave_pool_bits node-b)" "$1" && gt "$(metric node-b qwave_pool_bits node-a)" "$2"; }
aborts() { grep -c "aborted: QBER" "$state/nodes/$1.log" || true; }
# intercept-resend on every pulse: 1/4 + e_det/2 = 26.65 % (e_det 3.3 %)
attacked_metrics() {
	local qa qb
	qa=$(metric node-a qwave_qkd_qber node-b)
	qb=$(metric node-b qwave_qkd_qber node-a)
	gt "$qa" 0.22 && gt 0.31 "$qa" && gt "$qb" 0.22 && gt 0.31 "$qb" &&
		gt "$(metric node-a qwave_qkd_qber_alarms_total node-b)" "$alarms0"
}
honest_qber() { # reported (> 1 %) and below 10 % at both ends
	local qa qb
	qa=$(metric node-a qwave_qkd_qber node-b)
	qb=$(metric node-b qwave_qkd_qber node-a)
	gt "$qa" 0.01 && gt 0.1 "$qa" && gt "$qb" 0.01 && gt 0.1 "$qb"
}
drilled() { [ "$(grep -c "eavesdropper drill: intercept-resend" "$state/nodes/node-a.log" || true)" -ge "$1" ]; }
both_aborted() { [ "$(aborts node-a)" -ge "$1" ] && [ "$(aborts node-b)" -ge "$2" ]; }
dash_alarm() {
	network node-a | python3 -c 'import json, sys
d = json.load(sys.stdin)
l = [x for x in d["links"] if x.get("qber_alarm")]
a = [x for x in d["alarms"] if x["kind"] == "qber"]
sys.exit(0 if l and a else 1)'
}

# the link distils (both pools hold key)
wait_for 45 pool_grew 0 0 || fail "no key in the pools within 45 s"
step
wait_for 10 honest_qber || fail "honest QBER not reported below 10 %: $(metric node-a qwave_qkd_qber node-b)"
alarms0=$(metric node-a qwave_qkd_qber_alarms_total node-b)

# usage errors
"$QWAVE" net attack node-a:node-b --state-dir "$state" >/dev/null 2>&1 && fail "attack without --fraction"
"$QWAVE" net attack node-a:node-b --fraction 1.5 --state-dir "$state" >/dev/null 2>&1 &&
	fail "attack with fraction 1.5"
"$QWAVE" net attack node-a:node-x --fraction 1 --state-dir "$state" >/dev/null 2>&1 &&
	fail "attack on an unknown link"
step

# the attack (the link named either way round; node-a simulates it)
"$QWAVE" net attack node-b:node-a --fraction 1 --state-dir "$state" --json >"$dir/attack.json" ||
	fail "net attack --fraction 1"
[ "$(json 'd["simulated_by"]' <"$dir/attack.json")" = node-a ] || fail "attack: $(cat "$dir/attack.json")"
grep -q "DRILL: eavesdropper" "$state/nodes/node-a.log" || fail "the drill is not logged at node-a"
step

# an attacked session aborts on the QBER, at both ends
wait_for 40 both_aborted 1 1 || fail "no session aborted on the QBER within 40 s"
# (the report reaches the node as the session's thread returns, just after
# the log line: wait for it)
wait_for 10 attacked_metrics ||
	fail "attacked QBER $(metric node-a qwave_qkd_qber node-b) at node-a, $(metric node-b qwave_qkd_qber node-a) at node-b (expected about 25 %), QBER alarms $(metric node-a qwave_qkd_qber_alarms_total node-b) (before: $alarms0)"
step
# the dashboard: the link in QBER alarm and a "qber" alarm
wait_for 10 dash_alarm || fail "dashboard: no QBER alarm on the link: $(network node-a)"
step

# the pools do not grow over the next attacked session: once it has
# started (attacked), the drill is switched off; that session still aborts
# and adds nothing, the one after it brings key again
pa=$(metric node-a qwave_pool_bits node-b)
pb=$(metric node-b qwave_pool_bits node-a)
na=$(aborts node-a)
nb=$(aborts node-b)
wait_for 30 drilled "$((na + 1))" || fail "no further attacked session started in 30 s"
"$QWAVE" net attack node-a:node-b --fraction 0 --state-dir "$state" >"$dir/off.txt" ||
	fail "net attack --fraction 0"
grep -q "ended" "$dir/off.txt" || fail "attack off: $(cat "$dir/off.txt")"
wait_for 30 both_aborted $((na + 1)) $((nb + 1)) || fail "the attacked session did not abort in 30 s"
[ "$(metric node-a qwave_pool_bits node-b)" = "$pa" ] ||
	fail "node-a's pool grew under attack ($pa -> $(metric node-a qwave_pool_bits node-b))"
[ "$(metric node-b qwave_pool_bits node-a)" = "$pb" ] || fail "node-b's pool grew under attack"
step

# the drill is over: key again, at an honest QBER
wait_for 40 pool_grew "$pa" "$pb" || fail "the pools did not grow again within 40 s"
wait_for 10 honest_qber || fail "QBER still high after the drill"
step

qw_net_down
step
echo "test_attack: $passed checks passed in $((SECONDS - t_start)) s"
