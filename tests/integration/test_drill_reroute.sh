#!/usr/bin/env bash
# The eavesdropper drill on a relay path (examples/metro-ring.conf: the ring
# node-a - node-b - node-c - node-d plus node-a - node-c). Keys between two
# SAEs at non-neighbour nodes are relayed; once the origin has logged a relay
# path, 'qwave net attack' with --fraction 1 on the path's first link makes
# that link's next sessions abort on the QBER at both ends, its QBER alarm
# show in the metrics of both ends (qwave_qkd_qber_alarm 1), its pool and
# distilled bits stop growing at both ends over a whole attacked session,
# and every relay started once the alarm is up takes a path without that
# link (docs/relay-routing.md: an alarmed link is avoided), each relayed key
# fetched by the slave with equal material. '--fraction 0' ends the drill
# (test_attack.sh checks that the link distils again). net down leaves no
# qwaved running. Every wait has a deadline; the drill waits for about two
# of the link's sessions.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || { echo "SKIP: curl not installed"; exit 77; }
t_start=$SECONDS

conf=$src/examples/metro-ring.conf
qw_net_up "$conf"
far=$(qw_pairs "$conf" | awk '$2 == 0 { print $1; exit }')
[ -n "$far" ] || fail "no SAE pair at non-neighbour nodes in $conf"
master=${far%%:*}
slave=${far##*:}
m_node=$(qw_sae "$master" node)
s_node=$(qw_sae "$slave" node)

# the nodes' own certificates open their manager listeners (metrics; the
# ports of the attacked link's ends in mport, set below)
declare -A mport
metric() { # NODE NAME PEER -> value (0 when absent)
	curl -sS --max-time 10 --cacert "$ca" --cert "$state/pki/node-$1.crt" --key "$state/pki/node-$1.key" \
		"https://127.0.0.1:${mport[$1]}/metrics" 2>/dev/null |
		awk -v m="$2{node=\"$1\",peer=\"$3\"}" '$1 == m { print $2; f = 1 } END { if (!f) print 0 }'
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
step() {
	ok
	echo "  [$((SECONDS - t_start)) s] check $passed" >&2
}
gt() { python3 -c "import sys; sys.exit(0 if float('$1') > float('$2') else 1)"; }
# committed relays from the master's node to the slave's, one line each
relays() {
	grep -E "relay [0-9a-f-]{36} to $s_node: path [^ ]+ \([0-9]+ hops\), [0-9]+ key\(s\) committed" \
		"$state/nodes/$m_node.log" || true
}
path_of() { sed -E 's/.*: path ([^ ]+) .*/\1/'; }
# enc_until NUMBER OUT: enc_keys at the master's node, retried for up to
# 60 s while no path has key (503)
enc_until() {
	local code t0=$SECONDS
	for i in $(seq 120); do
		code=$(sae_curl "$master" -o "$2" -w '%{http_code}' -H 'Content-Type: application/json' \
			-d "{\"number\":$1}" "$m_url/api/v1/keys/$slave/enc_keys") || true
		if [ "$code" = 200 ]; then
			[ "$i" = 1 ] || echo "  enc_keys: 200 after $((i - 1)) refusal(s) in $((SECONDS - t0)) s" >&2
			return 0
		fi
		sleep 0.5
	done
	fail "enc_keys $master -> $slave: HTTP $code $(cat "$2")"
}
# the SAEs' certificates and KME URLs (no node restarts here): looked up
# once, python is slow to start on a loaded machine
m_url=$(qw_url "$m_node")
s_url=$(qw_url "$s_node")
declare -A crt key
for x in "$master" "$slave"; do
	crt[$x]=$(qw_sae "$x" cert)
	key[$x]=$(qw_sae "$x" key)
done
sae_curl() { # SAE ARGS...
	local x=$1
	shift
	curl -sS --max-time 20 --cacert "$ca" --cert "${crt[$x]}" --key "${key[$x]}" "$@"
}
# pair: ten keys from enc_keys at the master's node (more than a stock
# record holds, docs/relay-routing.md "Stock", so it relays), fetched by the
# slave at its node: the same IDs and material
pairs=0
pair() {
	local ids
	enc_until 10 "$dir/enc.json"
	ids=$(json '",".join("{\"key_ID\":\"%s\"}" % k["key_ID"] for k in d["keys"] if len(d["keys"]) == 10)' \
		<"$dir/enc.json")
	[ -n "$ids" ] || fail "10 keys expected: $(cat "$dir/enc.json")"
	sae_curl "$slave" -H 'Content-Type: application/json' -d "{\"key_IDs\":[$ids]}" \
		"$s_url/api/v1/keys/$master/dec_keys" >"$dir/dec.json" || fail "dec_keys at $s_node"
	python3 - "$dir/enc.json" "$dir/dec.json" <<'EOP' || fail "the halves of a relayed key differ ($m_node -> $s_node)"
import json, sys
e, d = (sorted((k["key_ID"], k["key"]) for k in json.load(open(f))["keys"]) for f in sys.argv[1:])
sys.exit(0 if len(e) == 10 and e == d else 1)
EOP
	pairs=$((pairs + 10))
}
# relay_more N: key pairs until the origin has logged more than N relays
relay_more() {
	for _ in $(seq 12); do
		pair
		[ "$(relays | wc -l)" -gt "$1" ] && return 0
	done
	fail "12 requests of 10 keys made no relay $m_node -> $s_node"
}

# every link has key, so that either path can carry the relays (up to 5
# minutes on a loaded machine)
for p in $(qw_pairs "$conf" | awk '$2 == 1 { print $1 }'); do
	qw_wait_keys "${p%%:*}" "${p##*:}" 32 || fail "no keys for $p"
done
t_filled=$SECONDS
step

# relays over one path
relay_more 0
path=$(relays | tail -1 | path_of)
{ [ "${path%%>*}" = "$m_node" ] && [ "${path##*>}" = "$s_node" ]; } || fail "relay path $path"
a=$m_node
b=$(echo "$path" | cut -d'>' -f2)
[ "$b" != "$s_node" ] || fail "relay path $path has no intermediate node"
mport[$a]=$(qw_port "$a" metrics_port)
mport[$b]=$(qw_port "$b" metrics_port)
echo "drill: $master at $m_node -> $slave at $s_node over $path; attacking $a:$b"
step

# the attack on the path's first link
aborts() { grep -cE "ALARM QKD link $2: session [0-9]+ aborted: QBER" "$state/nodes/$1.log" || true; }
alarmed() { [ "$(metric "$a" qwave_qkd_qber_alarm "$b")" = 1 ] && [ "$(metric "$b" qwave_qkd_qber_alarm "$a")" = 1 ]; }
both_aborted() { [ "$(aborts "$a" "$b")" -ge "$1" ] && [ "$(aborts "$b" "$a")" -ge "$2" ]; }
na0=$(aborts "$a" "$b")
nb0=$(aborts "$b" "$a")
t_attack=$SECONDS
"$QWAVE" net attack "$a:$b" --fraction 1 --state-dir "$state" --json >"$dir/attack.json" ||
	fail "net attack $a:$b --fraction 1"
sim=$(json 'd["simulated_by"]' <"$dir/attack.json")
peer=$(json 'd["peer"]' <"$dir/attack.json")
{ [ "$sim:$peer" = "$a:$b" ] || [ "$sim:$peer" = "$b:$a" ]; } || fail "attack: $(cat "$dir/attack.json")"
drilled() { grep -c "QKD link $peer: eavesdropper drill: intercept-resend" "$state/nodes/$sim.log" || true; }
# the link's next session is attacked and aborts at both ends, the alarm is
# up at both ends (the report reaches the node as the session returns)
wait_for 60 both_aborted $((na0 + 1)) $((nb0 + 1)) || fail "no session of $a-$b aborted on the QBER within 60 s"
wait_for 10 alarmed || fail "QBER alarm $a-$b: $(metric "$a" qwave_qkd_qber_alarm "$b") at $a, $(metric "$b" qwave_qkd_qber_alarm "$a") at $b"
t_alarm=$SECONDS
step

# from now on the link's pool and distilled bits must not grow at either end
pa=$(metric "$a" qwave_pool_bits "$b")
pb=$(metric "$b" qwave_pool_bits "$a")
sa=$(metric "$a" qwave_qkd_secret_bits_total "$b")
sb=$(metric "$b" qwave_qkd_secret_bits_total "$a")
na=$(aborts "$a" "$b")
nb=$(aborts "$b" "$a")
nd=$(drilled)

# relays avoid the alarmed link: a change of alarm floods the LSAs at once
# (250 ms tick), so one second after both ends report it every node's
# routing has it; each relay from then on must avoid $a-$b
sleep 1
n1=$(relays | wc -l)
relay_more "$n1"
relay_more "$(relays | wc -l)"
after=$(relays | tail -n +"$((n1 + 1))")
bad=$(echo "$after" | path_of | awk -F'>' -v a="$a" -v b="$b" \
	'{ for (i = 1; i < NF; i++) if (($i == a && $(i + 1) == b) || ($i == b && $(i + 1) == a)) print }')
[ -z "$bad" ] || fail "relay over the alarmed link $a-$b after the alarm: $(echo "$bad" | head -1)"
echo "drill: after the alarm: $(echo "$after" | wc -l) relays, last: $(echo "$after" | tail -1)"
step

# a whole attacked session adds nothing: once the next one has started
# (attacked), end the drill; that session still aborts at both ends
more_drilled() { [ "$(drilled)" -gt "$nd" ]; }
wait_for 45 more_drilled || fail "no further attacked session of $a-$b within 45 s"
"$QWAVE" net attack "$a:$b" --fraction 0 --state-dir "$state" >"$dir/off.txt" || fail "net attack --fraction 0"
grep -q "ended" "$dir/off.txt" || fail "attack off: $(cat "$dir/off.txt")"
wait_for 45 both_aborted $((na + 1)) $((nb + 1)) || fail "the attacked session of $a-$b did not abort in 45 s"
# no distilled bit at either end; the pools do not grow (a KM link
# resynchronisation on a loaded machine may drop pool bits, never add any)
same() { # NODE PEER BEFORE
	local now
	now=$(metric "$1" qwave_qkd_secret_bits_total "$2")
	[ "$now" = "$3" ] || fail "$1 distilled bits with $2 under attack: $3 -> $now"
}
no_growth() { # NODE PEER BEFORE
	local now
	now=$(metric "$1" qwave_pool_bits "$2")
	gt "$now" "$3" && fail "$1's pool with $2 grew under attack: $3 -> $now"
	return 0
}
same "$a" "$b" "$sa"
same "$b" "$a" "$sb"
no_growth "$a" "$b" "$pa"
no_growth "$b" "$a" "$pb"
step

qw_net_down
step
echo "drill_reroute: $pairs relayed keys equal at both ends; $((t_filled - t_start)) s to fill the pools," \
	"alarm at both ends $((t_alarm - t_attack)) s after the attack, $((SECONDS - t_start)) s in all"
echo "drill_reroute: $passed checks passed"
