#!/bin/bash
# Over-the-air refill with the Key Service Center as the access point
# (docs/ksc.md "Air interface", docs/plkg.md 12): a real qwksc with an [air]
# listener on loopback; a terminal registered, personalised and filled
# offline by it refills over TCP with `qwave terminal refill --ap`. Checks:
# the balance grows by exactly the delivered bits; the KSC's key list and
# audit log show the key generated for and distributed to that device; the
# first refill's slots advance the KSC's slot cursor and are refused when a
# copy of the medium taken before names them again; the second refill runs
# on the carried pool with a different PLKG key; an unregistered terminal
# gets nothing; the audit chain stays intact.
set -u
. "$(cd "$(dirname "$0")/../.." && pwd)/examples/ksc/common.sh"
ksc_up "
[air]
listen = 127.0.0.1:0" >/dev/null
AIR=$(jq -r .air_port "$W/ksc-data/status.json")
[ -n "$AIR" ] && [ "$AIR" != null ] && [ "$AIR" -gt 0 ] || die "no air_port in status.json"
principal aud
as root ksc admin add --id aud --role auditor >/dev/null || die "auditor"
device_setup tf-7 tf-card 16384 8192 >/dev/null
D=$W/dev-tf-7
T() { timeout 120 "$QWAVE" terminal "$@"; }
audit() { as aud ksc audit list --json; }

# the medium as it was before any refill (for the replay below)
cp -a "$D" "$W/dev-copy"

# refill 1: bootstraps from 6 pre-filled slots
T refill --dir "$D" --ap "127.0.0.1:$AIR" --bits 512 --force --json >"$W/r1.json" ||
	die "refill 1 from the KSC: $(cat "$W/ksc.log" | tail -3)"
[ "$(jq -r .delivered_bits "$W/r1.json")" = 512 ] || die "refill 1 delivered"
[ "$(jq -r .balance_bits "$W/r1.json")" = 512 ] || die "refill 1 balance"
[ "$(jq -r .slot_bits_used "$W/r1.json")" = 1536 ] || die "refill 1 slots"
[ "$(jq -r .plkg_bits_carried "$W/r1.json")" = 1536 ] || die "refill 1 carried nothing"
# the KSC generated the key for this device and it was distributed to it
audit >"$W/a1.json" || die "audit list"
KEY=$(jq -r '[.records[] | select(.action == "key.distribute" and .actor == "tf-7")] | last | .object' "$W/a1.json")
[ -n "$KEY" ] && [ "$KEY" != null ] || die "no key.distribute by tf-7 in the audit log"
jq -e --arg k "$KEY" '.records[] | select(.action == "key.generate" and .object == $k and
	.detail.owner == "tf-7" and .detail.size_bits == 512 and .detail.via == "air")' \
	"$W/a1.json" >/dev/null || die "no key.generate of $KEY for tf-7"
jq -e '.records[] | select(.action == "air.slots" and .object == "tf-7" and
	(.detail.slots | length) == 6)' "$W/a1.json" >/dev/null || die "no air.slots record"
as op ksc key show --id "$KEY" --json >"$W/k1.json" || die "key show"
[ "$(jq -r .state "$W/k1.json")" = distributed ] || die "key state $(jq -r .state "$W/k1.json")"
[ "$(jq -r .owner "$W/k1.json")" = tf-7 ] || die "key owner"
[ "$(jq -r .size_bits "$W/k1.json")" = 512 ] || die "key size"
grep -q "air .*refill for 'tf-7': key $KEY, 512 bits delivered" "$W/ksc.log" || die "KSC log line"
# the KSC's view of the device: 6 slots fewer outstanding
[ "$(as op ksc device show --id tf-7 --json | jq -r .outstanding_bits)" = $((8192 - 1536)) ] ||
	die "the KSC did not advance the device's slots"

# refill 2: on the pool carried from refill 1, with a fresh PLKG key
T refill --dir "$D" --ap "127.0.0.1:$AIR" --bits 256 --force --json >"$W/r2.json" ||
	die "refill 2 from the KSC"
[ "$(jq -r .delivered_bits "$W/r2.json")" = 256 ] || die "refill 2 delivered"
[ "$(jq -r .balance_bits "$W/r2.json")" = $((512 + 256)) ] || die "refill 2 balance"
[ "$(jq -r .slot_bits_used "$W/r2.json")" = 0 ] || die "refill 2 spent slots"
f1=$(jq -r .plkg_key_sm3_prefix "$W/r1.json"); f2=$(jq -r .plkg_key_sm3_prefix "$W/r2.json")
[ ${#f1} = 16 ] && [ "$f1" != "$f2" ] || die "PLKG key fingerprints: '$f1' '$f2'"
[ "$(as op ksc device show --id tf-7 --json | jq -r .outstanding_bits)" = $((8192 - 1536)) ] ||
	die "a carried refill spent slots at the KSC"

# refill 3: a still terminal, with the access point's random-weights remedy
T refill --dir "$D" --ap "127.0.0.1:$AIR" --bits 256 --static --force --json >"$W/r2s.json" ||
	die "static refill from the KSC"
[ "$(jq -r .remedy "$W/r2s.json")" = true ] || die "static refill: no remedy"
[ "$(jq -r .delivered_bits "$W/r2s.json")" = 256 ] || die "static refill delivered"
[ "$(jq -r .balance_bits "$W/r2s.json")" = $((512 + 256 + 256)) ] || die "static refill balance"
[ "$(jq -r .slot_bits_used "$W/r2s.json")" = 0 ] || die "static refill spent slots"

# replay: the medium copied before refill 1 names the same 6 slots again
T refill --dir "$W/dev-copy" --ap "127.0.0.1:$AIR" --bits 1024 --force --json >"$W/r3.json" 2>"$W/r3.err" &&
	die "replayed slots accepted"
grep -q "refused the named pre-filled slots" "$W/r3.err" || die "replay: $(cat "$W/r3.err")"
[ "$(T balance --dir "$W/dev-copy" --json | jq -r .balance_bits)" = 0 ] || die "replay added keys"
audit >"$W/a2.json" || die "audit list 2"
jq -e '.records[] | select(.action == "air.refuse" and .object == "tf-7" and
	.detail.reason == "a named slot was spent before")' "$W/a2.json" >/dev/null ||
	die "replay not audited as refused"

# an unregistered terminal: a medium naming a device the KSC does not know
cp -a "$W/dev-copy" "$W/dev-ghost"
jq '.id = "ghost-1"' "$W/dev-copy/device.json" >"$W/dev-ghost/device.json"
PFG=$(T balance --dir "$W/dev-ghost" --json | jq -r .prefilled_bits)
T refill --dir "$W/dev-ghost" --ap "127.0.0.1:$AIR" --bits 1024 --force >/dev/null 2>"$W/g.err" &&
	die "unknown device refilled"
grep -q "refused device 'ghost-1'" "$W/g.err" || die "unknown device: $(cat "$W/g.err")"
[ "$(T balance --dir "$W/dev-ghost" --json | jq -r .balance_bits)" = 0 ] || die "ghost got keys"
[ "$(T balance --dir "$W/dev-ghost" --json | jq -r .prefilled_bits)" = "$PFG" ] ||
	die "ghost spent slots before being refused"
audit >"$W/a3.json" || die "audit list 3"
jq -e '.records[] | select(.action == "air.refuse" and .object == "ghost-1" and
	.detail.reason == "unknown device")' "$W/a3.json" >/dev/null || die "ghost not audited"
# the KSC delivered exactly three keys over the air, all to tf-7, one with
# the remedy
[ "$(jq '[.records[] | select(.action == "key.distribute" and .detail.via == "air" and
	.detail.device == "tf-7")] | length' "$W/a3.json")" = 3 ] || die "keys distributed over the air"
[ "$(jq '[.records[] | select(.action == "key.distribute" and .detail.remedy == true)] | length' "$W/a3.json")" = 1 ] ||
	die "the remedy refill is not recorded"
as aud ksc audit verify >/dev/null || die "audit chain"
echo "test_ksc_refill: ok"
