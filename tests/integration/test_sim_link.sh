#!/usr/bin/env bash
# qwave sim link from the command line: an honest link gives equal keys with
# a positive secret length (asymptotic bounds on a short run; finite-key
# bounds at the issue's headline setting, 50 km and 1e9 pulses; Cascade and
# LDPC, socketpair and loopback TCP), key_rate never exceeds key_rate_bound
# and is close to finite_key_theory, the JSON output parses and carries every
# documented field, an intercept-resend Eve on all pulses aborts with the
# QBER reason, and bad options exit 2.
set -euo pipefail
: "${QWAVE:?QWAVE must point to the qwave binary}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
checks=0

run() { # run ARGS...: sets rc, output in $dir/out and $dir/err
	rc=0
	"$QWAVE" sim link "$@" >"$dir/out" 2>"$dir/err" </dev/null || rc=$?
	checks=$((checks + 1))
}

# field NAME: a value of the JSON object in $dir/out
field() { python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[sys.argv[1]]))' "$1" <"$dir/out"; }

# Human output: a short honest run at 25 km.
run --distance 25 --pulses 1e8 --block-bits 5e4 --bounds asymptotic --seed 11
[ "$rc" = 0 ] || fail "honest run: exit $rc: $(cat "$dir/err")"
grep -q '^keys equal        yes' "$dir/out" || fail "honest run: keys not equal: $(cat "$dir/out")"
grep -q '^QBER  *[0-9.]* % ' "$dir/out" || fail "honest run: no QBER line with unit"
grep -q '^secret .* bits' "$dir/out" || fail "honest run: no secret line"
grep -q 'bit/pulse' "$dir/out" || fail "honest run: no key rate with unit"

# --json: exactly one object with the documented fields, equal keys, key > 0.
for ec in cascade ldpc; do
	run --distance 25 --pulses 1e8 --block-bits 5e4 --bounds asymptotic --seed 12 --ec "$ec" --json
	[ "$rc" = 0 ] || fail "json run ($ec): exit $rc: $(cat "$dir/err")"
	python3 -c 'import json,sys; json.load(sys.stdin)' <"$dir/out" || fail "json run ($ec): not JSON"
	python3 - "$dir/out" <<'EOF' || fail "json run ($ec): fields: $(cat "$dir/out")"
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("pulses", "detections", "sifted_bits", "qber", "ec_leak_bits", "ec_efficiency",
          "secret_bits", "key_rate", "key_rate_bound", "finite_key_theory", "keys_equal",
          "aborted", "abort_reason", "protocol", "block_pulses"):
    assert k in d, k
assert d["protocol"]["optimized"] is True and 0 < d["protocol"]["p_z"] < 1
assert d["pulses"] == 100000000
assert d["keys_equal"] is True and d["aborted"] is False and d["abort_reason"] == ""
assert d["secret_bits"] > 0 and 0 < d["key_rate"] < d["key_rate_bound"]
assert 0.02 < d["qber"] < 0.05
assert d["ec_efficiency"] > 1.0
assert d["detections"] > d["sifted_bits"] > d["secret_bits"]
EOF
done

# Loopback TCP instead of the socketpair.
run --distance 25 --pulses 5e7 --block-bits 5e4 --bounds asymptotic --seed 13 --tcp --json
[ "$rc" = 0 ] || fail "tcp run: exit $rc: $(cat "$dir/err")"
[ "$(field keys_equal)" = true ] || fail "tcp run: keys differ"

# The headline: finite-key bounds (the default), 50 km, 1e9 pulses, one
# block, optimised protocol: a positive key below the asymptotic bound of the
# same protocol and within 30 % of the theory's finite-key prediction.
for seed in 14 16; do
	run --distance 50 --pulses 1e9 --seed "$seed" --json
	[ "$rc" = 0 ] || fail "finite run: exit $rc: $(cat "$dir/err")"
	python3 - "$dir/out" <<'EOF' || fail "finite run (seed $seed): $(cat "$dir/out")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["keys_equal"] is True and d["aborted"] is False
assert d["blocks"] == 1 and d["block_pulses"] == 1000000000
assert d["secret_bits"] > 0
assert 0 < d["key_rate"] <= d["key_rate_bound"]
assert 0.7 * d["finite_key_theory"] < d["key_rate"] < 1.3 * d["finite_key_theory"]
EOF
done

# Eve intercepts every pulse: QBER ~25 %, every block aborted, alarm raised.
run --distance 25 --pulses 2e7 --block-bits 5e3 --eve 1 --seed 15 --json
[ "$rc" = 0 ] || fail "eve run: exit $rc: $(cat "$dir/err")"
python3 - "$dir/out" <<'EOF' || fail "eve run: $(cat "$dir/out")"
import json, sys, re
d = json.load(open(sys.argv[1]))
assert d["aborted"] is True
assert re.fullmatch(r"QBER \d+\.\d\d% above threshold 11\.00%", d["abort_reason"]), d["abort_reason"]
assert d["secret_bits"] == 0 and d["blocks_delivered"] == 0 and d["alarms"] > 0
assert 0.2 < d["qber"] < 0.32
EOF
run --distance 25 --pulses 2e7 --block-bits 5e3 --eve 1 --seed 15
grep -q '^ABORTED           QBER .* above threshold 11.00%' "$dir/out" ||
	fail "eve run (human): no ABORTED line: $(cat "$dir/out")"

# Bad input: exit 2, one error line, nothing on stdout.
for args in "--distance -1" "--distance abc" "--pulses 0" "--pulses 1.5" "--eve 2" \
	"--ec turbo" "--block-bits 10" "--bounds maybe" "--qber-threshold 0.9" "--workers 0" \
	"--no-such-option 1" "--pulses" "stray"; do
	# shellcheck disable=SC2086
	run $args
	[ "$rc" = 2 ] || fail "sim link $args: exit $rc, expected 2"
	[ "$(grep -c '^qwave: error:' "$dir/err")" = 1 ] || fail "sim link $args: $(cat "$dir/err")"
	[ ! -s "$dir/out" ] || fail "sim link $args: wrote to stdout"
done
run --help
[ "$rc" = 0 ] && grep -q '^usage: qwave sim link' "$dir/out" || fail "sim link --help"

echo "test_sim_link: $checks checks passed"
