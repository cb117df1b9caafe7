#!/bin/bash
# The Key Service Center's three application scenarios end to end
# (examples/ksc/): an encrypted call between two terminals (one key per
# call), an IoT meter refilled with keys, and a disaster-recovery backup
# with keys rotated every MB from a QKD network (two qwaved nodes; most of
# this test's time is the link distilling its first keys).
set -u
src=${QW_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export QWAVE=${QWAVE:-$src/build/qwave}
fails=0
for s in encrypted-call iot-refill dr-backup; do
	if out=$(bash "$src/examples/ksc/$s.sh" 2>&1) && grep -q "^$s: ok$" <<<"$out"; then
		echo "ok   $s"
	else
		echo "FAIL $s"; echo "$out" | tail -20; fails=$((fails + 1))
	fi
done
echo "$fails failure(s)"
[ "$fails" = 0 ]
