#!/usr/bin/env bash
# Two trusted nodes from examples/pair.conf: qwave net up, pools filled by
# the simulated QKD link, ETSI GS QKD 014 with mutual TLS (status, enc_keys
# and dec_keys by GET and POST, the same keys at both ends, spec errors, 401
# for the wrong SAE, no client certificate refused), metrics and the
# dashboard, then qwave net down leaving no qwaved running.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || { echo "SKIP: curl not installed"; exit 77; }
extra=
# shellcheck disable=SC2317 # called by the EXIT trap (lib.sh)
qw_cleanup_hook() { for p in $extra; do kill -9 "$p" 2>/dev/null || true; done; }

qw_net_up "$src/examples/pair.conf"
url_a=$(json '[n for n in d["nodes"] if n["id"]=="node-a"][0]["kme_url"]' <"$dir/up.json")
url_b=$(json '[n for n in d["nodes"] if n["id"]=="node-b"][0]["kme_url"]' <"$dir/up.json")
met_a=$(json '[n for n in d["nodes"] if n["id"]=="node-a"][0]["metrics_url"]' <"$dir/up.json")
cert_a=$(json '[s for s in d["saes"] if s["id"]=="sae-a"][0]["cert"]' <"$dir/up.json")
key_a=$(json '[s for s in d["saes"] if s["id"]=="sae-a"][0]["key"]' <"$dir/up.json")
cert_b=$(json '[s for s in d["saes"] if s["id"]=="sae-b"][0]["cert"]' <"$dir/up.json")
key_b=$(json '[s for s in d["saes"] if s["id"]=="sae-b"][0]["key"]' <"$dir/up.json")
[ "$(json 'len(d["nodes"])' <"$dir/up.json")" = 2 ] || fail "two nodes expected"
ok
# a second net up on the same state directory is refused while it runs
if "$QWAVE" net up "$src/examples/pair.conf" --state-dir "$state" >/dev/null 2>"$dir/err"; then
	fail "second net up accepted"
fi
grep -q "already up" "$dir/err" || fail "second net up: $(cat "$dir/err")"
ok

A=(curl -sS --max-time 20 --cacert "$ca" --cert "$cert_a" --key "$key_a")
B=(curl -sS --max-time 20 --cacert "$ca" --cert "$cert_b" --key "$key_b")

# wait (up to 5 minutes on a loaded machine) for the link to fill the pool
n=0
for _ in $(seq 300); do
	n=$("${A[@]}" "$url_a/api/v1/keys/sae-b/status" | json 'd["stored_key_count"]' 2>/dev/null || echo 0)
	[ "$n" -ge 8 ] && break
	sleep 1
done
[ "$n" -ge 8 ] || fail "the pool did not fill (stored_key_count $n)"
ok

st=$("${A[@]}" "$url_a/api/v1/keys/sae-b/status")
[ "$(echo "$st" | json 'd["source_KME_ID"]')" = node-a ] || fail "status source: $st"
[ "$(echo "$st" | json 'd["target_KME_ID"]')" = node-b ] || fail "status target: $st"
[ "$(echo "$st" | json 'd["master_SAE_ID"]+" "+d["slave_SAE_ID"]')" = "sae-a sae-b" ] || fail "status SAEs: $st"
[ "$(echo "$st" | json 'd["key_size"]')" = 256 ] || fail "status key_size: $st"
ok

# enc_keys GET at node-a (master sae-a), dec_keys GET at node-b (slave sae-b)
enc=$("${A[@]}" "$url_a/api/v1/keys/sae-b/enc_keys?number=2&size=512")
[ "$(echo "$enc" | json 'len(d["keys"])')" = 2 ] || fail "enc_keys GET: $enc"
id0=$(echo "$enc" | json 'd["keys"][0]["key_ID"]')
id1=$(echo "$enc" | json 'd["keys"][1]["key_ID"]')
[ "$(echo "$enc" | json 'len(__import__("base64").b64decode(d["keys"][0]["key"]))')" = 64 ] ||
	fail "512-bit key is not 64 bytes"
# 401: another SAE cannot fetch them, and they stay deliverable
code=$("${A[@]}" -o "$dir/out" -w '%{http_code}' "$url_b/api/v1/keys/sae-a/dec_keys?key_ID=$id0")
[ "$code" = 401 ] || fail "dec_keys by the wrong SAE: HTTP $code $(cat "$dir/out")"
ok
dec=$("${B[@]}" "$url_b/api/v1/keys/sae-a/dec_keys?key_ID=$id0")
[ "$(echo "$dec" | json 'd["keys"][0]["key"]')" = "$(echo "$enc" | json 'd["keys"][0]["key"]')" ] ||
	fail "dec_keys GET returned another key"
# POST with the other ID
dec=$("${B[@]}" -H 'Content-Type: application/json' -d "{\"key_IDs\":[{\"key_ID\":\"$id1\"}]}" \
	"$url_b/api/v1/keys/sae-a/dec_keys")
[ "$(echo "$dec" | json 'd["keys"][0]["key"]')" = "$(echo "$enc" | json 'd["keys"][1]["key"]')" ] ||
	fail "dec_keys POST returned another key: $dec"
ok
# delivered once: a second request finds nothing
code=$("${B[@]}" -o "$dir/out" -w '%{http_code}' "$url_b/api/v1/keys/sae-a/dec_keys?key_ID=$id0")
[ "$code" = 400 ] || fail "second dec_keys: HTTP $code"
grep -q "not found" "$dir/out" || fail "second dec_keys message: $(cat "$dir/out")"
ok

# the other direction: enc_keys POST at node-b (master sae-b), dec at node-a
enc=$("${B[@]}" -H 'Content-Type: application/json' -d '{"number":3,"size":256}' \
	"$url_b/api/v1/keys/sae-a/enc_keys")
[ "$(echo "$enc" | json 'len(d["keys"])')" = 3 ] || fail "enc_keys POST: $enc"
ids=$(echo "$enc" | json '",".join("{\"key_ID\":\"%s\"}" % k["key_ID"] for k in d["keys"])')
dec=$("${A[@]}" -H 'Content-Type: application/json' -d "{\"key_IDs\":[$ids]}" \
	"$url_a/api/v1/keys/sae-b/dec_keys")
[ "$(echo "$dec" | json '[k["key"] for k in d["keys"]]')" = "$(echo "$enc" | json '[k["key"] for k in d["keys"]]')" ] ||
	fail "keys differ between the two nodes"
ok

# spec errors: size not a multiple of 8, over the limits, unknown slave
for q in "size=100" "size=16384" "number=1000"; do
	code=$("${A[@]}" -o "$dir/out" -w '%{http_code}' "$url_a/api/v1/keys/sae-b/enc_keys?$q")
	[ "$code" = 400 ] || fail "enc_keys?$q: HTTP $code $(cat "$dir/out")"
done
code=$("${A[@]}" -o "$dir/out" -w '%{http_code}' "$url_a/api/v1/keys/nobody/status")
[ "$code" = 400 ] || [ "$code" = 404 ] || fail "status for an unknown slave: HTTP $code"
ok

# no client certificate: refused in the TLS handshake
if curl -sS --max-time 10 --cacert "$ca" "$url_a/api/v1/keys/sae-b/status" >/dev/null 2>&1; then
	fail "a client without certificate was served"
fi
ok

# metrics
"${A[@]}" -D "$dir/headers" "$met_a" >"$dir/metrics" || fail "metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$dir/headers" || fail "metrics content type"
grep -q '^qwave_pool_bits{node="node-a",peer="node-b"} [0-9]' "$dir/metrics" || fail "metrics: pool"
grep -q '^qwave_keys_delivered_total{node="node-a",peer="node-b",role="master"} 2$' "$dir/metrics" ||
	fail "metrics: delivered: $(grep delivered "$dir/metrics")"
grep -q '^qwave_etsi_requests_total{node="node-a",code="200"}' "$dir/metrics" || fail "metrics: requests"
grep -q '^qwave_qkd_qber{node="node-a",peer="node-b"} 0\.0[0-9]' "$dir/metrics" || fail "metrics: QBER"
grep -q '^qwave_qkd_secret_key_rate_bps{node="node-a",peer="node-b"} [1-9]' "$dir/metrics" ||
	fail "metrics: key rate"
ok

# the dashboard on the same listener: node-a's own view (node, neighbour,
# link with QBER and pool) as JSON, and the page
dash_a=${met_a%/metrics}
"${A[@]}" -D "$dir/headers" "$dash_a/api/network" >"$dir/net.json" || fail "dashboard: /api/network"
grep -qi '^content-type: application/json' "$dir/headers" || fail "dashboard: JSON content type"
python3 - "$dir/net.json" <<'EOP' || fail "dashboard: $(cat "$dir/net.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["self"] == "node-a"
assert sorted(n["id"] for n in d["nodes"]) == ["node-a", "node-b"]
l = d["links"][0]
assert len(d["links"]) == 1 and (l["a"], l["b"]) == ("node-a", "node-b") and l["up"] is True
assert 0 < l["qber"] < 0.11 and l["qber_alarm"] is False and l["key_rate_bps"] > 0
assert isinstance(l["pool_bits"]["a"], int) and l["pool_bits"]["a"] >= 0
assert l["length_km"] == 25
EOP
"${A[@]}" -D "$dir/headers" -o "$dir/page" "$dash_a/dashboard" || fail "dashboard page"
grep -qi '^content-type: text/html' "$dir/headers" || fail "dashboard: page content type"
grep -qi '<html' "$dir/page" || fail "dashboard: no HTML page"
ok

# A link fed by an external source: node-c and node-d take their link keys
# from the pair's KMEs over ETSI 014 (node-c is SAE sae-a at node-a and
# pulls as master, node-d is SAE sae-b at node-b and fetches by key IDs),
# and serve them to their own SAEs.
for id in node-c node-d; do "$QWAVE" pki issue --dir "$state/pki" --kind node --id $id >/dev/null; done
for id in sae-c sae-d; do "$QWAVE" pki issue --dir "$state/pki" --kind sae --id $id >/dev/null; done
port_d=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
vendor_conf() { # id listen role url sae_cert sae_key peer_sae [address]
	cat <<EOC
[node]
id = $1
data_dir = $dir/$1
listen = $2
cert = $state/pki/node-$1.crt
key = $state/pki/node-$1.key
ca = $ca
sync = normal
[etsi]
listen = 127.0.0.1:0
[link]
peer = $([ "$1" = node-c ] && echo node-d || echo node-c)
${8:+address = $8}
source = etsi014
kme_role = $3
kme_url = $4
kme_cert = $5
kme_key = $6
kme_ca = $ca
kme_peer_sae = $7
kme_batch = 8
kme_poll_ms = 200
[sae]
id = sae-c
node = node-c
[sae]
id = sae-d
node = node-d
EOC
}
vendor_conf node-c 127.0.0.1:0 master "$url_a" "$cert_a" "$key_a" sae-b "127.0.0.1:$port_d" >"$dir/c.conf"
vendor_conf node-d "127.0.0.1:$port_d" slave "$url_b" "$cert_b" "$key_b" sae-a >"$dir/d.conf"
"$QWAVED" -c "$dir/c.conf" --check >/dev/null || fail "node-c config"
"$QWAVED" -c "$dir/c.conf" 2>"$dir/c.log" </dev/null >/dev/null &
pid_c=$!
"$QWAVED" -c "$dir/d.conf" 2>"$dir/d.log" </dev/null >/dev/null &
pid_d=$!
extra="$pid_c $pid_d"
C=(curl -sS --max-time 20 --cacert "$ca" --cert "$state/pki/sae-sae-c.crt" --key "$state/pki/sae-sae-c.key")
D=(curl -sS --max-time 20 --cacert "$ca" --cert "$state/pki/sae-sae-d.crt" --key "$state/pki/sae-sae-d.key")
for _ in $(seq 100); do [ -s "$dir/node-c/status.json" ] && [ -s "$dir/node-d/status.json" ] && break; sleep 0.2; done
[ -s "$dir/node-c/status.json" ] && [ -s "$dir/node-d/status.json" ] ||
	{ cat "$dir/c.log" "$dir/d.log" >&2; fail "node-c/node-d did not start"; }
url_c="https://127.0.0.1:$(json 'd["etsi_port"]' <"$dir/node-c/status.json")"
url_d="https://127.0.0.1:$(json 'd["etsi_port"]' <"$dir/node-d/status.json")"
n=0
for _ in $(seq 120); do
	n=$("${C[@]}" "$url_c/api/v1/keys/sae-d/status" | json 'd["stored_key_count"]' 2>/dev/null || echo 0)
	[ "$n" -ge 2 ] && break
	sleep 0.5
done
[ "$n" -ge 2 ] || { cat "$dir/c.log" "$dir/d.log" >&2; fail "external source: no keys at node-c"; }
enc=$("${C[@]}" "$url_c/api/v1/keys/sae-d/enc_keys?number=2")
ids=$(echo "$enc" | json '",".join("{\"key_ID\":\"%s\"}" % k["key_ID"] for k in d["keys"])')
dec=$("${D[@]}" -H 'Content-Type: application/json' -d "{\"key_IDs\":[$ids]}" "$url_d/api/v1/keys/sae-c/dec_keys")
[ "$(echo "$dec" | json '[k["key"] for k in d["keys"]]')" = "$(echo "$enc" | json '[k["key"] for k in d["keys"]]')" ] ||
	fail "external source: keys differ: $enc / $dec"
kill -TERM "$pid_c" "$pid_d"
wait "$pid_c" "$pid_d" || fail "node-c/node-d did not stop cleanly"
extra=
ok

# kill -9 node-b and restart it: the KM link resynchronises, keys delivered
# before the crash stay delivered, new keys agree at both ends
qw_restart_node node-b
url_b=$(qw_url node-b)
enc=
for _ in $(seq 60); do
	enc=$("${A[@]}" "$url_a/api/v1/keys/sae-b/enc_keys?number=1" 2>/dev/null || true)
	echo "$enc" | grep -q key_ID && break
	sleep 0.5
done
echo "$enc" | grep -q key_ID || fail "no keys after node-b restarted: $enc"
id2=$(echo "$enc" | json 'd["keys"][0]["key_ID"]')
dec=$("${B[@]}" "$url_b/api/v1/keys/sae-a/dec_keys?key_ID=$id2")
[ "$(echo "$dec" | json 'd["keys"][0]["key"]')" = "$(echo "$enc" | json 'd["keys"][0]["key"]')" ] ||
	fail "keys differ after the restart: $dec"
code=$("${B[@]}" -o "$dir/out" -w '%{http_code}' "$url_b/api/v1/keys/sae-a/dec_keys?key_ID=$id0")
[ "$code" = 400 ] || fail "a key delivered before kill -9 was delivered again: HTTP $code"
# into a file first: grep -q ending a pipe early makes curl fail (error 23)
# under pipefail once the metrics outgrow the pipe buffer
"${A[@]}" "$met_a" >"$dir/metrics2" || fail "metrics after the restart"
grep -q '^qwave_km_resyncs_total{node="node-a",peer="node-b"} [2-9]' "$dir/metrics2" ||
	fail "no resynchronisation counted after the restart"
"${A[@]}" "$dash_a/api/network" | json '[a["kind"] + " " + str(a["link"]) for a in d["alarms"]]' |
	grep -q "link_down node-a-node-b" || fail "dashboard: no link_down alarm after the restart"
ok
# the QKD link distils again after the crash (on a key never used before)
before=$(grep -c "bits to the pool" "$state/nodes/node-b.log" || true)
for _ in $(seq 240); do
	[ "$(grep -c "bits to the pool" "$state/nodes/node-b.log" || true)" -gt "$before" ] && break
	grep -q "out of step\|no unused authentication key" "$state/nodes/node-b.log" &&
		fail "QKD link halted after the restart"
	sleep 0.5
done
[ "$(grep -c "bits to the pool" "$state/nodes/node-b.log" || true)" -gt "$before" ] ||
	fail "no QKD session completed after the restart"
ok

qw_net_down
grep -q "stopped" "$state/nodes/node-a.log" || fail "node-a did not stop cleanly"
"$QWAVE" net down --state-dir "$state" >/dev/null || fail "net down is not idempotent"
ok
echo "pair: $passed passed, 0 failed"
