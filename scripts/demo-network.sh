#!/usr/bin/env bash
# The main job's network part (make run): bring up a small QKD network on
# this machine from a topology file, wait for the simulated link to fill the
# key pools, fetch a key pair between two SAEs over ETSI GS QKD 014 with
# mutual TLS - the master's half with Get key, the slave's with Get key with
# key IDs at the other node - show that both halves are equal and the path
# the keys took (when the two SAEs' nodes are not neighbours, the origin
# node relays the keys hop by hop and logs the path), and stop the network.
# Keys are shown as fingerprints, never in clear.
#
#   scripts/demo-network.sh [TOPOLOGY] [MASTER_SAE] [SLAVE_SAE]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
QWAVE=${QWAVE:-$top/build/qwave}
conf=${1:-$top/examples/pair.conf}
master=${2:-sae-a}
slave=${3:-sae-b}
state=$(mktemp -d "${TMPDIR:-/tmp}/qwave-demo.XXXXXX")
cleanup() {
	"$QWAVE" net down --state-dir "$state/net" >/dev/null 2>&1 || true
	rm -rf "$state"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

say "== network: $(basename "$conf")"
"$QWAVE" net up "$conf" --state-dir "$state/net" --json >"$state/up.json"
python3 - "$state/up.json" >&2 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for n in d["nodes"]:
    print(f"   node {n['id']:<10} KME {n['kme_url']}   metrics {n['metrics_url']}   pid {n['pid']}")
for s in d["saes"]:
    print(f"   SAE  {s['id']:<10} at {s['node']:<10} cert {s['cert']}")
PY
ca=$(field "$state/up.json" 'd["ca"]')
sae() { field "$state/up.json" "[s for s in d['saes'] if s['id']=='$1'][0]['$2']"; }
kme() { field "$state/up.json" "[n for n in d['nodes'] if n['id']=='$1'][0]['kme_url']"; }
m_node=$(sae "$master" node)
s_node=$(sae "$slave" node)
as_master=(--kme "$(kme "$m_node")" --cacert "$ca" --cert "$(sae "$master" cert)" --key "$(sae "$master" key)")
as_slave=(--kme "$(kme "$s_node")" --cacert "$ca" --cert "$(sae "$slave" cert)" --key "$(sae "$slave" key)")

say "== waiting for the QKD links to fill the pools ($master at $m_node -> $slave at $s_node)"
count=0
for i in $(seq 300); do
	if "$QWAVE" keys status --slave "$slave" "${as_master[@]}" --json >"$state/status.json" 2>/dev/null; then
		count=$(field "$state/status.json" 'd["stored_key_count"]')
		[ "$count" -ge 4 ] && break
	fi
	[ $((i % 10)) -eq 0 ] && say "   ... ${i} s, stored_key_count $count"
	sleep 1
done
[ "$count" -ge 1 ] || { say "qwave: error: no key in the pool after 300 s (logs in $state/net/nodes)"; exit 1; }
say "   stored_key_count $count (keys of $(field "$state/status.json" 'd["key_size"]') bits)"

say "== $master: Get key (enc_keys) at $m_node"
"$QWAVE" keys get --slave "$slave" --number 2 --size 256 "${as_master[@]}" --out "$state/master.json" >/dev/null
ids=()
while read -r id; do ids+=(--key-id "$id"); done < <(field "$state/master.json" '"\n".join(k["key_ID"] for k in d["keys"])')
say "== $slave: Get key with key IDs (dec_keys) at $s_node"
"$QWAVE" keys get-with-ids --master "$master" "${ids[@]}" "${as_slave[@]}" --out "$state/slave.json" >/dev/null

python3 - "$state/master.json" "$state/slave.json" <<'PY'
import base64, hashlib, json, sys
m = {k["key_ID"]: base64.b64decode(k["key"]) for k in json.load(open(sys.argv[1]))["keys"]}
s = {k["key_ID"]: base64.b64decode(k["key"]) for k in json.load(open(sys.argv[2]))["keys"]}
ok = True
print("key_ID                                bits  master half (SHA-256, first 16 hex)  slave half                         equal")
for kid, km in m.items():
    ks = s.get(kid, b"")
    eq = ks == km
    ok &= eq
    print(f"{kid}  {len(km)*8:4d}  {hashlib.sha256(km).hexdigest()[:16]:<35}  {hashlib.sha256(ks).hexdigest()[:16]:<33}  {'yes' if eq else 'NO'}")
print("both halves equal" if ok and len(m) == len(s) else "MISMATCH")
sys.exit(0 if ok and len(m) == len(s) else 1)
PY

# The path: one QKD link between neighbours, else the relay's path as the
# origin node logged it ("relay <id> to <node>: path a>b>c (2 hops), ...").
neighbours=$(python3 - "$conf" "$m_node" "$s_node" <<'PY'
import sys
links, sec, cur = set(), None, {}
for line in open(sys.argv[1]).read().splitlines() + ["[end]"]:
    line = line.split(";")[0].split("#")[0].strip()
    if line.startswith("["):
        if sec == "link":
            links.add(frozenset((cur.get("a"), cur.get("b"))))
        sec, cur = line.strip("[]").strip(), {}
    elif "=" in line:
        k, v = (x.strip() for x in line.split("=", 1))
        cur[k] = v
print(1 if frozenset(sys.argv[2:4]) in links else 0)
PY
)
if [ "$neighbours" = 1 ]; then
	say "== path: $m_node -- $s_node, one QKD link (neighbours: no relay)"
else
	relay=$(grep -E "relay [0-9a-f-]{36} to $s_node: path " "$state/net/nodes/$m_node.log" | tail -1 || true)
	[ -n "$relay" ] || { say "qwave: error: $m_node logged no relay to $s_node"; exit 1; }
	say "== path (relayed, from $m_node's log): ${relay#* info  }"
fi
say "== stopping the network"
