# Shared by the Key Service Center scenario scripts in this folder: start a
# KSC of our own in a scratch directory, with a CA, an operator and helpers.
# Source it; it sets QWAVE, QWKSC, W (the scratch dir), KSC_URL and defines
# as/asdev/device_setup. Everything stops and goes when the script exits.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
QWAVE=${QWAVE:-$src/build/qwave}
QWKSC=${QWKSC:-$(dirname "$QWAVE")/qwksc}
for b in "$QWAVE" "$QWKSC"; do
	[ -x "$b" ] || { echo "no $b: build first (cmake --build build)" >&2; exit 1; }
done
W=$(mktemp -d /tmp/qwave-ksc-example.XXXXXX)
KSC_PID=
ksc_cleanup_hooks=()
ksc_cleanup() {
	for h in "${ksc_cleanup_hooks[@]+"${ksc_cleanup_hooks[@]}"}"; do eval "$h"; done
	if [ -n "$KSC_PID" ] && kill -0 "$KSC_PID" 2>/dev/null; then
		kill "$KSC_PID"
		for _ in $(seq 50); do kill -0 "$KSC_PID" 2>/dev/null || break; sleep 0.1; done
	fi
	[ -n "${KEEP:-}" ] && echo "kept $W" || rm -rf "$W"
}
trap ksc_cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
die() { echo "example failed: $*" >&2; exit 1; }

# principal ID: a certificate for ID (CN + SAN urn:qwave:sae:ID) from our CA
principal() { "$QWAVE" pki issue --dir "$W/pki" --kind sae --id "$1" >/dev/null || die "certificate for $1"; }
# as ID qwave-args...: run qwave with ID's certificate
as() { local who=$1; shift; "$QWAVE" "$@" --cert "$W/pki/sae-$who.crt" --key "$W/pki/sae-$who.key"; }
# asdev ID device-args...: the device side of ID (its medium is $W/dev-ID)
asdev() { local who=$1 c=$2; shift 2; "$QWAVE" device "$c" --dir "$W/dev-$who" --cert "$W/pki/sae-$who.crt" --key "$W/pki/sae-$who.key" "$@"; }

# ksc_up [extra config lines]: CA, KSC certificate, init with super admin
# "root", start, operator "op".
ksc_up() {
	"$QWAVE" pki init --dir "$W/pki" >/dev/null || die "pki init"
	"$QWAVE" pki issue --dir "$W/pki" --kind node --id ksc >/dev/null || die "ksc certificate"
	principal root
	principal op
	cat >"$W/ksc.conf" <<CONF
[ksc]
data_dir = $W/ksc-data
cert = $W/pki/node-ksc.crt
key = $W/pki/node-ksc.key
ca = $W/pki/ca.crt
pki_dir = $W/pki
sync = normal
${1:-}
CONF
	"$QWKSC" -c "$W/ksc.conf" init --admin root >/dev/null || die "qwksc init"
	"$QWKSC" -c "$W/ksc.conf" >"$W/ksc.log" 2>&1 &
	KSC_PID=$!
	for _ in $(seq 100); do [ -s "$W/ksc-data/status.json" ] && break; sleep 0.05; done
	[ -s "$W/ksc-data/status.json" ] || die "qwksc did not start: $(cat "$W/ksc.log")"
	KSC_URL=https://localhost:$(jq -r .port "$W/ksc-data/status.json")
	export QWAVE_KSC_URL=$KSC_URL QWAVE_CACERT=$W/pki/ca.crt
	as root ksc admin add --id op --role operator >/dev/null || die "operator"
	echo "KSC running at $KSC_URL (pid $KSC_PID, data in $W/ksc-data)"
}

# device_setup ID KIND QUOTA_BITS FILL_BITS: register, personalise the
# medium, fill it offline at the "service point", import the image
device_setup() {
	local id=$1 kind=$2 quota=$3 bits=$4
	principal "$id"
	as op ksc device register --id "$id" --kind "$kind" --owner "owner of $id" \
		--quota "$quota" --out "$W/$id.medium" >/dev/null || die "register $id"
	"$QWAVE" device init --dir "$W/dev-$id" --id "$id" --medium-key "$W/$id.medium" >/dev/null ||
		die "personalise $id"
	as op ksc device fill --id "$id" --bits "$bits" --out "$W/$id.img" >/dev/null || die "fill $id"
	"$QWAVE" device import --dir "$W/dev-$id" --image "$W/$id.img" >/dev/null || die "import $id"
	echo "device $id ($kind): $bits bits of key on its medium"
}
