#!/usr/bin/env bash
# Chaos: SAE clients ask for thousands of key pairs (enc_keys at the
# master's KME, dec_keys at the slave's) while random nodes are killed with
# SIGKILL and restarted on their own configuration and data directory.
# Then (tests/integration/chaos.py): every key pair fetched by both SAEs
# has equal halves, no key ID is answered twice by enc_keys, none is
# delivered twice by dec_keys (a second dec_keys of every key is refused),
# at least 90% of the keys the masters got reached the slaves, and every
# failed request failed with 400, 503 or a connection error - never with
# other keys. Net down leaves no qwaved running.
#
# Network: examples/metro-ring.conf (four nodes, five links). SAE pairs:
# every pair of its SAEs in both directions, 12 in all, the two pairs whose
# nodes share no link relayed hop by hop.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
STORM_S=${QW_CHAOS_SECONDS:-25}
t_start=$SECONDS

conf=$src/examples/metro-ring.conf
qw_net_up "$conf"
qw_pairs "$conf" >"$dir/pairs"
near=$(awk '$2 == 1 { print $1 }' "$dir/pairs")
far=$(awk '$2 == 0 { print $1 }' "$dir/pairs")
{ [ -n "$near" ] && [ -n "$far" ]; } || fail "$conf: SAE pairs at neighbour and non-neighbour nodes expected"
pairs="$near $far"
echo "chaos: metro-ring.conf, $(qw_nodes | wc -l) nodes, pairs: $(echo "$pairs" | xargs)"

# every link's pool has keys before the storm (up to 120 s)
for p in $near; do
	qw_wait_keys "${p%%:*}" "${p##*:}" 32 120 || fail "no keys for $p"
done
ok
t_filled=$SECONDS

# shellcheck disable=SC2086 # one argument per pair
python3 "$src/tests/integration/chaos.py" "$dir/up.json" "$state" "$dir/chaos" "$dir/stop" \
	"$((STORM_S + 300))" $pairs >"$dir/chaos.out" 2>"$dir/chaos.err" &
client=$!
# shellcheck disable=SC2317 # called by the EXIT trap (lib.sh)
qw_cleanup_hook() { touch "$dir/stop"; kill "$client" 2>/dev/null; }

# the chaos: a random node (sometimes two) is killed, stays down 0 to 2 s
# and restarts, then 1 to 3 s of requests with every node up; for
# STORM_S seconds, and at least three times however slow the machine
kills=0
rounds=0
mapfile -t nodes < <(qw_nodes)
storm_end=$((SECONDS + STORM_S))
sleep 2
while [ "$SECONDS" -lt $((storm_end - 3)) ] || [ $rounds -lt 3 ]; do
	victims=${nodes[RANDOM % ${#nodes[@]}]}
	if [ $((RANDOM % 4)) = 0 ]; then
		other=${nodes[RANDOM % ${#nodes[@]}]}
		[ "$other" != "$victims" ] && victims="$victims $other"
	fi
	for v in $victims; do
		qw_kill_node "$v"
		kills=$((kills + 1))
	done
	rounds=$((rounds + 1))
	sleep "$((RANDOM % 2)).$((RANDOM % 10))"
	for v in $victims; do qw_start_node "$v"; done
	echo "chaos: $((SECONDS - t_filled)) s: killed and restarted $victims" >&2
	sleep "$((1 + RANDOM % 3))"
done
touch "$dir/stop"
t_stormed=$SECONDS
rc=0
wait "$client" || rc=$?
qw_cleanup_hook() { :; }
cat "$dir/chaos.out"
[ "$rc" = 0 ] || fail "chaos.py: $(sed 's/^FAIL: //' "$dir/chaos.err")"
ok

qw_net_down
ok
echo "chaos: $kills kills; $((t_filled - t_start)) s to fill the pools, $((t_stormed - t_filled)) s of storm," \
	"$((SECONDS - t_stormed)) s of checks and net down, $((SECONDS - t_start)) s in all"
echo "chaos: $passed passed, 0 failed"
