#!/usr/bin/env python3
"""Writes the hand-made part of the seed corpus (fuzz/seeds/<target>/): valid
inputs of each format, so the fuzzer starts from deep inside the parsers
instead of rediscovering JSON, TOML and protobuf framing. Seeds for
store_records are encodings of real records (see seeds/store_records)."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    path = os.path.join(HERE, "seeds", target)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, payload):
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    payload = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(payload)) + payload


SPEC_JSON = ('{"name":"etl","command":"/bin/echo","args":["a","b"],"env":{"K":"v"},'
             '"working_dir":"/tmp","labels":{"team":"data"},"priority":5,"timeout":"90s",'
             '"retry":{"max_attempts":3,"initial_backoff":"1s","max_backoff":"1m","multiplier":2.0},'
             '"resources":{"slots":2,"cpu_millis":500,"memory_bytes":1048576},'
             '"idempotency_key":"k-1","constraints":{"zone":"a"}}')
SPEC_TOML = '''name = "etl"
command = "/bin/echo"
args = ["a", "b"]
timeout = "1h 30m"
priority = -3
[env]
K = "v"
[retry]
max_attempts = 2
initial_backoff = "250ms"
[resources]
slots = 1
'''
retry = field(1, 3) + field(2, "1s") + field(3, "5m")
resources = field(1, 2) + field(2, 500)
spec_pb = (field(1, "etl") + field(2, "/bin/echo") + field(3, "a") + field(3, "b")
           + field(4, field(1, "K") + field(2, "v")) + field(7, 5) + field(8, "30s")
           + field(9, retry) + field(10, resources) + field(11, "key"))
write("job_spec", "json", b"\x00" + SPEC_JSON.encode())
write("job_spec", "json-minimal", b"\x00" + b'{"command":"true"}')
write("job_spec", "toml", b"\x01" + SPEC_TOML.encode())
write("job_spec", "protobuf", b"\x02" + field(1, spec_pb))

write("swf_import", "trace", "; Version: 2.2\n; UnixStartTime: 1000\n"
      "1 0 10 100 4 -1 -1 4 600 -1 1 3 2 7 1 -1 -1 -1\n"
      "2 5 -1 -1 1 -1 -1 -1 -1 -1 1 3 2 -1 -1 -1 -1 -1\n"
      "3 60 0 2.5 1 -1 -1 -1 -1 -1 0 4 -1 -1 -1 -1 -1 -1\n")
RUN = ('{"v":1,"job_id":"01J0","name":"etl","command":"/bin/echo","user":"ana",'
       '"labels":{"hint.rows":"1e6"},"priority":0,"requested_slots":1,"requested_cpu_millis":0,'
       '"requested_memory_bytes":0,"hints":{"rows":1000000.0},"requested_time_s":60.0,'
       '"submitted_at_ms":1000,"worker_id":"w1","worker_speed":2.0,"queue_wait_ms":5,'
       '"runtime_ms":100,"outcome":"succeeded","attempt":1,"finished_at_ms":1105}')
write("jsonl_import", "runs", RUN + "\n\n" + RUN.replace('"01J0"', '"swf-2"') + "\n")

write("text_parsers", "cron5", b"\x00*/5 * * * *" + (1_700_000_000_000).to_bytes(8, "little")
      + (1_700_000_900_000).to_bytes(8, "little"))
write("text_parsers", "cron6", b"\x00" + b"0 30 9 * * Mon-Fri 2024" + bytes(16))
write("text_parsers", "duration", b"\x011h 30m 250ms")
write("text_parsers", "name", b"\x02nightly-etl.v2")
write("text_parsers", "ids", b"\x0301J0ABCDEFGHJKMNPQRSTVWXYZ")
write("text_parsers", "workers", b"\x044x1,2x2:4, 1x0.5")
