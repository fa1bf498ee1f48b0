# Copies one job record of an Augur cluster N times into its etcd (for
# benches/console/timing.sh): fill_jobs.py ETCD_URL SAMPLE_JOB_ID N
import base64, json, os, random, sys, time, urllib.request
etcd = sys.argv[1]; sample_id = sys.argv[2]; n = int(sys.argv[3])
def call(path, body):
    req = urllib.request.Request(etcd + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))
b64 = lambda s: base64.b64encode(s.encode()).decode()
r = call("/v3/kv/range", {"key": b64("/augur/jobs/" + sample_id)})
rec = json.loads(base64.b64decode(r["kvs"][0]["value"]))
ALPH = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
def ulid(ms):
    t = ""
    for _ in range(10):
        t = ALPH[ms % 32] + t; ms //= 32
    return t + "".join(random.choice(ALPH) for _ in range(16))
base = int(time.time() * 1000) - n
ops = []; start = time.time()
for i in range(n):
    jid = ulid(base + i)
    rec["id"] = jid; rec["spec"]["name"] = "filler-%d" % (i % 50)
    ops.append({"requestPut": {"key": b64("/augur/jobs/" + jid), "value": b64(json.dumps(rec))}})
    if len(ops) == 128:
        call("/v3/kv/txn", {"success": ops}); ops = []
if ops: call("/v3/kv/txn", {"success": ops})
print("wrote", n, "in", round(time.time() - start, 1), "s")
