#!/usr/bin/env bash
# The CLI conventions every command group follows: --help exits 0, unknown
# commands and options exit 2 with one "qwave: error:" line, --json is one
# valid JSON object; and `qwave demo` (make run) passes its checks.
set -euo pipefail
: "${QWAVE:?QWAVE must point to the qwave binary}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
is_json() { python3 -c 'import json,sys; o=json.load(sys.stdin); assert isinstance(o, dict)'; }
checks=0

run() { # run ARGS...: sets rc, output in $dir/out and $dir/err
	rc=0
	"$QWAVE" "$@" >"$dir/out" 2>"$dir/err" </dev/null || rc=$?
	checks=$((checks + 1))
}

expect_ok() {
	run "$@"
	[ "$rc" = 0 ] || fail "qwave $*: exit $rc, expected 0: $(head -3 "$dir/err")"
}

expect_usage() { # exit 2, exactly one "qwave: error:" line on stderr
	run "$@"
	[ "$rc" = 2 ] || fail "qwave $*: exit $rc, expected 2"
	[ "$(grep -c '^qwave: error:' "$dir/err")" = 1 ] ||
		fail "qwave $*: stderr needs one 'qwave: error:' line: $(cat "$dir/err")"
	[ ! -s "$dir/out" ] || fail "qwave $*: usage error wrote to stdout"
}

# Subcommand names listed under "commands:" in a help text on stdin.
list_commands() { awk '/^commands:/ { on = 1; next } on && NF == 0 { on = 0 } on { print $1 }'; }

expect_ok --help
grep -q '^usage: qwave' "$dir/out" || fail "qwave --help: no usage line"
run
[ "$rc" = 2 ] || fail "qwave without arguments: exit $rc, expected 2"
expect_usage no-such-command
expect_usage --no-such-option

expect_ok version --json
is_json <"$dir/out" || fail "qwave version --json is not one JSON object"
expect_ok version
grep -q '^qwave ' "$dir/out" || fail "qwave version: unexpected output"

groups=$("$QWAVE" --help | list_commands)
[ -n "$groups" ] || fail "qwave --help lists no commands"
for g in $groups; do
	expect_ok "$g" --help
	grep -q 'usage: qwave' "$dir/out" || fail "qwave $g --help: no usage line"
	"$QWAVE" "$g" --help | list_commands >"$dir/subs"
	while read -r sub; do
		expect_ok "$g" "$sub" --help
		grep -q 'usage: qwave' "$dir/out" || fail "qwave $g $sub --help: no usage line"
		expect_usage "$g" "$sub" --no-such-option
	done <"$dir/subs"
	if [ -s "$dir/subs" ]; then
		expect_usage "$g" no-such-subcommand
	else
		expect_usage "$g" --no-such-option
	fi
done

expect_ok demo --json
is_json <"$dir/out" || fail "qwave demo --json is not one JSON object"
python3 -c 'import json,sys; o=json.load(sys.stdin); assert o["ok"] is True and o["checks_failed"] == 0' \
	<"$dir/out" || fail "qwave demo --json: checks failed: $(cat "$dir/out")"
expect_ok demo
grep -q 'all checks passed' "$dir/out" || fail "qwave demo: $(tail -3 "$dir/out")"

echo "cli basics: $checks checks passed"
