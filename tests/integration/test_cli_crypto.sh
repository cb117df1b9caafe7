#!/usr/bin/env bash
# qwave crypto from the command line: published test vectors (3GPP 128-EEA3 /
# 128-EIA3 test set 1, SM3 of "abc" from GB/T 32905 appendix A), round trips
# for every cipher, tamper and wrong-key failures, key file modes, SM2
# sign/verify, a stuck entropy source, and malformed input to every
# subcommand (clear error, exit 1 or 2, never a crash).
set -euo pipefail
: "${QWAVE:?QWAVE must point to the qwave binary}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fail() { echo "FAIL: $*" >&2; exit 1; }
checks=0
q() { "$QWAVE" crypto "$@"; }

expect_fail() { # expect_fail PATTERN ARGS...: exit 1 or 2, one error line
	local pat=$1 rc=0
	shift
	"$QWAVE" crypto "$@" >out 2>err </dev/null || rc=$?
	checks=$((checks + 1))
	[ "$rc" -lt 128 ] || fail "crypto $*: crashed (exit $rc): $(cat err)"
	[ "$rc" = 1 ] || [ "$rc" = 2 ] || fail "crypto $*: exit $rc, expected 1 or 2"
	[ "$(grep -c '^qwave: error:' err)" = 1 ] ||
		fail "crypto $*: stderr needs one 'qwave: error:' line: $(cat err)"
	grep -qi -- "$pat" err || fail "crypto $*: stderr lacks '$pat': $(cat err)"
	[ ! -s out ] || fail "crypto $*: failure wrote to stdout: $(head -c 200 out)"
}

expect_eq() { # expect_eq WHAT GOT WANT
	checks=$((checks + 1))
	[ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}

# ---- hashes (GB/T 32905-2016 appendix A.1; FIPS 180-2 appendix B.1) ----
expect_eq "sm3(abc)" "$(printf abc | q hash --alg sm3)" \
	66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0
expect_eq "sha256(abc)" "$(printf abc | q hash --alg sha256)" \
	ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
printf abc >abc
expect_eq "sm3 --json" "$(q hash --in abc --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')" \
	66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0

# ---- ZUC: 3GPP 128-EEA3 / 128-EIA3 test set 1 (ETSI/SAGE Document 3) ----
echo 173d14ba5003731d7a60049470f00a29 >eea3.key
echo 6cf65340735552ab0c9752fa6f9025fe0bd675d9005875b200 >eea3.pt
zuc1=(--key-file eea3.key --count 0x66035492 --bearer 0x0f --direction 0 --bits 193)
expect_eq "128-EEA3 test set 1" \
	"$(q encrypt --alg zuc-eea3 "${zuc1[@]}" --in eea3.pt --in-hex --out-hex)" \
	a6c85fc66afb8533aafc2518dfe784940ee1e4b030238cc800
q encrypt --alg zuc-eea3 "${zuc1[@]}" --in eea3.pt --in-hex --out eea3.ct
expect_eq "128-EEA3 decrypt" \
	"$(q decrypt --alg zuc-eea3 "${zuc1[@]}" --in eea3.ct --out-hex)" \
	6cf65340735552ab0c9752fa6f9025fe0bd675d9005875b200
# the same set with decimal parameters and a raw 16-byte key file
python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex("173d14ba5003731d7a60049470f00a29"))' >eea3.bin
expect_eq "128-EEA3 raw key, decimal COUNT" \
	"$(q encrypt --alg zuc-eea3 --key-file eea3.bin --count 1711494290 --bearer 15 \
		--direction 0 --bits 193 --in eea3.pt --in-hex --json |
		python3 -c 'import json,sys,base64; print(base64.b64decode(json.load(sys.stdin)["ciphertext_b64"]).hex())')" \
	a6c85fc66afb8533aafc2518dfe784940ee1e4b030238cc800
echo 00000000000000000000000000000000 >eia3.key
expect_eq "128-EIA3 test set 1" \
	"$(echo 00000000 | q mac --alg zuc-eia3 --key-file eia3.key --count 0 --bearer 0 \
		--direction 0 --bits 1 --in-hex)" c8a9595e
echo 00000000 | q mac --alg zuc-eia3 --key-file eia3.key --count 0 --bearer 0 --direction 0 \
	--bits 1 --in-hex --expect c8a9595e | grep -q 'MAC OK' || fail "mac --expect match"
checks=$((checks + 1))
echo 00000000 >eia3.msg
expect_fail "MAC mismatch" mac --alg zuc-eia3 --key-file eia3.key --count 0 --bearer 0 \
	--direction 1 --bits 1 --in eia3.msg --in-hex --expect c8a9595e

# ---- HMAC (RFC 4231 test case 2 has a 4-byte key; use our own 32-byte key
# and compare with Python's hmac) ----
head -c 32 /dev/urandom >hmac.key
head -c 1000 /dev/urandom >msg.bin
want=$(python3 -c 'import hmac,hashlib; print(hmac.new(open("hmac.key","rb").read(), open("msg.bin","rb").read(), hashlib.sha256).hexdigest())')
expect_eq "hmac-sha256" "$(q mac --alg hmac-sha256 --key-file hmac.key --in msg.bin)" "$want"
q mac --alg hmac-sm3 --key-file hmac.key --in msg.bin --json | python3 -c \
	'import json,sys; o=json.load(sys.stdin); assert o["alg"]=="hmac-sm3" and len(o["mac"])==64' ||
	fail "hmac-sm3 --json"
checks=$((checks + 1))

# ---- keygen: modes, sizes, never printed ----
for alg in sm4 sm4-ctr-hmac-sm3 aes-256-gcm zuc hmac-sm3; do
	out=$(q keygen --alg "$alg" --out "key.$alg")
	expect_eq "keygen $alg mode" "$(stat -c %a "key.$alg")" 600
	case "$out" in *"(hidden"*) ;; *) fail "keygen $alg: output '$out'" ;; esac
done
expect_eq "keygen aes size" "$(stat -c %s key.aes-256-gcm)" 32
expect_eq "keygen zuc size" "$(stat -c %s key.zuc)" 16
expect_eq "keygen --out - prints 32 bytes" "$(q keygen --alg aes-256 --out - | wc -c)" 32
chmod 644 key.zuc
expect_fail "refusing" keygen --alg zuc --out key.zuc

# ---- encrypt/decrypt round trips, tamper, wrong key ----
head -c 100000 /dev/urandom >pt.bin
: >empty.bin
for alg in aes-256-gcm sm4 sm4-ctr-hmac-sm3; do
	q encrypt --alg "$alg" --key-file "key.$alg" --in pt.bin --out "ct.$alg"
	q decrypt --key-file "key.$alg" --in "ct.$alg" --out "back.$alg"
	cmp -s pt.bin "back.$alg" || fail "$alg round trip"
	q decrypt --alg "$alg" --key-file "key.$alg" --in "ct.$alg" | cmp -s pt.bin - ||
		fail "$alg round trip with --alg, stdout"
	q encrypt --alg "$alg" --key-file "key.$alg" --in empty.bin |
		q decrypt --key-file "key.$alg" | cmp -s empty.bin - || fail "$alg empty message"
	printf 'hello' | q encrypt --alg "$alg" --key-file "key.$alg" --aad hdr1 --out aad.ct
	expect_eq "$alg with aad" "$(q decrypt --key-file "key.$alg" --aad hdr1 --in aad.ct)" hello
	expect_fail "authentication failed" decrypt --key-file "key.$alg" --aad hdr2 --in aad.ct
	# flip one bit in the middle of the ciphertext
	python3 -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[len(b)//2]^=1; open(sys.argv[2],"wb").write(b)' \
		"ct.$alg" tampered.ct
	expect_fail "authentication failed" decrypt --key-file "key.$alg" --in tampered.ct
	[ ! -e tampered.out ] || rm tampered.out
	expect_fail "authentication failed" decrypt --key-file "key.$alg" --in tampered.ct \
		--out tampered.out
	[ ! -s tampered.out ] || fail "$alg: plaintext written despite a bad tag"
	q keygen --alg "$alg" --out other.key >/dev/null
	expect_fail "authentication failed" decrypt --key-file other.key --in "ct.$alg"
	rm other.key
	checks=$((checks + 3))
done
# the hex key file form
python3 -c 'print(open("key.aes-256-gcm","rb").read().hex())' >aes.hex
expect_eq "hex key file" "$(q decrypt --key-file aes.hex --in ct.aes-256-gcm | sha256sum)" \
	"$(sha256sum <pt.bin)"
# downgrade: the message's algorithm must match --alg
expect_fail "not sm4-ctr-hmac-sm3" decrypt --alg sm4-ctr-hmac-sm3 --key-file key.aes-256-gcm \
	--in ct.aes-256-gcm
# zuc-eea3 is its own inverse with the same parameters
q encrypt --alg zuc-eea3 --key-file key.zuc --count 7 --bearer 3 --direction 1 --in pt.bin --out ct.zuc
q decrypt --alg zuc-eea3 --key-file key.zuc --count 7 --bearer 3 --direction 1 --in ct.zuc |
	cmp -s pt.bin - || fail "zuc-eea3 round trip"
checks=$((checks + 1))
# SM4-GCM: works where OpenSSL has it, else a clear error pointing to sm4
rc=0
printf x | q encrypt --alg sm4-gcm --key-file key.zuc >sm4gcm.ct 2>err || rc=$?
if [ "$rc" = 0 ]; then
	expect_eq "sm4-gcm round trip" "$(q decrypt --key-file key.zuc --in sm4gcm.ct)" x
else
	[ "$rc" = 1 ] && grep -q "not available.*--alg sm4" err || fail "sm4-gcm: $(cat err)"
	checks=$((checks + 1))
fi

# ---- SM2 ----
out=$(q keygen --alg sm2 --out sm2.pem --pub-out sm2.pub)
expect_eq "sm2 private key mode" "$(stat -c %a sm2.pem)" 600
grep -q 'BEGIN PUBLIC KEY' sm2.pub || fail "sm2 public key PEM"
case "$out" in *"(hidden"*) ;; *) fail "keygen sm2: '$out'" ;; esac
q sign --alg sm2 --key-file sm2.pem --in pt.bin --out sig.der
q sign --key-file sm2.pem --in pt.bin >sig.hex
expect_eq "verify DER sig" "$(q verify --alg sm2 --key-file sm2.pub --sig sig.der --in pt.bin | cut -c1-12)" \
	"signature OK"
expect_eq "verify hex sig" "$(q verify --key-file sm2.pub --sig sig.hex --in pt.bin | cut -c1-12)" \
	"signature OK"
q verify --key-file sm2.pub --sig sig.hex --in pt.bin --json | python3 -c \
	'import json,sys; assert json.load(sys.stdin)["valid"] is True' || fail "verify --json"
python3 -c 'import sys; b=bytearray(open("pt.bin","rb").read()); b[0]^=1; open("pt2.bin","wb").write(b)'
expect_fail "signature verification failed" verify --key-file sm2.pub --sig sig.der --in pt2.bin
q keygen --alg sm2 --out other.pem --pub-out other.pub >/dev/null
expect_fail "signature verification failed" verify --key-file other.pub --sig sig.der --in pt.bin
expect_fail "signature verification failed" verify --key-file sm2.pub --sig sig.der --in pt.bin \
	--id other-id
expect_fail "only a public key" sign --key-file sm2.pub --in pt.bin
expect_fail "not a PEM" sign --key-file key.zuc --in pt.bin

# ---- random: OS, a healthy file source, a stuck source ----
expect_eq "random hex length" "$(q random --bytes 32 | tr -d '\n' | wc -c)" 64
q random --bytes 100000 --out rand.bin >/dev/null
expect_eq "random file size" "$(stat -c %s rand.bin)" 100000
expect_eq "random file mode" "$(stat -c %a rand.bin)" 600
head -c 50000 /dev/urandom >raw.samples
q random --bytes 64 --source raw.samples --min-entropy 6 --json | python3 -c \
	'import json,sys; o=json.load(sys.stdin); assert len(o["random_hex"])==128 and o["health"]["raw_samples"]>=1024' ||
	fail "random --source --json"
checks=$((checks + 1))
head -c 20000 /dev/zero >stuck.samples
expect_fail "health test.*repetition count" random --bytes 16 --source stuck.samples
expect_fail "ran out of samples" random --bytes 16 --source empty.bin

# ---- malformed input to every subcommand ----
expect_fail "unknown option" hash --bogus
expect_fail "not sm3" hash --alg md5
expect_fail "cannot open input" hash --in no-such-file
expect_fail "not hex" hash --in pt.bin --in-hex
expect_fail "unknown command" no-such-subcommand
expect_fail "unknown option" encrypt --alg aes-256-gcm --key-file key.aes-256-gcm --bogus
expect_fail "--alg ALG is required" encrypt --key-file key.aes-256-gcm --in pt.bin
expect_fail "--key-file F is required" encrypt --alg aes-256-gcm --in pt.bin
expect_fail "is not aes-256-gcm" encrypt --alg des --key-file key.aes-256-gcm --in pt.bin
expect_fail "cannot open key file" encrypt --alg aes-256-gcm --key-file no-such-key --in pt.bin
expect_fail "cannot open input" encrypt --alg aes-256-gcm --key-file key.aes-256-gcm --in nope
head -c 10 /dev/urandom >short.key
expect_fail "expected 32 raw bytes" encrypt --alg aes-256-gcm --key-file short.key --in pt.bin
expect_fail "expected 16 raw bytes" encrypt --alg zuc-eea3 --key-file short.key --count 1 \
	--bearer 1 --direction 0 --in pt.bin
expect_fail "--bearer: '40'" encrypt --alg zuc-eea3 --key-file key.zuc --count 1 --bearer 40 \
	--direction 0 --in pt.bin
expect_fail "--direction" encrypt --alg zuc-eea3 --key-file key.zuc --count 1 --bearer 1 \
	--direction 2 --in pt.bin
expect_fail "--count" encrypt --alg zuc-eea3 --key-file key.zuc --count 0x1ffffffff --bearer 1 \
	--direction 0 --in pt.bin
expect_fail "--count" encrypt --alg zuc-eea3 --key-file key.zuc --count -1 --bearer 1 \
	--direction 0 --in pt.bin
expect_fail "needs --count" encrypt --alg zuc-eea3 --key-file key.zuc --in pt.bin
expect_fail "--bits 1000 needs 125" encrypt --alg zuc-eea3 --key-file key.zuc --count 1 \
	--bearer 1 --direction 0 --bits 1000 --in abc
expect_fail "are for the zuc" encrypt --alg aes-256-gcm --key-file key.aes-256-gcm --count 1 \
	--in pt.bin
expect_fail "not a qwave sealed message" decrypt --key-file key.aes-256-gcm --in abc
expect_fail "not a qwave sealed message" decrypt --key-file key.aes-256-gcm --in empty.bin
expect_fail "--key-file F is required" decrypt --in ct.aes-256-gcm
expect_fail "needs a value" decrypt --key-file
expect_fail "is not zuc-eia3" mac --alg cmac --key-file hmac.key --in msg.bin
expect_fail "--alg ALG is required" mac --key-file hmac.key --in msg.bin
expect_fail "HMAC key needs" mac --alg hmac-sm3 --key-file short.key --in msg.bin
expect_fail "not hex" mac --alg hmac-sm3 --key-file hmac.key --in msg.bin --expect xyz
expect_fail "unexpected argument" sign stray --key-file sm2.pem
expect_fail "is not sm2" sign --alg rsa --key-file sm2.pem --in pt.bin
expect_fail "cannot read key file" sign --key-file no-such.pem --in pt.bin
expect_fail "--sig FILE is required" verify --key-file sm2.pub --in pt.bin
expect_fail "cannot open signature file" verify --key-file sm2.pub --sig nope --in pt.bin
expect_fail "odd number of hex digits" verify --key-file sm2.pub --sig abc --in pt.bin
expect_fail "signature verification failed" verify --key-file sm2.pub --sig msg.bin --in pt.bin
expect_fail "--out FILE is required" keygen --alg sm4
expect_fail "not a known key type" keygen --alg rsa --out x.key
expect_fail "--alg ALG is required" keygen --out x.key
expect_fail "--bytes N is required" random
expect_fail "--bytes: 'abc'" random --bytes abc
expect_fail "--bytes: '0'" random --bytes 0
expect_fail "--bytes: '-5'" random --bytes -5
expect_fail "1 GiB" random --bytes 2000000000
expect_fail "--min-entropy" random --bytes 16 --source raw.samples --min-entropy 9
expect_fail "--bits-per-sample" random --bytes 16 --source raw.samples --bits-per-sample 0
expect_fail "cannot open entropy source" random --bytes 16 --source no-such-device
expect_fail "--json prints" hash --in abc --json --out -
[ ! -e x.key ] || fail "a failed keygen left x.key behind"

echo "cli crypto: $checks checks passed"
