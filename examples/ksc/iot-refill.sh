#!/bin/bash
# Scenario (white paper chapter 5): an IoT electricity meter whose secure
# chip holds a small balance of quantum keys. Every meter reading is sent
# after the meter authenticates to the Key Service Center by
# challenge-response with a pre-filled key (HMAC-SM3), spending 256 bits
# each time. When its balance runs low the meter reports it; the utility's
# operator sees the low balance and issues a refill image, which the meter
# imports. Run: examples/ksc/iot-refill.sh [READINGS]
. "$(dirname "$0")/common.sh"
readings=${1:-14}
ksc_up

say "meter-0042: IoT chip, quota 4096 bits, first fill 2048 bits (8 authentications)"
device_setup meter-0042 iot-chip 4096 2048
refills=0
for r in $(seq "$readings"); do
	bal=$(asdev meter-0042 balance --json | jq -r .balance_bits)
	if [ "$bal" -lt 768 ]; then
		# fewer than three authentications left: report, refill
		asdev meter-0042 balance --report >/dev/null || die "balance report"
		reported=$(as op ksc device show --id meter-0042 --json | jq -r .reported_balance_bits)
		printf "reading %2d: balance %s bits, reported to the KSC (%s bits) -> refill\n" "$r" "$bal" "$reported"
		as op ksc device fill --id meter-0042 --bits 2048 --out "$W/refill$r.img" >/dev/null ||
			die "refill"
		asdev meter-0042 import --image "$W/refill$r.img" >/dev/null || die "import refill"
		refills=$((refills + 1))
		echo "          refilled: $(asdev meter-0042 balance --json | jq -r .balance_bits) bits"
	fi
	asdev meter-0042 auth --method hmac-sm3 --json >"$W/auth.json" || die "authentication $r"
	[ "$(jq -r .authenticated "$W/auth.json")" = true ] || die "not authenticated"
	printf 'reading %2d: authenticated (HMAC-SM3), %4d kWh sent, balance %s bits\n' "$r" $((1000 + r * 7)) \
		"$(asdev meter-0042 balance --json | jq -r .balance_bits)"
done

say "summary"
[ "$refills" -ge 1 ] || die "no refill happened"
"$QWAVE" device import --dir "$W/dev-meter-0042" --image "$W/meter-0042.img" >/dev/null 2>&1 &&
	die "an old image was imported twice"
echo "an old image is refused by the meter (batch already imported)"
as op ksc device show --id meter-0042 --json | jq -c '{status, quota_bits, filled_bits, outstanding_bits}'
n_ok=$(as root ksc audit list --json | jq '[.records[] | select(.action == "auth.success")] | length')
[ "$n_ok" = "$readings" ] || die "$n_ok successful authentications, expected $readings"
echo "$readings readings authenticated, $refills refill(s), audit log intact: $(as root ksc audit verify --json | jq -r .intact)"
echo "iot-refill: ok"
