#!/bin/bash
# The Key Service Center over real HTTPS with mutual TLS: qwksc driven by
# `qwave ksc`, `qwave device` and curl. Covers the life cycle of a key
# (with quorum recovery) and of devices (fill, import, remote destroy),
# authentication (success, wrong key, replay, revoked certificate), an
# encrypted call whose terminals end with the same key that the KSC's log
# and database never contain, group rekeying, audit tamper detection, and
# bad input on endpoints (clear 4xx JSON error, nothing changed).
set -u
QWAVE=${QWAVE:-$(dirname "$0")/../../build/qwave}
QWKSC=${QWKSC:-$(dirname "$QWAVE")/qwksc}
T=$(mktemp -d /tmp/qw_ksc_it.XXXXXX)
PID=
fails=0

cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill "$PID"
		for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -rf "$T"
}
trap cleanup EXIT

ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { # check DESC CMD... : CMD must succeed
	local d=$1; shift
	if "$@" >"$T/out" 2>"$T/err"; then ok "$d"; else bad "$d: $(cat "$T/err")"; fi
}
refuse() { # refuse DESC PATTERN CMD... : CMD must fail with PATTERN on stderr
	local d=$1 p=$2; shift 2
	if "$@" >"$T/out" 2>"$T/err"; then bad "$d: succeeded"
	elif grep -q -- "$p" "$T/err"; then ok "$d"
	else bad "$d: stderr was: $(cat "$T/err")"; fi
}
# the system interpreter: a version manager's shim costs 0.3 s a call
PY=/usr/bin/python3; [ -x $PY ] || PY=python3
jget() { jq -r "$2" "$1"; }

# ---- PKI, configuration, initialisation, start ----
P=$T/pki
"$QWAVE" pki init --dir "$P" >/dev/null || { echo "FAIL pki init"; exit 1; }
"$QWAVE" pki issue --dir "$P" --kind node --id ksc >/dev/null
for id in root s2 op aud app1 phone-a phone-b phone-c meter-1 lost-1 stranger; do
	"$QWAVE" pki issue --dir "$P" --kind sae --id $id >/dev/null || { echo "FAIL issue $id"; exit 1; }
done
cat >"$T/ksc.conf" <<EOF
[ksc]
data_dir = $T/data
listen = 127.0.0.1:0
cert = $P/node-ksc.crt
key = $P/node-ksc.key
ca = $P/ca.crt
pki_dir = $P
sync = normal
max_body = 65536
EOF
check "qwksc --check" "$QWKSC" -c "$T/ksc.conf" --check
check "qwksc init" "$QWKSC" -c "$T/ksc.conf" init --admin root
refuse "qwksc init twice" "exists" "$QWKSC" -c "$T/ksc.conf" init --admin root
"$QWKSC" -c "$T/ksc.conf" >"$T/ksc.log" 2>&1 &
PID=$!
for _ in $(seq 100); do [ -s "$T/data/status.json" ] && break; sleep 0.05; done
PORT=$(jget "$T/data/status.json" '.port')
export QWAVE_KSC_URL=https://localhost:$PORT QWAVE_CACERT=$P/ca.crt
as() { local who=$1; shift; "$QWAVE" "$@" --cert "$P/sae-$who.crt" --key "$P/sae-$who.key"; }
raw() { # raw WHO METHOD PATH [BODY] -> prints HTTP status; body in $T/raw
	local who=$1 m=$2 p=$3
	shift 3
	curl -s -o "$T/raw" -w '%{http_code}' --cacert "$P/ca.crt" --cert "$P/sae-$who.crt" \
		--key "$P/sae-$who.key" -X "$m" -H 'Content-Type: application/json' \
		${1:+--data-binary "$1"} "https://localhost:$PORT/api/v1/ksc$p"
}
audit_n() { as root ksc audit verify --json | jq -r .records; }

check "status as root" as root ksc status
grep -q 'super' "$T/out" || bad "root is not super"

# ---- administrators and roles ----
check "root creates operator op" as root ksc admin add --id op --role operator
check "root creates auditor aud" as root ksc admin add --id aud --role auditor
check "root creates super s2" as root ksc admin add --id s2 --role super
check "op registers app1" as op ksc app add --id app1
refuse "auditor cannot register a device" "HTTP 403" as aud ksc device register --id x --kind sim --owner o
refuse "operator cannot create an operator" "HTTP 403" as op ksc admin add --id op9 --role operator
refuse "operator cannot read the audit log" "HTTP 403" as op ksc audit list
refuse "unknown certificate holder refused" "HTTP 403" as stranger ksc status
check "auditor reads the audit log" as aud ksc audit list --json

# ---- bad input: clear 4xx with a JSON message, nothing changes ----
n0=$(audit_n)
badreq() { # badreq DESC WANT WHO METHOD PATH [BODY]
	local d=$1 want=$2; shift 2
	local got
	got=$(raw "$@")
	if [ "$got" = "$want" ] && jq -e '.message | type == "string"' "$T/raw" >/dev/null 2>&1
	then ok "$d -> $got"; else bad "$d: got $got $(head -c 200 "$T/raw")"; fi
}
badreq "malformed JSON" 400 root POST /admins '{"id":'
badreq "JSON array body" 400 root POST /devices '[1]'
badreq "wrong field type" 400 op POST /keys '{"size_bits":"big"}'
badreq "unknown device" 404 op POST /devices/ghost/fill '{"bits":256}'
badreq "unknown key" 404 op POST /keys/00000000-0000-4000-8000-000000000000/destroy
badreq "unknown endpoint" 404 root GET /teleport
badreq "wrong method" 405 root DELETE /audit
badreq "wrong role" 403 aud POST /keys '{}'
badreq "unknown role name" 400 root POST /admins '{"id":"zz","role":"god"}'
badreq "duplicate JSON key" 400 root POST /admins '{"id":"a1","id":"a2","role":"auditor"}'
big=$($PY -c 'print("{\"id\":\"" + "x"*70000 + "\"}")')
badreq "oversized body" 413 root POST /admins "$big"
badreq "crypto on a missing key" 404 app1 POST /crypto/encrypt '{"key_id":"nope","data":"AA=="}'
badreq "session for unknown terminals" 404 app1 POST /sessions '{"a":"nobody","b":"phone-b"}'
badreq "challenge: unknown method" 400 op POST /auth/challenge '{"device":"phone-a","method":"md5"}'
[ "$(audit_n)" = "$n0" ] && ok "bad requests changed nothing (audit records $n0)" || bad "audit grew on bad requests"

# ---- key life cycle with quorum recovery ----
as op ksc key generate --owner app1 --size 256 --json >"$T/k.json" && ok "key generated" || bad "key generate"
KID=$(jget "$T/k.json" '.id')
[ "$(jget "$T/k.json" '.source')" = "entropy:os" ] && ok "key source labelled" || bad "key source"
check "owner receives the key" as app1 ksc key distribute --id "$KID" --out "$T/k1.b64"
refuse "second distribution refused" "HTTP 409" as app1 ksc key distribute --id "$KID"
refuse "another app is not entitled" "HTTP 403" as op ksc key distribute --id "$KID"
check "backup 2-of-3" as root ksc key backup --id "$KID" --threshold 2 --custodian root --custodian s2 --custodian op
for a in root s2 op; do check "$a collects its share" as $a ksc key share --id "$KID" --out "$T/share-$a"; done
refuse "a share is collected once" "HTTP 409" as root ksc key share --id "$KID"
check "destroy" as op ksc key destroy --id "$KID" --reason "test"
check "first share: pending" as root ksc key recover --id "$KID" --share-file "$T/share-root"
grep -q 'threshold' "$T/out" && ok "recovery waits for the quorum" || bad "recovery did not wait"
check "second share: recovered" as op ksc key recover --id "$KID" --share-file "$T/share-op"
grep -q 'active' "$T/out" && ok "key active again" || bad "key not active after recovery"
check "owner receives the recovered key" as app1 ksc key distribute --id "$KID" --out "$T/k2.b64"
cmp -s "$T/k1.b64" "$T/k2.b64" && ok "recovered key is the same key" || bad "recovered key differs"
check "revoke" as op ksc key revoke --id "$KID"
refuse "revoked key is not distributed" "HTTP 409" as app1 ksc key distribute --id "$KID"
check "destroy the revoked key" as op ksc key destroy --id "$KID" --reason "test"
refuse "a revoked key is not recovered" "HTTP 409" as root ksc key recover --id "$KID" --share-file "$T/share-root"

# ---- devices: register, personalise, fill, import ----
reg() { # reg ID KIND
	as op ksc device register --id "$1" --kind "$2" --owner "owner-$1" --quota 1048576 --out "$T/$1.mk" >/dev/null &&
	"$QWAVE" device init --dir "$T/dev-$1" --id "$1" --medium-key "$T/$1.mk" >/dev/null &&
	as op ksc device fill --id "$1" --bits ${3:-524288} --out "$T/$1.img" >/dev/null &&
	"$QWAVE" device import --dir "$T/dev-$1" --image "$T/$1.img" >/dev/null
}
for d in phone-a phone-b phone-c; do check "device $d registered, filled 512 Kbit, imported" reg $d sim; done
check "IoT meter registered and filled" reg meter-1 iot-chip 4096
refuse "another device's image refused" "does not open" "$QWAVE" device import --dir "$T/dev-phone-a" --image "$T/phone-b.img"
refuse "the same image twice refused" "already" "$QWAVE" device import --dir "$T/dev-phone-a" --image "$T/phone-a.img"
"$QWAVE" device balance --dir "$T/dev-phone-a" --json >"$T/bal.json"
[ "$(jget "$T/bal.json" '.balance_bits')" = 524288 ] && ok "balance 524288 bits" || bad "balance $(cat "$T/bal.json")"
check "balance reported" "$QWAVE" device balance --dir "$T/dev-phone-a" --report --cert "$P/sae-phone-a.crt" --key "$P/sae-phone-a.key"
refuse "quota enforced" "quota" as op ksc device fill --id phone-a --bits 1048576
check "suspend" as op ksc device suspend --id phone-c
refuse "suspended device is not filled" "HTTP 409" as op ksc device fill --id phone-c --bits 256
check "resume" as op ksc device resume --id phone-c

# ---- authentication ----
asdev() { local who=$1; shift; "$QWAVE" device "$@" --dir "$T/dev-$who" --cert "$P/sae-$who.crt" --key "$P/sae-$who.key"; }
check "HMAC-SM3 challenge-response" asdev meter-1 auth --method hmac-sm3 --save "$T/resp.json"
check "ZUC-EIA3 challenge-response" asdev meter-1 auth --method zuc-eia3
refuse "replayed response refused" "HTTP 401" as meter-1 ksc call POST /auth/response "$(cat "$T/resp.json")"
cp -r "$T/dev-meter-1" "$T/dev-forger"
$PY - "$T/dev-forger/device.json" <<'EOF'
import json, sys, base64
p = sys.argv[1]; d = json.load(open(p))
for b in d["batches"]:
    k = bytearray(base64.b64decode(b["keys"])); k = bytes(x ^ 0x5a for x in k)
    b["keys"] = base64.b64encode(k).decode()
json.dump(d, open(p, "w"))
EOF
chmod 600 "$T/dev-forger/device.json"
refuse "wrong key refused" "wrong response" "$QWAVE" device auth --dir "$T/dev-forger" --cert "$P/sae-meter-1.crt" --key "$P/sae-meter-1.key"
as op ksc call POST /certs '{"id":"phone-a","alg":"sm2"}' >"$T/cert.json" 2>"$T/err" && ok "SM2 device certificate issued" || bad "cert issue: $(cat "$T/err")"
$PY - "$T" <<'EOF'
import json, sys, os
t = sys.argv[1]; d = json.load(open(t + "/cert.json"))
open(t + "/pa.crt", "w").write(d["certificate"])
fd = os.open(t + "/pa.key", os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, d["key"].encode()); os.close(fd)
open(t + "/serial", "w").write(d["serial"])
EOF
check "certificate authentication" asdev phone-a auth --method cert --sign-key "$T/pa.key" --sign-cert "$T/pa.crt"
check "revoke the certificate" as op ksc call POST "/certs/$(cat "$T/serial")/revoke"
refuse "revoked certificate refused" "certificate revoked" asdev phone-a auth --method cert --sign-key "$T/pa.key" --sign-cert "$T/pa.crt"
check "CRL" as op ksc call GET /crl
grep -q "$(cat "$T/serial")" "$T/out" && grep -q 'BEGIN X509 CRL' "$T/out" && ok "CRL lists the serial" || bad "CRL"

# users: registered, certificate (ECDSA, also good for TLS) from the KSC
check "operator registers user carol" as op ksc user add --id carol
as op ksc cert issue --id carol --alg ecdsa-p256 --out "$T/carol.key" --json >"$T/carol.json" 2>"$T/err" &&
	jq -r .certificate "$T/carol.json" >"$T/carol.crt" && ok "user certificate issued (key to a 0600 file)" || bad "user cert: $(cat "$T/err")"
[ "$(stat -c %a "$T/carol.key")" = 600 ] && ok "user key file mode 0600" || bad "key file mode"
check "user authenticated by certificate" "$QWAVE" device auth --user carol --sign-key "$T/carol.key" --sign-cert "$T/carol.crt" --cert "$T/carol.crt" --key "$T/carol.key"
refuse "a user cannot use a key method" "by certificate" "$QWAVE" device auth --user carol --method hmac-sm3 --sign-key "$T/carol.key" --sign-cert "$T/carol.crt" --cert "$T/carol.crt" --key "$T/carol.key"
refuse "another user's certificate refused" "another subject" "$QWAVE" device auth --user carol --sign-key "$T/pa.key" --sign-cert "$T/pa.crt" --cert "$T/carol.crt" --key "$T/carol.key"
check "revoke user carol" as op ksc user revoke --id carol
refuse "revoked user refused" "HTTP 403" "$QWAVE" device auth --user carol --sign-key "$T/carol.key" --sign-cert "$T/carol.crt" --cert "$T/carol.crt" --key "$T/carol.key"

# ---- encrypted call: one key per call ----
as phone-a ksc session create --a phone-a --b phone-b --json >"$T/call.json" 2>"$T/err" && ok "session requested by terminal a" || bad "session: $(cat "$T/err")"
check "terminal a unwraps" "$QWAVE" device unwrap --dir "$T/dev-phone-a" --from "$T/call.json" --out "$T/ka.hex"
check "terminal b unwraps" "$QWAVE" device unwrap --dir "$T/dev-phone-b" --from "$T/call.json" --out "$T/kb.hex"
cmp -s "$T/ka.hex" "$T/kb.hex" && [ -s "$T/ka.hex" ] && ok "both terminals hold the same session key" || bad "session keys differ"
refuse "a wrap is opened once" "used before" "$QWAVE" device unwrap --dir "$T/dev-phone-a" --from "$T/call.json"
refuse "terminal c has no key in the call" "no key for device" "$QWAVE" device unwrap --dir "$T/dev-phone-c" --from "$T/call.json"
$PY - "$T" <<'EOF' && ok "the session key is in neither the KSC's log nor its database" || bad "session key found in KSC files"
import sys, base64, glob
t = sys.argv[1]; k = bytes.fromhex(open(t + "/ka.hex").read().strip())
needles = [k, k.hex().encode(), k.hex().upper().encode(), base64.b64encode(k)]
for f in [t + "/ksc.log"] + glob.glob(t + "/data/ksc.db*"):
    data = open(f, "rb").read()
    for n in needles:
        assert n not in data, f
EOF

# ---- group keys with rekeying ----
refuse "an application involves only devices it is entitled to" "not entitled" as app1 ksc group create --id ptt-team --member phone-a --member phone-b
for d in phone-a phone-b phone-c; do check "grant app1 $d" as op ksc app grant --id app1 --device $d; done
as app1 ksc group create --id ptt-team --member phone-a --member phone-b --member phone-c --json >"$T/g1.json" 2>"$T/err" && ok "PTT group created" || bad "group: $(cat "$T/err")"
for d in phone-a phone-b phone-c; do "$QWAVE" device unwrap --dir "$T/dev-$d" --from "$T/g1.json" --out "$T/g1-$d.hex" >/dev/null || bad "unwrap g1 $d"; done
cmp -s "$T/g1-phone-a.hex" "$T/g1-phone-c.hex" && cmp -s "$T/g1-phone-a.hex" "$T/g1-phone-b.hex" && ok "epoch 1: all three members share the key" || bad "epoch 1 keys differ"
as app1 ksc group leave --id ptt-team --device phone-c --json >"$T/g2.json" 2>"$T/err" && ok "phone-c leaves" || bad "leave: $(cat "$T/err")"
for d in phone-a phone-b; do "$QWAVE" device unwrap --dir "$T/dev-$d" --from "$T/g2.json" --out "$T/g2-$d.hex" >/dev/null || bad "unwrap g2 $d"; done
refuse "the leaver gets no new key" "no key for device" "$QWAVE" device unwrap --dir "$T/dev-phone-c" --from "$T/g2.json"
cmp -s "$T/g2-phone-a.hex" "$T/g2-phone-b.hex" && ! cmp -s "$T/g2-phone-a.hex" "$T/g1-phone-a.hex" && ok "epoch 2: a new key for those who stay" || bad "epoch 2"
as app1 ksc call POST /groups/ptt-team/join '{"device":"phone-c"}' >"$T/g3.json" 2>"$T/err" && ok "phone-c rejoins" || bad "join"
"$QWAVE" device unwrap --dir "$T/dev-phone-c" --from "$T/g3.json" --out "$T/g3-c.hex" >/dev/null && "$QWAVE" device unwrap --dir "$T/dev-phone-a" --from "$T/g3.json" --out "$T/g3-a.hex" >/dev/null
cmp -s "$T/g3-c.hex" "$T/g3-a.hex" && ! cmp -s "$T/g3-a.hex" "$T/g2-phone-a.hex" && ok "epoch 3: rekeyed on join" || bad "epoch 3"

# ---- crypto services ----
as app1 ksc call POST /crypto/keys '{"alg":"aes-256-gcm"}' >"$T/ck.json" && ok "service key created" || bad "service key"
CK=$(jget "$T/ck.json" '.id')
as app1 ksc call POST /crypto/encrypt "{\"key_id\":\"$CK\",\"data\":\"c2VjcmV0\"}" >"$T/ct.json" && ok "encrypt" || bad "encrypt"
as app1 ksc call POST /crypto/decrypt "{\"key_id\":\"$CK\",\"ciphertext\":\"$(jget "$T/ct.json" '.ciphertext')\"}" >"$T/pt.json"
[ "$(jget "$T/pt.json" '.plaintext')" = c2VjcmV0 ] && ok "decrypt round trip" || bad "decrypt"
refuse "another principal cannot use the key" "HTTP 403" as op ksc call POST /crypto/encrypt "{\"key_id\":\"$CK\",\"data\":\"AA==\"}"
as app1 ksc call POST /crypto/keys '{"alg":"zuc-eia3"}' >"$T/zk.json" && ok "zuc-eia3 service key" || bad "zuc-eia3 key"
ZK=$(jget "$T/zk.json" '.id')
as app1 ksc call POST /crypto/mac "{\"key_id\":\"$ZK\",\"data\":\"c2VjcmV0\"}" >"$T/m0.json"
as app1 ksc call POST /crypto/mac "{\"key_id\":\"$ZK\",\"data\":\"c2VjcmV0\"}" >"$T/m1.json"
[ "$(jget "$T/m0.json" '.count')" = 0 ] && [ "$(jget "$T/m1.json" '.count')" = 1 ] && ok "zuc-eia3: a fresh COUNT per tag" || bad "zuc-eia3 COUNT: $(cat "$T/m0.json" "$T/m1.json")"
as app1 ksc call POST /crypto/verify-mac "{\"key_id\":\"$ZK\",\"data\":\"c2VjcmV0\",\"mac\":\"$(jget "$T/m1.json" '.mac')\",\"count\":1}" >"$T/v.json"
[ "$(jget "$T/v.json" '.valid')" = true ] && ok "zuc-eia3 tag verifies with its COUNT" || bad "zuc-eia3 verify"
refuse "zuc-eia3 verify needs the COUNT" "HTTP 400" as app1 ksc call POST /crypto/verify-mac "{\"key_id\":\"$ZK\",\"data\":\"c2VjcmV0\",\"mac\":\"$(jget "$T/m1.json" '.mac')\"}"

# ---- remote destroy of a lost device ----
check "lost device registered and filled" reg lost-1 usb-key 2048
check "remote destroy" as op ksc device destroy --id lost-1 --reason "reported lost"
refuse "no session with a lost device" "HTTP 409" as phone-a ksc call POST /sessions '{"a":"phone-a","b":"lost-1"}'
asdev lost-1 sync --json >"$T/sync.json" 2>"$T/err" && ok "device contacts the KSC" || bad "sync: $(cat "$T/err")"
[ "$(jget "$T/sync.json" '.erased_now')" = true ] && [ "$(jget "$T/sync.json" '.balance_bits')" = 0 ] && ok "device erased its keys on contact" || bad "device did not erase: $(cat "$T/sync.json")"
refuse "erased device's identity revoked" "HTTP 403" asdev lost-1 sync
check "device shows lost" as op ksc device show --id lost-1
grep -q lost "$T/out" && ok "status lost" || bad "status"

# ---- audit: intact, anchored, then tampered ----
check "audit verifies" as aud ksc audit verify
as aud ksc audit head --json >"$T/head.json" && ok "auditor keeps the head" || bad "audit head"
check "audit verifies against the kept head" as aud ksc audit verify --seq "$(jget "$T/head.json" .seq)" --hash "$(jget "$T/head.json" .hash)"
sqlite3 "$T/data/ksc.db" "UPDATE audit SET actor = 'mallory' WHERE seq = 5" || bad "sqlite3 tamper"
refuse "tampering detected" "altered: first bad record 5" as aud ksc audit verify

# ---- CLI: usage errors exit 2, failures 1, --help 0 ----
exit_is() { # exit_is WANT DESC CMD...
	local want=$1 d=$2 rc=0; shift 2
	"$@" >/dev/null 2>"$T/err" || rc=$?
	[ "$rc" = "$want" ] && ok "$d (exit $rc)" || bad "$d: exit $rc, expected $want: $(cat "$T/err")"
}
exit_is 2 "qwave ksc without a command" "$QWAVE" ksc
exit_is 2 "unknown ksc command" "$QWAVE" ksc teleport now
exit_is 2 "unknown option" as op ksc key generate --bogus 1
exit_is 2 "missing required option" as op ksc device register --id x
exit_is 2 "not a number" as op ksc key generate --size many
exit_is 2 "no connection settings" env -u QWAVE_KSC_URL "$QWAVE" ksc status --cert "$P/sae-op.crt" --key "$P/sae-op.key"
exit_is 0 "--help" "$QWAVE" ksc key backup --help
exit_is 0 "device --help" "$QWAVE" device unwrap --help
exit_is 1 "HTTP error is a failure" as op ksc key show --id 00000000-0000-4000-8000-000000000000
exit_is 1 "no medium" "$QWAVE" device balance --dir "$T/nowhere"
exit_is 2 "device: unknown option" "$QWAVE" device balance --dir "$T/dev-phone-a" --colour red
"$QWAVE" ksc bench --seconds 0.3 --clients 1 --json >"$T/bench.json" 2>"$T/err" &&
	[ "$(jq '.session_keys_per_s > 0 and .crypto_requests_per_s > 0 and .session_failures == 0' "$T/bench.json")" = true ] &&
	ok "bench ksc runs (smoke)" || bad "bench: $(cat "$T/err")"

kill "$PID"
for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null && bad "qwksc did not stop on SIGTERM" || ok "qwksc stopped"
PID=
if grep -E 'Sanitizer|runtime error' "$T/ksc.log" >/dev/null; then
	bad "sanitizer report in the KSC's log:"; grep -E -A12 'Sanitizer|runtime error' "$T/ksc.log" | head -60
else ok "no sanitizer report"; fi
echo "$fails failure(s)"
[ "$fails" = 0 ]
