#!/bin/bash
# qwave terminal: a terminal personalised and filled by a real Key Service
# Center (qwksc over mutual TLS, examples/ksc/common.sh), then refilled over
# the air (in-process access point over a socketpair, docs/plkg.md 12):
# threshold logic, balance growth by exactly the delivered bits, keys leaving
# the balance on use, pre-filled slots spent per refill, a refill from a
# separate access point process over TCP, none from a different channel
# realisation, a tampered balance file refused; only the first refill spends
# pre-filled slots, later ones run on the pool the previous refill carried
# forward from its PLKG key, and a carried pool missing at either end (or
# spent by a failed refill) falls back to slots.
set -u
. "$(cd "$(dirname "$0")/../.." && pwd)/examples/ksc/common.sh"
ksc_up >/dev/null
device_setup tf-9 tf-card 16384 8192 >/dev/null
D=$W/dev-tf-9
T() { "$QWAVE" terminal "$@"; }

[ "$(T balance --dir "$D" --json | jq -r .balance_bits)" = 0 ] || die "fresh balance not 0"
[ "$(T balance --dir "$D" --json | jq -r .prefilled_bits)" = 8192 ] || die "prefilled"
T refill --dir "$D" --bits 1024 --threshold 512 --json >"$W/r1.json" || die "refill 1"
[ "$(jq -r .delivered_bits "$W/r1.json")" = 1024 ] || die "delivered"
[ "$(jq -r .balance_bits "$W/r1.json")" = 1024 ] || die "balance after refill"
[ "$(jq -r .frames_sent "$W/r1.json")" -le 5 ] || die "frames"
[ "$(T balance --dir "$D" --json | jq -r .prefilled_bits)" = $((8192 - 1536)) ] || die "slots not spent"
[ "$(jq -r .slot_bits_used "$W/r1.json")" = 1536 ] || die "first refill: slot bits"
[ "$(jq -r .plkg_bits_carried "$W/r1.json")" = 1536 ] || die "first refill: nothing carried"
[ "$(stat -c %a "$D/carry.sealed")" = 600 ] || die "carry file mode"
[ "$(stat -c %a "$D/ap-carry.sealed")" = 600 ] || die "AP carry file mode"
PF=$((8192 - 1536))
# at the threshold: no refill
T refill --dir "$D" --threshold 1024 --json >"$W/r2.json" || die "refill 2"
[ "$(jq -r .refilled "$W/r2.json")" = false ] || die "refilled above the threshold"
# below it: a refill adds exactly what it delivered
T refill --dir "$D" --bits 512 --threshold 1025 --json >"$W/r3.json" || die "refill 3"
[ "$(jq -r .balance_bits "$W/r3.json")" = $((1024 + $(jq -r .delivered_bits "$W/r3.json"))) ] ||
	die "balance growth"
# the second refill ran on the carried pool: no pre-filled slot spent
[ "$(jq -r .delivered_bits "$W/r3.json")" = 512 ] || die "refill 3 delivered"
[ "$(jq -r .slot_bits_used "$W/r3.json")" = 0 ] || die "second refill spent slots"
[ "$(jq -r .plkg_bits_carried "$W/r3.json")" = 1536 ] || die "second refill carried nothing"
[ "$(T balance --dir "$D" --json | jq -r .prefilled_bits)" = $PF ] || die "carried refill spent slots"
T use --dir "$D" --bits 256 --out "$W/k.hex" --json >"$W/u.json" || die "use"
[ "$(jq -r .balance_bits "$W/u.json")" = 1280 ] || die "balance after use"
[ "$(stat -c %a "$D/balance.sealed")" = 600 ] || die "balance file mode"
[ "$(stat -c %a "$W/k.hex")" = 600 ] || die "key file mode"
[ "$(tr -d '\n' <"$W/k.hex" | wc -c)" = 64 ] || die "key length"
T use --dir "$D" --bits 8192 >/dev/null 2>&1 && die "used more than the balance"
B=1280
# the carried pool deleted at the access point's end, then at the terminal's:
# each time the refill falls back to pre-filled slots and succeeds
for f in ap-carry.sealed carry.sealed; do
	rm "$D/$f"
	T refill --dir "$D" --force --bits 256 --json >"$W/rf.json" || die "fallback refill ($f)"
	[ "$(jq -r .slot_bits_used "$W/rf.json")" = 1536 ] || die "no fallback to slots ($f)"
	PF=$((PF - 1536)); B=$((B + 256))
	[ "$(jq -r .balance_bits "$W/rf.json")" = $B ] || die "fallback balance ($f)"
	[ "$(T balance --dir "$D" --json | jq -r .prefilled_bits)" = $PF ] || die "fallback slots ($f)"
done
# a separate access point process over TCP: the same channel realisation
# gives a refill, another realisation (the wrong place) gives nothing
timeout 120 "$QWAVE" terminal ap --listen 0 --air-seed 500 --dir "$D" --count 3 >"$W/ap.out" 2>"$W/ap.err" &
appid=$!
for _ in $(seq 50); do grep -q listening "$W/ap.out" && break; sleep 0.1; done
port=$(sed -n 's/^listening 127.0.0.1://p' "$W/ap.out")
[ -n "$port" ] || die "access point did not start"
T refill --dir "$D" --force --bits 1024 --ap "127.0.0.1:$port" --air-seed 500 --json >"$W/r4.json" ||
	die "TCP refill"
B=$((B + 1024))
[ "$(jq -r .balance_bits "$W/r4.json")" = $B ] || die "TCP refill balance"
[ "$(jq -r .slot_bits_used "$W/r4.json")" = 0 ] || die "TCP refill spent slots (carried pool offered)"
T refill --dir "$D" --force --bits 1024 --ap "127.0.0.1:$port" --air-seed 7 --json >/dev/null 2>&1 &&
	die "a refill from another channel realisation succeeded"
[ "$(T balance --dir "$D" --json | jq -r .balance_bits)" = $B ] || die "failed refill added keys"
# the failed refill spent the carried pool at both ends: the next bootstraps
[ ! -e "$D/carry.sealed" ] && [ ! -e "$D/ap-carry.sealed" ] || die "carried pool kept after a failure"
T refill --dir "$D" --force --bits 1024 --ap "127.0.0.1:$port" --air-seed 502 --json >"$W/r5.json" ||
	die "TCP refill after a failure"
[ "$(jq -r .slot_bits_used "$W/r5.json")" = 1536 ] || die "no bootstrap from slots after a failure"
PF=$((PF - 1536)); B=$((B + 1024))
[ "$(jq -r .balance_bits "$W/r5.json")" = $B ] || die "balance after the bootstrap"
[ "$(T balance --dir "$D" --json | jq -r .prefilled_bits)" = $PF ] || die "slots after the bootstrap"
wait "$appid" && die "the access point reported no failure for the wrong channel"
grep -q "refill 1: delivered 1024 bits.*pool carried" "$W/ap.out" || die "AP log"
grep -q "refill 3: delivered 1024 bits.*pool pre-filled slots" "$W/ap.out" || die "AP log (bootstrap)"
# an altered balance file is refused
printf 'x' | dd of="$D/balance.sealed" bs=1 seek=20 conv=notrunc 2>/dev/null
T balance --dir "$D" >/dev/null 2>&1 && die "altered balance file accepted"
rc=0; T refill --dir "$D" --bits 100 >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || die "bad --bits not a usage error"
echo "test_terminal_refill: ok"
