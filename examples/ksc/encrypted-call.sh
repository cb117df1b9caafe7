#!/bin/bash
# Scenario (white paper chapter 5, SYSTEM.md section 8): an encrypted call
# between two mobile terminals, one key per call. Each phone's SIM was
# filled offline with 512 Kbit of key; for every call the VoIP service asks
# the Key Service Center for a session key, which reaches each phone wrapped
# under that phone's own pre-filled key - the KSC never sends it in clear
# and never logs it. The phones encrypt the call's voice frames with it
# (SM4-CTR + HMAC-SM3). Run: examples/ksc/encrypted-call.sh
. "$(dirname "$0")/common.sh"
ksc_up

say "two phones with SIM cards, filled at the service point"
device_setup alice-phone sim 524288 524288
device_setup bob-phone sim 524288 524288
principal voip
as op ksc app add --id voip >/dev/null || die "voip app"
for p in alice-phone bob-phone; do # the subscribers of the VoIP service
	as op ksc app grant --id voip --device $p >/dev/null || die "grant $p"
done

head -c 96000 /dev/urandom >"$W/voice.raw" # 6 s of 16 kB/s voice frames
prev=
for call in 1 2; do
	say "call $call: alice -> bob"
	as voip ksc call POST /sessions '{"a":"alice-phone","b":"bob-phone"}' >"$W/call$call.json" ||
		die "session key"
	echo "session $(jq -r .session_id "$W/call$call.json"), key source $(jq -r .source "$W/call$call.json")"
	"$QWAVE" device unwrap --dir "$W/dev-alice-phone" --from "$W/call$call.json" --out "$W/a$call.key" >/dev/null ||
		die "alice unwraps"
	"$QWAVE" device unwrap --dir "$W/dev-bob-phone" --from "$W/call$call.json" --out "$W/b$call.key" >/dev/null ||
		die "bob unwraps"
	cmp -s "$W/a$call.key" "$W/b$call.key" || die "the phones hold different keys"
	echo "both phones hold the same 256-bit session key (SM3 prefix $("$QWAVE" crypto hash --alg sm3 --in "$W/a$call.key" | cut -c1-16))"
	"$QWAVE" crypto encrypt --alg sm4-ctr-hmac-sm3 --key-file "$W/a$call.key" --in "$W/voice.raw" --out "$W/voice$call.enc" ||
		die "alice encrypts"
	"$QWAVE" crypto decrypt --alg sm4-ctr-hmac-sm3 --key-file "$W/b$call.key" --in "$W/voice$call.enc" --out "$W/voice$call.dec" ||
		die "bob decrypts"
	cmp -s "$W/voice.raw" "$W/voice$call.dec" || die "bob hears something else"
	echo "bob decrypted alice's $(stat -c %s "$W/voice.raw") bytes of voice frames"
	[ -n "$prev" ] && cmp -s "$prev" "$W/a$call.key" && die "two calls share a key"
	prev=$W/a$call.key
	grep -qi "$(cat "$W/a$call.key")" "$W/ksc.log" "$W"/ksc-data/ksc.db* && die "the session key is in the KSC's files"
done

say "one key per call; the KSC's log and database never held a session key"
for p in alice-phone bob-phone; do
	echo "$p: $(asdev $p balance --json | jq -r .balance_bits) bits of pre-filled key left"
done
as root ksc audit verify >/dev/null || die "audit"
echo "audit log intact: $(as root ksc audit list --json | jq '[.records[] | select(.action == "session.create")] | length') session.create records, no keys in them"
echo "encrypted-call: ok"
