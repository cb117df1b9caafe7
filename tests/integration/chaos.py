#!/usr/bin/env python3
"""The client side of test_chaos.sh: concurrent SAE clients asking for key
pairs (enc_keys at the master's KME, then dec_keys at the slave's) while the
test kills and restarts nodes, then the checks on everything answered.

  chaos.py UP_JSON STATE_DIR OUT_DIR STOP_FILE SECONDS MASTER:SLAVE...

Runs one client thread per MASTER:SLAVE pair until STOP_FILE appears or
SECONDS pass; then waits for every KME to answer, fetches the keys whose
dec_keys failed during the storm, asks dec_keys once more for every key
(it must be refused: delivered once), checks and prints a summary. Exit 0
when every check holds, 1 otherwise (the reason on stderr).

Every node's KME URL is read from its status file before each connection:
the ETSI port changes when the test restarts the node."""
import base64
import collections
import concurrent.futures
import http.client
import json
import os
import random
import ssl
import sys
import threading
import time

up_json, state, out_dir, stop_file, seconds = sys.argv[1:6]
pairs = [tuple(p.split(":")) for p in sys.argv[6:]]
up = json.load(open(up_json))
sae_node = {s["id"]: s["node"] for s in up["saes"]}
sae_files = {s["id"]: (s["cert"], s["key"]) for s in up["saes"]}
TIMEOUT = 8
# the storm's minimums and the share of keys that must reach the slave
# (test_relay_net.sh asks for all of them: no slave node is killed there)
MIN_REQUESTS = int(os.environ.get("QW_CHAOS_MIN_REQUESTS", "1000"))
MIN_KEYS = int(os.environ.get("QW_CHAOS_MIN_KEYS", "500"))
MIN_SHARE = float(os.environ.get("QW_CHAOS_MIN_SHARE", "0.9"))
# enc_keys requests per second, all clients together (at most): thousands
# in a storm of half a minute, without so many keys that asking again for
# each one after the storm takes longer than the storm
RATE = float(os.environ.get("QW_CHAOS_RATE", "80"))

lock = threading.Lock()
codes = collections.Counter()       # ("enc"|"dec", code) -> count
enc_keys = {}                       # key_ID -> (material, master, slave)
enc_dups = []                       # key IDs answered twice by enc_keys
dec_got = collections.Counter()     # key_ID -> dec_keys 200 answers
mismatch = []                       # key IDs whose halves differ
wrong_answers = []                  # answers that are not the keys asked for
pending = set()                     # enc 200, not yet fetched at the slave
reasons = collections.Counter()     # (status, body start) of failed enc_keys


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def context(sae):
    ctx = ssl.create_default_context(cafile=up["ca"])
    ctx.load_cert_chain(*sae_files[sae])
    return ctx


def port(node):
    with open(os.path.join(state, "nodes", node + ".status.json")) as f:
        return int(json.load(f)["etsi_port"])


class Client:
    """One SAE's keep-alive connection to its KME, reopened after any error
    at the port the node's status file names now."""

    def __init__(self, sae):
        self.sae, self.node, self.ctx, self.conn = sae, sae_node[sae], context(sae), None

    def post(self, path, body):
        """(HTTP status, body) or (error name, None)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", port(self.node),
                                                        context=self.ctx, timeout=TIMEOUT)
            self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, ValueError, http.client.HTTPException) as e:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return "conn:" + type(e).__name__, None


def record_dec(ids, status, data):
    """Account one dec_keys answer; returns 1 when it delivered the keys."""
    if status != 200:
        return 0
    try:
        got = {k["key_ID"]: base64.b64decode(k["key"]) for k in json.loads(data)["keys"]}
    except (ValueError, KeyError, TypeError):
        with lock:
            wrong_answers.append("dec_keys 200 that is not a key container")
        return 0
    with lock:
        if sorted(got) != sorted(ids):
            wrong_answers.append("dec_keys asked %s, answered %s" % (sorted(ids), sorted(got)))
        for kid, mat in got.items():
            dec_got[kid] += 1
            pending.discard(kid)
            if kid not in enc_keys or enc_keys[kid][0] != mat:
                mismatch.append(kid)
    return 1


def storm(master, slave, deadline, seed):
    rng = random.Random(seed)
    mc, sc = Client(master), Client(slave)
    interval = len(pairs) / RATE
    next_t = time.monotonic()
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        next_t = max(next_t + interval, time.monotonic())  # no bursts to catch up
        time.sleep(next_t - time.monotonic() if next_t > time.monotonic() else 0)
        n = 2 if rng.random() < 0.25 else 1  # mostly one key: each is asked again after
        status, data = mc.post("/api/v1/keys/%s/enc_keys" % slave, {"number": n})
        with lock:
            codes[("enc", status)] += 1
        if status != 200:
            with lock:
                reasons[(status, (data or b"")[:80])] += 1
            time.sleep(0.05)  # a node down or a pool empty: do not spin
            continue
        try:
            keys = json.loads(data)["keys"]
            got = [(k["key_ID"], base64.b64decode(k["key"])) for k in keys]
        except (ValueError, KeyError, TypeError):
            with lock:
                wrong_answers.append("enc_keys 200 that is not a key container")
            continue
        with lock:
            if len(got) != n:
                wrong_answers.append("enc_keys asked %d keys, answered %d" % (n, len(got)))
            for kid, mat in got:
                if kid in enc_keys:
                    enc_dups.append(kid)
                enc_keys[kid] = (mat, master, slave)
                pending.add(kid)
        ids = [kid for kid, _ in got]
        status, data = sc.post("/api/v1/keys/%s/dec_keys" % master,
                               {"key_IDs": [{"key_ID": i} for i in ids]})
        with lock:
            codes[("dec", status)] += 1
        record_dec(ids, status, data)


def dec_until_answered(client, master, ids, limit):
    """dec_keys retried through 503 and connection errors until limit."""
    while True:
        status, data = client.post("/api/v1/keys/%s/dec_keys" % master,
                                   {"key_IDs": [{"key_ID": i} for i in ids]})
        if status in (200, 400) or time.monotonic() > limit:
            return status, data
        time.sleep(0.2)


def main():
    os.makedirs(out_dir, exist_ok=True)
    deadline = time.monotonic() + float(seconds)
    threads = [threading.Thread(target=storm, args=(m, s, deadline, i), daemon=True)
               for i, (m, s) in enumerate(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    storm_pending = len(pending)
    t_storm = time.monotonic()

    # After the storm (the test has restarted every node it killed): fetch
    # what the slaves did not get, then ask dec_keys again for every key:
    # it must be refused (delivered once). One request per key (a batch is
    # refused as a whole when one key is missing, which would hide a key
    # still there), spread over 6 threads with their own connections.
    missing, again, errors = [], [], []
    local = threading.local()

    def ask(kid, limit):
        _, master, slave = enc_keys[kid]
        if not hasattr(local, "clients"):
            local.clients = {}
        c = local.clients.setdefault(slave, Client(slave))
        status, data = dec_until_answered(c, master, [kid], limit)
        if status == 200:
            record_dec([kid], status, data)
            return "delivered"
        if status == 400 and b"not found" in data:
            return "not found"
        with lock:
            errors.append("dec_keys of %s: %s %s" % (kid, status, (data or b"")[:200]))
        return "error"

    def run(kids, seconds):
        limit = time.monotonic() + seconds
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            return list(zip(kids, ex.map(lambda k: ask(k, limit), kids)))

    for kid, r in run(sorted(pending), 30):
        if r == "not found":
            missing.append(kid)
    if errors:
        fail("after the storm: " + errors[0])
    t_fetched = time.monotonic()
    for kid, r in run(sorted(enc_keys), 60):
        if r == "delivered":
            again.append(kid)
    if errors:
        fail("second dec_keys: " + errors[0])

    enc_n = sum(v for (op, _), v in codes.items() if op == "enc")
    dec_n = sum(v for (op, _), v in codes.items() if op == "dec")
    by = lambda op: ", ".join("%s %d" % (c, v) for (o, c), v in
                              sorted(codes.items(), key=lambda x: str(x[0][1])) if o == op)
    delivered = sum(1 for kid in enc_keys if dec_got[kid] >= 1)
    print("requests: %d enc_keys (%s), %d dec_keys (%s)" % (enc_n, by("enc"), dec_n, by("dec")))
    print("after the storm: %.1f s to fetch the keys left, %.1f s to ask again for every key" %
          (t_fetched - t_storm, time.monotonic() - t_fetched))
    print("keys: %d answered by enc_keys, %d fetched by the slave with equal material "
          "(%d after the storm), %d not found at the slave" %
          (len(enc_keys), delivered, storm_pending - len(missing), len(missing)))
    for (c, body), v in reasons.most_common(4):
        print("   enc_keys %s x %d: %s" % (c, v, body.decode(errors="replace")))
    json.dump({"codes": {"%s %s" % k: v for k, v in codes.items()}, "keys": len(enc_keys),
               "delivered": delivered, "missing": len(missing)},
              open(os.path.join(out_dir, "summary.json"), "w"))

    if wrong_answers:
        fail("%d wrong answers, first: %s" % (len(wrong_answers), wrong_answers[0]))
    if enc_dups:
        fail("key_ID %s answered twice by enc_keys" % enc_dups[0])
    materials = collections.Counter(m for m, _, _ in enc_keys.values())
    if materials.most_common(1) and materials.most_common(1)[0][1] > 1:
        fail("two keys with the same material")
    if mismatch:
        fail("key %s: the slave got different material than the master" % mismatch[0])
    twice = [kid for kid, v in dec_got.items() if v > 1]
    if twice or again:
        fail("key %s delivered twice by dec_keys" % (twice or again)[0])
    bad = {c for (_, c), v in codes.items()
           if c != 200 and c not in (400, 503) and not str(c).startswith("conn:")}
    if bad:
        fail("answers other than 200, 400, 503 or a connection error: %s" % sorted(map(str, bad)))
    if enc_n < MIN_REQUESTS:
        fail("only %d enc_keys requests in the storm" % enc_n)
    per_pair = collections.Counter((m, s) for _, m, s in enc_keys.values())
    for m, s in pairs:
        if per_pair[(m, s)] < 10:
            fail("only %d keys for %s -> %s in the storm" % (per_pair[(m, s)], m, s))
    if len(enc_keys) < MIN_KEYS:
        fail("only %d keys delivered by enc_keys in the storm" % len(enc_keys))
    # a key the master received is at the slave (origin answers after the
    # destination committed it; sync = normal keeps commits across kill -9);
    # the only losses are a dec_keys answer the crash cut after the commit
    if delivered < MIN_SHARE * len(enc_keys):
        fail("only %d of %d keys reached the slave" % (delivered, len(enc_keys)))


main()
