#!/usr/bin/env bash
# qwave keys (the ETSI GS QKD 014 client CLI) against two real qwaved nodes
# from examples/pair.conf: status, get and get-with-ids by GET and POST, the
# same keys at both ends, keys hidden unless asked for, --out file modes,
# the KME's error messages on one line, 401, TLS failures named (wrong CA,
# wrong KME ID), usage errors (exit 2), environment fallbacks.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# expect RC STDERR-PATTERN CMD...: exit code and a line on stderr
expect() {
	local want=$1 pat=$2 rc=0; shift 2
	"$@" >"$dir/out" 2>"$dir/err" || rc=$?
	[ "$rc" = "$want" ] || fail "$*: exit $rc, expected $want; stderr: $(cat "$dir/err")"
	grep -q -- "$pat" "$dir/err" || fail "$*: stderr lacks '$pat': $(cat "$dir/err")"
}

qw_net_up "$src/examples/pair.conf"
url_a=$(qw_url node-a)
url_b=$(qw_url node-b)
cert_a=$(qw_sae sae-a cert)
key_a=$(qw_sae sae-a key)
cert_b=$(qw_sae sae-b cert)
key_b=$(qw_sae sae-b key)
A=("$QWAVE" keys)
CA=(--kme "$url_a" --cert "$cert_a" --key "$key_a" --cacert "$ca")
CB=(--kme "$url_b" --cert "$cert_b" --key "$key_b" --cacert "$ca")

# wait (up to 5 minutes on a loaded machine) for the link to fill the pool
qw_wait_keys sae-a sae-b 16 || fail "the pool did not fill"
ok

# status: human view with units, JSON with the clause 6.1 names
"${A[@]}" status --slave sae-b "${CA[@]}" >"$dir/st" || fail "status"
grep -q "source KME ID  *node-a" "$dir/st" || fail "status view: $(cat "$dir/st")"
grep -q "master SAE ID  *sae-a" "$dir/st" || fail "status view master"
grep -q "default key size  *256 bits" "$dir/st" || fail "status view key size"
"${A[@]}" status --slave sae-b "${CA[@]}" --json >"$dir/st.json" || fail "status --json"
[ "$(json 'd["target_KME_ID"]+" "+d["slave_SAE_ID"]+" "+str(d["max_key_per_request"])' \
	<"$dir/st.json")" = "node-b sae-b 128" ] || fail "status json: $(cat "$dir/st.json")"
ok

# get (POST) at node-a, get-with-ids (POST) at node-b: the same keys
"${A[@]}" get --slave sae-b --number 3 --size 512 "${CA[@]}" --json >"$dir/enc.json" ||
	fail "get --json"
[ "$(json 'len(d["keys"])' <"$dir/enc.json")" = 3 ] || fail "3 keys expected"
[ "$(json 'len(__import__("base64").b64decode(d["keys"][0]["key"]))' <"$dir/enc.json")" = 64 ] ||
	fail "512-bit keys expected"
ids=()
while read -r id; do ids+=(--key-id "$id"); done < <(json '"\n".join(k["key_ID"] for k in d["keys"])' <"$dir/enc.json")
"${A[@]}" get-with-ids --master sae-a "${ids[@]}" "${CB[@]}" --json >"$dir/dec.json" ||
	fail "get-with-ids"
[ "$(json 'd["keys"]' <"$dir/dec.json")" = "$(json 'd["keys"]' <"$dir/enc.json")" ] ||
	fail "keys differ between the nodes"
ok

# GET forms; the human view hides keys unless --show-keys
"${A[@]}" get --slave sae-b --number 1 --get "${CA[@]}" --out "$dir/k1.json" >"$dir/view" ||
	fail "get --get --out"
[ "$(stat -c %a "$dir/k1.json")" = 600 ] || fail "--out file mode is not 0600"
grep -q "(hidden)" "$dir/view" || fail "human view without (hidden): $(cat "$dir/view")"
key=$(json 'd["keys"][0]["key"]' <"$dir/k1.json")
id=$(json 'd["keys"][0]["key_ID"]' <"$dir/k1.json")
grep -qF "$key" "$dir/view" && fail "the human view printed a key"
grep -q "$id" "$dir/view" || fail "the human view lacks the key ID"
"${A[@]}" get-with-ids --master sae-a --key-id "$id" --get --show-keys "${CB[@]}" >"$dir/view" ||
	fail "get-with-ids --get"
grep -qF "$id  $key" "$dir/view" || fail "--show-keys: $(cat "$dir/view")"
ok

# the KME's own error messages, one line, exit 1
expect 1 "^qwave: error: KME answered 400: size shall be a multiple of 8$" \
	"${A[@]}" get --slave sae-b --size 100 "${CA[@]}"
[ "$(wc -l <"$dir/err")" = 1 ] || fail "error is not one line"
expect 1 "KME answered 400: one or more keys specified are not found on KME" \
	"${A[@]}" get-with-ids --master sae-a --key-id "$id" "${CB[@]}"
# keys for sae-b are not sae-a's to take (clause 5.4)
"${A[@]}" get --slave sae-b "${CA[@]}" --json >"$dir/k2.json" || fail "get"
id2=$(json 'd["keys"][0]["key_ID"]' <"$dir/k2.json")
expect 1 "KME answered 401" \
	"${A[@]}" get-with-ids --master sae-a --key-id "$id2" --kme "$url_b" --cert "$cert_a" \
	--key "$key_a" --cacert "$ca"
ok

# TLS: a CA that did not sign the KME, a KME ID that is not the KME's
"$QWAVE" pki init --dir "$dir/other" >/dev/null || fail "pki init"
expect 1 "KME certificate not accepted" \
	"${A[@]}" status --slave sae-b --kme "$url_a" --cert "$cert_a" --key "$key_a" \
	--cacert "$dir/other/ca.crt"
expect 1 "KME certificate names KME 'node-a', expected 'node-b'" \
	"${A[@]}" status --slave sae-b "${CA[@]}" --kme-id node-b
"${A[@]}" status --slave sae-b "${CA[@]}" --kme-id node-a >/dev/null || fail "--kme-id node-a"
ok

# --out refuses a file others can read (and says so)
: >"$dir/open.json"
chmod 644 "$dir/open.json"
expect 1 "refusing to write keys to" \
	"${A[@]}" get --slave sae-b "${CA[@]}" --out "$dir/open.json"
[ ! -s "$dir/open.json" ] || fail "keys written into a world-readable file"
ok

# environment fallbacks
QWAVE_KME=$url_a QWAVE_CERT=$cert_a QWAVE_KEY=$key_a QWAVE_CACERT=$ca \
	"${A[@]}" status --slave sae-b --json >/dev/null || fail "QWAVE_* variables"
ok

# usage errors: exit 2
expect 2 "no KME" env -u QWAVE_KME "${A[@]}" status --slave sae-b
expect 2 "give the slave SAE" "${A[@]}" status "${CA[@]}"
expect 2 "--get carries one key ID only" "${A[@]}" get-with-ids --master sae-a --get \
	--key-id "$id" --key-id "$id2" "${CB[@]}"
expect 2 "is not a UUID" "${A[@]}" get-with-ids --master sae-a --key-id 12345 "${CB[@]}"
expect 2 "extension_mandatory" "${A[@]}" get --slave sae-b --ext-mandatory '{}' "${CA[@]}"
expect 2 "unknown option" "${A[@]}" status --slave sae-b --number 3 "${CA[@]}"
"${A[@]}" get --help | grep -q "keys included" || fail "--help does not warn about --json"
ok

"$QWAVE" net down --state-dir "$state" >/dev/null || fail "net down"
# nothing listens any more: a clear connection error
expect 1 "cannot reach the KME" "${A[@]}" status --slave sae-b "${CA[@]}"
ok
echo "keys_cli: $passed passed, 0 failed"
