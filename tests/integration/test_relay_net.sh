#!/usr/bin/env bash
# Keys relayed between SAEs at non-neighbour nodes (docs/relay-routing.md).
# examples/chain6.conf: sae-first gets keys for sae-last over 5 hops, the
# origin node logs the relay with its path, dec_keys at the last node
# returns the same material, a second dec_keys is refused (400). Then
# examples/metro-ring.conf: a storm of key pairs between two SAEs whose
# nodes are not neighbours; a node on the relay path is killed with
# SIGKILL mid-storm and stays down: the requests go on over another path
# (the origin logs the new path), every key the master got is fetched by
# the slave with equal material and only once (tests/integration/chaos.py).
# net down leaves no qwaved running.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
t_start=$SECONDS

# relay_lines NODE: the origin's relay lines (docs: one info line per relay)
relay_lines() { grep -E 'relay [0-9a-f-]{36} to ' "$state/nodes/$1.log" || true; }
# enc_until MASTER SLAVE NUMBER OUT: enc_keys at the master's node, retried
# for up to 60 s while the relay path has no key yet (503)
enc_until() {
	local url code
	url=$(qw_url "$(qw_sae "$1" node)")
	for _ in $(seq 120); do
		code=$(qw_curl "$1" -o "$4" -w '%{http_code}' -H 'Content-Type: application/json' \
			-d "{\"number\":$3}" "$url/api/v1/keys/$2/enc_keys") || true
		[ "$code" = 200 ] && return 0
		sleep 0.5
	done
	fail "enc_keys $1 -> $2: HTTP $code $(cat "$4")"
}

# ---- chain6: 5 hops ----
qw_net_up "$src/examples/chain6.conf"
first_node=$(qw_sae sae-first node)
last_node=$(qw_sae sae-last node)
[ "$(qw_nodes | wc -l)" = 6 ] || fail "chain6 has $(qw_nodes | wc -l) nodes"
# the relay's status: keys on the path's narrowest link (up to 5 minutes on
# a loaded machine for the five links' first sessions)
qw_wait_keys sae-first sae-last 4 || fail "no keys on the path from $first_node to $last_node"
enc_until sae-first sae-last 3 "$dir/enc.json"
[ "$(json 'len(d["keys"])' <"$dir/enc.json")" = 3 ] || fail "3 keys expected: $(cat "$dir/enc.json")"
ids=$(json '",".join("{\"key_ID\":\"%s\"}" % k["key_ID"] for k in d["keys"])' <"$dir/enc.json")
qw_curl sae-last -H 'Content-Type: application/json' -d "{\"key_IDs\":[$ids]}" \
	"$(qw_url "$last_node")/api/v1/keys/sae-first/dec_keys" >"$dir/dec.json" || fail "dec_keys at $last_node"
[ "$(json '[(k["key_ID"], k["key"]) for k in d["keys"]]' <"$dir/dec.json")" = \
	"$(json '[(k["key_ID"], k["key"]) for k in d["keys"]]' <"$dir/enc.json")" ] ||
	fail "the halves differ after 5 hops"
ok
id0=$(json 'd["keys"][0]["key_ID"]' <"$dir/enc.json")
code=$(qw_curl sae-last -o "$dir/out" -w '%{http_code}' \
	"$(qw_url "$last_node")/api/v1/keys/sae-first/dec_keys?key_ID=$id0") || true
{ [ "$code" = 400 ] && grep -q "not found" "$dir/out"; } || fail "second dec_keys: HTTP $code $(cat "$dir/out")"
ok
line=$(relay_lines "$first_node" | grep " to $last_node: " | tail -1)
echo "chain6: $line"
echo "$line" | grep -q "(5 hops)" || fail "no 5-hop relay logged at $first_node: '$line'"
path=$(echo "$line" | sed -E 's/.*: path ([^ ]+) .*/\1/')
[ "$(echo "$path" | tr '>' '\n' | sort -u | wc -l)" = 6 ] || fail "path $path is not 6 distinct nodes"
{ [ "${path%%>*}" = "$first_node" ] && [ "${path##*>}" = "$last_node" ]; } || fail "path $path"
ok
qw_net_down
rm -rf "$state"
ok
t_chain=$SECONDS

# ---- metro ring: a node on the path killed mid-storm ----
conf=$src/examples/metro-ring.conf
qw_net_up "$conf"
far=$(qw_pairs "$conf" | awk '$2 == 0 { print $1; exit }')
[ -n "$far" ] || fail "no SAE pair at non-neighbour nodes in $conf"
master=${far%%:*}
slave=${far##*:}
m_node=$(qw_sae "$master" node)
s_node=$(qw_sae "$slave" node)
# every link has key (so that both paths can carry the relay), up to
# 5 minutes on a loaded machine
for p in $(qw_pairs "$conf" | awk '$2 == 1 { print $1 }'); do
	qw_wait_keys "${p%%:*}" "${p##*:}" 32 || fail "no keys for $p"
done
t_filled=$SECONDS
enc_until "$master" "$slave" 1 "$dir/first.json"
QW_CHAOS_MIN_REQUESTS=50 QW_CHAOS_MIN_KEYS=50 QW_CHAOS_MIN_SHARE=1 \
	python3 "$src/tests/integration/chaos.py" "$dir/up.json" "$state" "$dir/chaos" "$dir/stop" 40 \
	"$master:$slave" >"$dir/chaos.out" 2>"$dir/chaos.err" &
client=$!
# shellcheck disable=SC2317 # called by the EXIT trap (lib.sh)
qw_cleanup_hook() { touch "$dir/stop"; kill "$client" 2>/dev/null; }
sleep 3
before=$(relay_lines "$m_node" | grep -c " to $s_node: ")
[ "$before" -ge 1 ] || fail "no relay $m_node -> $s_node logged"
path=$(relay_lines "$m_node" | grep " to $s_node: " | tail -1 | sed -E 's/.*: path ([^ ]+) .*/\1/')
victim=$(echo "$path" | cut -d'>' -f2)
[ "$victim" != "$s_node" ] || fail "path $path has no intermediate node"
echo "metro ring: $master at $m_node -> $slave at $s_node over $path; killing $victim"
qw_kill_node "$victim"
sleep 8
touch "$dir/stop"
rc=0
wait "$client" || rc=$?
qw_cleanup_hook() { :; }
cat "$dir/chaos.out"
[ "$rc" = 0 ] || fail "chaos.py: $(sed 's/^FAIL: //' "$dir/chaos.err")"
ok
after=$(relay_lines "$m_node" | grep " to $s_node: " | tail -n +"$((before + 1))")
[ -n "$after" ] || fail "no relay after $victim was killed"
echo "$after" | grep -qv ">$victim>" || fail "relays after the kill still go over $victim"
echo "metro ring: after the kill: $(echo "$after" | tail -1)"
ok

qw_net_down
ok
echo "relay_net: chain6 $((t_chain - t_start)) s; metro ring $((t_filled - t_chain)) s to fill the pools," \
	"$((SECONDS - t_filled)) s storm and checks; $((SECONDS - t_start)) s in all"
echo "relay_net: $passed passed, 0 failed"
