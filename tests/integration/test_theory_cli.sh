#!/usr/bin/env bash
# qwave theory keyrate --pulses: the finite key for a block of N pulses with
# the protocol optimised for N. The JSON is one object whose finite rate is
# positive and below the asymptotic rates (the same protocol's limit and the
# GLLP key rate); bad values are usage errors (exit 2).
set -euo pipefail
: "${QWAVE:?QWAVE must point to the qwave binary}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$QWAVE" theory keyrate --distance 50 --pulses 1e9 --json >"$dir/out" ||
	fail "theory keyrate --pulses 1e9: exit $?"
python3 - "$dir/out" <<'PY' || fail "theory keyrate --pulses 1e9 --json: bad figures"
import json, math, sys
o = json.load(open(sys.argv[1]))
assert isinstance(o, dict)
r = o["finite_key_rate"]
assert math.isfinite(r) and r > 0, r
assert r < o["finite_rate_limit"], (r, o["finite_rate_limit"])
assert r < o["key_rate"], (r, o["key_rate"])
assert o["finite_pulses"] == 1e9 and o["parameters"]["pulses"] == 1e9
# secret bits are the rate times the pulses (rate = length / pulses)
assert o["finite_secret_bits"] == round(r * 1e9), (o["finite_secret_bits"], r)
p = o["finite_protocol"]
assert len(p["mu"]) == 3 and abs(sum(p["p"]) - 1) < 1e-9 and 0 < p["q_x"] < 1
PY

for bad in 0 -5 abc 1.5 1e19 ""; do
	rc=0
	"$QWAVE" theory keyrate --distance 50 --pulses "$bad" >"$dir/out" 2>"$dir/err" || rc=$?
	[ "$rc" = 2 ] || fail "--pulses '$bad': exit $rc, expected 2"
	[ "$(grep -c '^qwave: error:' "$dir/err")" = 1 ] || fail "--pulses '$bad': stderr: $(cat "$dir/err")"
	[ ! -s "$dir/out" ] || fail "--pulses '$bad': usage error wrote to stdout"
done
rc=0
"$QWAVE" theory keyrate --distance 50 --pulses 1e9 --block-bits 1e6 >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--pulses with --block-bits: exit $rc, expected 2"
echo "test_theory_cli: ok"
