#!/usr/bin/env bash
# qwaved: configuration errors name file and line; --check; clean stop.
set -euo pipefail
: "${QWAVED:?QWAVED must point to the qwaved binary}"
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

expect_error() { # expect_error EXPECTED_RC PATTERN ARGS...
	local want=$1 pat=$2 rc=0; shift 2
	"$QWAVED" "$@" >"$dir/out" 2>"$dir/err" || rc=$?
	[ "$rc" = "$want" ] || fail "qwaved $*: exit $rc, expected $want"
	grep -q -- "$pat" "$dir/err" || fail "qwaved $*: stderr lacks '$pat': $(cat "$dir/err")"
}

expect_error 2 "-c FILE is required"
expect_error 2 "usage" --bogus
expect_error 1 "cannot\|No such\|error" -c "$dir/missing.conf"

printf '[node]\nid = n1\n' >"$dir/a.conf"
expect_error 1 "a.conf:1: missing key 'data_dir'" -c "$dir/a.conf"
printf '[node]\nid = n1\ndata_dir = %s/d\nprot = 1\n' "$dir" >"$dir/b.conf"
expect_error 1 "b.conf:4: unknown key 'prot'" -c "$dir/b.conf"
printf '[node]\nid = n1\ndata_dir = %s/d\n[nodes]\n' "$dir" >"$dir/c.conf"
expect_error 1 "c.conf:4" -c "$dir/c.conf"
printf '[node\nid = n1\n' >"$dir/d.conf"
expect_error 1 "d.conf:1" -c "$dir/d.conf"

printf '[node]\nid = n1\ndata_dir = %s/d\n' "$dir" >"$dir/ok.conf"
"$QWAVED" -c "$dir/ok.conf" --check | grep -q "configuration OK" || fail "--check on a good file"
[ ! -e "$dir/d" ] || fail "--check must not create the data directory"

"$QWAVED" -c "$dir/ok.conf" 2>"$dir/log" &
pid=$!
for _ in $(seq 50); do grep -q started "$dir/log" && break; sleep 0.1; done
grep -q started "$dir/log" || fail "qwaved did not start"
[ "$(stat -c %a "$dir/d")" = 700 ] || fail "data_dir mode is not 0700"
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "qwaved exited $rc on SIGTERM"
grep -q stopped "$dir/log" || fail "no clean stop logged"
echo "qwaved: 1 passed, 0 failed"
