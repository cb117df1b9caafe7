#!/bin/bash
# Scenario (white paper chapter 5): disaster-recovery backup between two
# data centres. A file is copied from site A to site B encrypted with
# AES-256-GCM, with a new key every N MB. The keys come from the QKD
# network: two trusted nodes joined by a simulated QKD link
# (examples/pair.conf, `qwave net up`); the Key Service Center takes each
# key from node-a's KME over ETSI GS QKD 014 (source "qkd") and hands it to
# the two sites' backup gateways wrapped under their pre-filled keys.
# Run: examples/ksc/dr-backup.sh [FILE_MB] [CHUNK_MB]
. "$(dirname "$0")/common.sh"
file_mb=${1:-6}
chunk_mb=${2:-1}
QWAVED=${QWAVED:-$(dirname "$QWAVE")/qwaved}
export QWAVED

say "the QKD network: node-a and node-b, 25 km of fibre (qwave net up examples/pair.conf)"
"$QWAVE" net up "$src/examples/pair.conf" --state-dir "$W/net" --json >"$W/up.json" || die "net up"
ksc_cleanup_hooks+=("\"$QWAVE\" net down --state-dir \"$W/net\" >/dev/null 2>&1")
kme_a=$(jq -r '.nodes[] | select(.id == "node-a") | .kme_url' "$W/up.json")
net_ca=$(jq -r .ca "$W/up.json")
sae_crt=$(jq -r '.saes[] | select(.id == "sae-a") | .cert' "$W/up.json")
sae_key=$(jq -r '.saes[] | select(.id == "sae-a") | .key' "$W/up.json")
printf 'waiting for the link to distil keys'
n=0
for _ in $(seq 300); do
	n=$("$QWAVE" keys status --slave sae-b --kme "$kme_a" --cert "$sae_crt" --key "$sae_key" \
		--cacert "$net_ca" --json 2>/dev/null | jq -r .stored_key_count 2>/dev/null || echo 0)
	[ "${n:-0}" -ge $((file_mb / chunk_mb + 2)) ] && break
	printf '.'
	sleep 1
done
echo " $n keys in node-a's pool for sae-a -> sae-b"
[ "${n:-0}" -ge $((file_mb / chunk_mb + 2)) ] || die "the QKD link did not produce keys"

# the KSC is SAE sae-a of the QKD network towards sae-b
ksc_up "kme_url = $kme_a
kme_cert = $sae_crt
kme_key = $sae_key
kme_ca = $net_ca
kme_slave_sae = sae-b"
# the KSC keeps a pool of QKD key fetched in the background; wait for it
need=$(( (file_mb / chunk_mb + 1) * 256 ))
for _ in $(seq 100); do
	have=$(as root ksc status --json | jq -r .qkd_pool_bits)
	[ "${have:-0}" -ge "$need" ] && break
	sleep 0.2
done
as root ksc status --json | jq -c '{key_source, qkd_source, qkd_pool_bits, qkd_last_fetch}'

say "the two sites' backup gateways (server crypto machines), filled offline"
device_setup dr-site-a server-crypto 65536 65536
device_setup dr-site-b server-crypto 65536 65536
principal dr-backup
as op ksc app add --id dr-backup >/dev/null || die "app"
for d in dr-site-a dr-site-b; do
	as op ksc app grant --id dr-backup --device $d >/dev/null || die "grant $d"
done

say "site A: $file_mb MB to back up, a new QKD key every $chunk_mb MB"
head -c $((file_mb * 1048576)) /dev/urandom >"$W/database.dump"
mkdir -p "$W/site-b"
split -b $((chunk_mb * 1048576)) -d -a 3 "$W/database.dump" "$W/chunk."
i=0
for c in "$W"/chunk.*; do
	i=$((i + 1))
	as dr-backup ksc call POST /sessions '{"a":"dr-site-a","b":"dr-site-b","source":"qkd"}' \
		>"$W/key$i.json" || die "key for chunk $i"
	src_label=$(jq -r .source "$W/key$i.json")
	case $src_label in qkd:*) ;; *) die "chunk $i key not from the QKD network: $src_label" ;; esac
	"$QWAVE" device unwrap --dir "$W/dev-dr-site-a" --from "$W/key$i.json" --out "$W/ka$i" >/dev/null ||
		die "site A unwraps key $i"
	"$QWAVE" crypto encrypt --alg aes-256-gcm --key-file "$W/ka$i" --aad "chunk $i" --in "$c" \
		--out "$W/site-b/chunk$i.enc" || die "encrypt chunk $i"
	cp "$W/key$i.json" "$W/site-b/key$i.json" # the wrapped key travels with the chunk
	rm -f "$W/ka$i"
	printf 'chunk %d: %d bytes, key %s from %s\n' "$i" "$(stat -c %s "$c")" \
		"$(jq -r .session_id "$W/key$i.json" | cut -c1-8)" "$src_label"
done

say "site B: unwrap each key, decrypt, reassemble"
: >"$W/site-b/database.dump"
for j in $(seq "$i"); do
	"$QWAVE" device unwrap --dir "$W/dev-dr-site-b" --from "$W/site-b/key$j.json" --out "$W/kb$j" >/dev/null ||
		die "site B unwraps key $j"
	"$QWAVE" crypto decrypt --alg aes-256-gcm --key-file "$W/kb$j" --aad "chunk $j" \
		--in "$W/site-b/chunk$j.enc" --out "$W/site-b/chunk$j" || die "decrypt chunk $j"
	cat "$W/site-b/chunk$j" >>"$W/site-b/database.dump"
	rm -f "$W/kb$j"
done
cmp -s "$W/database.dump" "$W/site-b/database.dump" || die "site B's copy differs"
echo "site B's copy is identical: $(sha256sum <"$W/site-b/database.dump" | cut -c1-16)... ($file_mb MB)"
echo "$i keys used, each for at most $chunk_mb MB, all from the QKD network via the KSC"
echo "dr-backup: ok"
