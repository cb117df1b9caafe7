#!/usr/bin/env bash
# No key is delivered twice across a kill -9 and restart of either node in
# the middle of a request storm (docs/operations.md, "Durability and
# crashes"). The pair from examples/pair.conf fills its pools; parallel
# clients ask node-a for keys (enc_keys POST, master sae-a, slave sae-b)
# while node-a and then node-b are killed with SIGKILL and restarted. Then:
# every key the master SAE received has a unique ID and unique material; at
# node-b it is either fetched by sae-b with the same material or reported
# not found (a key cut by a crash), never different material; at least 90%
# are fetched; a second fetch of each is refused; metrics and status answer;
# net down leaves no qwaved running.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || { echo "SKIP: curl not installed"; exit 77; }
storm_pids=
# shellcheck disable=SC2317 # called by the EXIT trap (lib.sh)
qw_cleanup_hook() {
	touch "$dir/stop" 2>/dev/null || true
	for p in $storm_pids; do
		pkill -9 -P "$p" 2>/dev/null || true
		kill -9 "$p" 2>/dev/null || true
	done
}
status_port() { qw_port "$1" "$2"; }

qw_net_up "$src/examples/pair.conf"
url_a=$(qw_url node-a)
url_b=$(qw_url node-b)
cert_a=$(qw_sae sae-a cert)
key_a=$(qw_sae sae-a key)
cert_b=$(qw_sae sae-b cert)
key_b=$(qw_sae sae-b key)
ok

A=(curl -sS --max-time 20 --cacert "$ca" --cert "$cert_a" --key "$key_a")
B=(curl -sS --max-time 20 --cacert "$ca" --cert "$cert_b" --key "$key_b")

# wait (up to 5 minutes on a loaded machine) for the link to fill the pool
qw_wait_keys sae-a sae-b 64 || fail "the pool did not fill"
ok

# The storm: each client sends up to 300 enc_keys POSTs (1 to 4 keys)
# until the stop file appears or 75 s pass. node-a's ETSI port changes when
# it restarts, so the clients read its URL from a file before every request.
# Failures while a node is down are expected and only recorded.
echo "$url_a" >"$dir/url_a"
mkdir "$dir/storm"
deadline=$(($(date +%s) + 75))
storm() {
	local c=$1 i=0 n code url
	mkdir "$dir/storm/$c"
	while [ $i -lt 300 ] && [ ! -e "$dir/stop" ] && [ "$(date +%s)" -lt $deadline ]; do
		i=$((i + 1))
		n=$((i % 4 + 1))
		url=$(cat "$dir/url_a")
		code=$(curl -s --max-time 10 --cacert "$ca" --cert "$cert_a" --key "$key_a" \
			-o "$dir/storm/$c/$i.json" -w '%{http_code}' -H 'Content-Type: application/json' \
			-d "{\"number\":$n}" "$url/api/v1/keys/sae-b/enc_keys") || code="$code curl-exit-$?"
		echo "$i $n $code" >>"$dir/storm/$c.codes"
	done
}
successes() { cat "$dir"/storm/*.codes 2>/dev/null | grep -c ' 200$' || true; }
# restart_node ID: kill -9, start qwaved on the node's generated
# configuration and data directory (lib.sh), wait for its KME to answer.
restart_node() {
	local id=$1 u
	qw_restart_node "$id"
	new_url=$(qw_url "$id")
	if [ "$id" = node-a ]; then
		u=("${A[@]}" "$new_url/api/v1/keys/sae-b/status")
	else
		u=("${B[@]}" "$new_url/api/v1/keys/sae-a/status")
	fi
	for _ in $(seq 150); do
		"${u[@]}" 2>/dev/null | grep stored_key_count >/dev/null && return 0
		sleep 0.2
	done
	fail "$id does not answer after the restart"
}
# wait until the storm got new keys (the KM link is back), up to 60 s
wait_keys() {
	local before
	before=$(successes)
	for _ in $(seq 300); do
		[ "$(successes)" -gt "$before" ] && return 0
		sleep 0.2
	done
	fail "no keys delivered $1"
}

for c in 1 2 3; do
	storm $c &
	storm_pids="$storm_pids $!"
done
wait_keys "at the start of the storm"
sleep 2
restart_node node-a
url_a=$new_url
echo "$url_a" >"$dir/url_a.tmp" && mv "$dir/url_a.tmp" "$dir/url_a"
wait_keys "after node-a restarted"
sleep 2
restart_node node-b
url_b=$new_url
wait_keys "after node-b restarted"
sleep 2
touch "$dir/stop"
for p in $storm_pids; do wait "$p"; done
storm_pids=
[ "$(date +%s)" -lt "$deadline" ] || fail "the storm ran into its deadline before both restarts were done"
echo "storm: $(cat "$dir"/storm/*.codes | wc -l) requests, $(successes) answered 200; others:" \
	"$(cut -d' ' -f3- "$dir"/storm/*.codes | grep -v '^200$' | sort | uniq -c | xargs)"
ok

# Check with the keys the master SAE received, then fetch them at node-b.
cat >"$dir/check.py" <<'EOF'
import base64, glob, http.client, json, os, ssl, sys, time

storm, url_b, ca, cert, key = sys.argv[1:6]
host, port = url_b[len("https://"):].split(":")
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)

def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

received = {}   # key_ID -> material (bytes)
materials = {}  # material -> key_ID
responses = 0
for f in sorted(glob.glob(os.path.join(storm, "*", "*.json"))):
    try:
        with open(f, "rb") as fh:
            d = json.loads(fh.read())
        keys = d["keys"]
    except (ValueError, KeyError, TypeError):
        continue  # an error object, an empty or a cut answer: nothing received
    responses += 1
    for k in keys:
        kid, mat = k["key_ID"], base64.b64decode(k["key"])
        if kid in received:
            fail("key_ID %s delivered twice by enc_keys (%s)" % (kid, f))
        if mat in materials:
            fail("keys %s and %s have the same material" % (materials[mat], kid))
        if len(mat) != 32:
            fail("key %s has %d bytes, not 32" % (kid, len(mat)))
        received[kid] = mat
        materials[mat] = kid
if len(received) < 20:
    fail("only %d keys received in the storm" % len(received))

conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)

def dec(ids):
    body = json.dumps({"key_IDs": [{"key_ID": i} for i in ids]})
    for attempt in range(40):
        try:
            conn.request("POST", "/api/v1/keys/sae-a/dec_keys", body,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            time.sleep(0.25)
            continue
        if r.status == 503:  # a resynchronisation in progress: retry
            time.sleep(0.25)
            continue
        return r.status, data
    fail("dec_keys keeps failing for %d IDs" % len(ids))

fetched, missing = {}, []

def fetch(ids):
    status, data = dec(ids)
    if status == 200:
        got = {k["key_ID"]: base64.b64decode(k["key"]) for k in json.loads(data)["keys"]}
        if set(got) != set(ids):
            fail("dec_keys answered other IDs: asked %s, got %s" % (sorted(ids), sorted(got)))
        for i in ids:
            if got[i] != received[i]:
                fail("key %s: node-b returned different material" % i)
            fetched[i] = True
        return
    if status != 400 or b"not found" not in data:
        fail("dec_keys: HTTP %d %s" % (status, data[:200]))
    # a batch fails as a whole when one of its keys is missing: bisect
    if len(ids) == 1:
        missing.append(ids[0])
        return
    fetch(ids[: len(ids) // 2])
    fetch(ids[len(ids) // 2:])

ids = sorted(received)
for b in range(0, len(ids), 100):
    fetch(ids[b:b + 100])

# delivered once: every key, fetched or not, is refused now
for i in ids:
    status, data = dec([i])
    if status != 400 or b"not found" not in data:
        fail("key %s delivered again at node-b: HTTP %d" % (i, status))

share = len(fetched) / len(received)
print("keys: %d received by sae-a in %d answers, %d fetched at node-b with the same material"
      " (%.1f%%), %d not found there, none delivered twice"
      % (len(received), responses, len(fetched), 100 * share, len(missing)))
if share < 0.9:
    fail("only %.1f%% of the keys the master received reached the slave" % (100 * share))
EOF
python3 "$dir/check.py" "$dir/storm" "$url_b" "$ca" "$cert_b" "$key_b" || fail "key check"
ok

# both nodes still serve status and metrics
st=$("${A[@]}" "$url_a/api/v1/keys/sae-b/status") || fail "status at node-a"
[ "$(echo "$st" | json 'd["source_KME_ID"]+" "+d["target_KME_ID"]')" = "node-a node-b" ] ||
	fail "status at node-a: $st"
st=$("${B[@]}" "$url_b/api/v1/keys/sae-a/status") || fail "status at node-b"
[ "$(echo "$st" | json 'd["source_KME_ID"]+" "+d["target_KME_ID"]')" = "node-b node-a" ] ||
	fail "status at node-b: $st"
for id in node-a node-b; do
	"${A[@]}" "https://127.0.0.1:$(status_port $id metrics_port)/metrics" >"$dir/metrics" ||
		fail "metrics at $id"
	grep -q "^qwave_keys_delivered_total{node=\"$id\"" "$dir/metrics" || fail "metrics at $id: delivered"
done
# into a file, not 'curl | grep -q': grep ending the pipe early fails curl
# (error 23) under pipefail now that /metrics outgrew the pipe buffer
"${A[@]}" "https://127.0.0.1:$(status_port node-a metrics_port)/metrics" >"$dir/metrics-a" ||
	fail "metrics at node-a after the restarts"
grep -q '^qwave_km_resyncs_total{node="node-a",peer="node-b"} [2-9]' "$dir/metrics-a" ||
	fail "node-a counted no resynchronisation after the restarts"
ok

qw_net_down
ok
echo "pair_crash: $passed passed, 0 failed"
