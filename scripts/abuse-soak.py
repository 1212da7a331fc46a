#!/usr/bin/env python3
"""Hostile-but-realistic clients against one `indus serve` on loopback, one attack at a time,
while a well-behaved key keeps sending ordinary requests. Standard library only; every loop
is bounded in count and in time.

    python3 scripts/abuse-soak.py --bin target/release/indus [--seconds 15] [--json out.json]

Attacks (each for --seconds, from its own key "attacker"):
  idle         1 100 TCP connections that never send a byte
  slowloris    200 connections sending one header byte a second
  amplify      /v1/completions with 100 prompts x n = 128, and 8 prompts x n = 128, on repeat
  priority     a flood of requests asking for priority -1000 (the key is not allowed it)
  disconnect   1 000 clients that send a streaming request and hang up at once
  full         (no attack) exactly the server's sequence capacity, from a polite client
  overload     10x the server's sequence capacity in concurrent requests

For each: the victim key's latency (p50/p99) against the unloaded baseline, every status the
attacker got, 5xx counts on both sides, whether every refusal was an OpenAI-shaped JSON
error, and streams that never ended. After all: KV blocks all free, nothing running.
Exits non-zero when any check fails: a 5xx, a malformed refusal, a hung stream, a leaked
block, or a victim p99 above 3x the unloaded one.

The victim holds its latency while another key fills every slot because the scheduler gives
a waiting tenant running fewer sequences a slot of the busiest one (src/scheduler). The
default capacity, 8 sequences, suits the 2 CPU cores CI has: there a step at batch 32 costs
about 5x a step at batch 1, so at `--max-num-seqs 32` even a fair share of a full batch is
~5x slower per token than an idle server (on a GPU, decode steps cost about the same up to
far larger batches).
"""

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

VICTIM, ATTACKER = "sk-victim", "sk-attacker"
MAX_NUM_SEQS = 8
MAX_WAITING = 64


def keys_toml():
    return (f'[[keys]]\nname = "victim"\nkey = "{VICTIM}"\n\n'
            f'[[keys]]\nname = "attacker"\nkey = "{ATTACKER}"\n')


class Server:
    def __init__(self, binary, workdir):
        keys = os.path.join(workdir, "keys.toml")
        with open(keys, "w") as f:
            f.write(keys_toml())
        self.log = open(os.path.join(workdir, "server.log"), "w+")
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", "0", "--api-keys-file", keys,
             "--max-num-seqs", str(MAX_NUM_SEQS), "--max-waiting-requests", str(MAX_WAITING)],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.log.seek(0)
            m = re.search(r"ready addr=([0-9.]+):([0-9]+)", self.log.read())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.log.seek(0)
        raise SystemExit("indus serve did not become ready:\n" + self.log.read()[-3000:])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def dechunk(data):
    out, i = bytearray(), 0
    while i < len(data):
        j = data.find(b"\r\n", i)
        if j < 0:
            break
        size = int(data[i:j].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[j + 2:j + 2 + size]
        i = j + 2 + size + 2
    return bytes(out)


async def http(srv, method, path, body=None, key=VICTIM, timeout=60.0):
    """One request on its own connection: (status, headers, body bytes); status 0 when the
    connection failed or timed out (the reason in the body)."""
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: {srv.host}\r\nConnection: close\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(srv.host, srv.port), timeout)
        w.write(head + payload)
        await w.drain()
        raw = await asyncio.wait_for(r.read(), timeout)
        w.close()
    except (OSError, asyncio.TimeoutError) as e:
        return 0, {}, f"{type(e).__name__}: {e}".encode()
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        return 0, {}, b"no response head: " + raw[:200]
    lines = raw[:head_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    data = raw[head_end + 4:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        data = dechunk(data)
    return status, headers, data


def ordinary(max_tokens=8, stream=False):
    return {"model": "indus-tiny-llama3-random", "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": "Is the network up?"}]}


class Tally:
    """What the attacker's requests got back."""

    def __init__(self):
        self.statuses = {}
        self.malformed = []
        self.hung = 0

    def add(self, status, headers, data):
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 400:
            try:
                err = json.loads(data)["error"]
                assert isinstance(err["message"], str) and err["type"]
                # A full queue says when to come back.
                assert status != 429 or "retry-after" in headers
            except Exception:
                self.malformed.append((status, data[:200].decode("utf-8", "replace")))

    def server_errors(self):
        """5xx other than 503 (the connection cap's and the drain's refusal)."""
        return sum(n for s, n in self.statuses.items() if isinstance(s, int) and s >= 500 and s != 503)


async def victim_probe(srv, seconds, out):
    """Ordinary requests, one after another, for `seconds` (at least 5)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end or len(out) < 5:
        t0 = time.monotonic()
        status, _, data = await http(srv, "POST", "/v1/chat/completions", ordinary(), timeout=60)
        out.append((status, time.monotonic() - t0, data[:200]))
        await asyncio.sleep(0.05)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# -- attacks: each runs until `stop` is set, bounded in count -------------------------------
async def idle(srv, stop, tally):
    socks = []
    try:
        for _ in range(1100):
            if stop.is_set():
                break
            try:
                socks.append(await asyncio.wait_for(asyncio.open_connection(srv.host, srv.port), 5))
            except (OSError, asyncio.TimeoutError):
                tally.add(0, {}, b"")
        tally.statuses["held"] = len(socks)
        await stop.wait()
    finally:
        for _, w in socks:
            w.close()


async def slowloris(srv, stop, tally):
    async def one():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(srv.host, srv.port), 5)
        except (OSError, asyncio.TimeoutError):
            return
        head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ATTACKER}\r\n"
        try:
            for b in head.encode():
                if stop.is_set():
                    break
                w.write(bytes([b]))
                await w.drain()
                await asyncio.sleep(1.0)
            # Closed by the server (header timeout): whatever it answered is read back.
            data = await asyncio.wait_for(r.read(), 2)
            if data:
                tally.add(int(data.split()[1]), {}, data.split(b"\r\n\r\n", 1)[-1])
            else:
                tally.statuses["closed"] = tally.statuses.get("closed", 0) + 1
        except (OSError, asyncio.TimeoutError, IndexError, ValueError):
            tally.statuses["closed"] = tally.statuses.get("closed", 0) + 1
        finally:
            w.close()

    await asyncio.gather(*(one() for _ in range(200)))


async def amplify(srv, stop, tally):
    bodies = [
        {"model": "indus-tiny-llama3-random", "prompt": ["Hi"] * 100, "n": 128, "max_tokens": 64},
        {"model": "indus-tiny-llama3-random", "prompt": ["Hi"] * 8, "n": 128, "max_tokens": 64},
    ]
    for i in range(2000):
        if stop.is_set():
            break
        tally.add(*await http(srv, "POST", "/v1/completions", bodies[i % 2], key=ATTACKER, timeout=30))


async def priority(srv, stop, tally):
    body = dict(ordinary(32), priority=-1000)

    async def worker():
        for _ in range(500):
            if stop.is_set():
                return
            tally.add(*await http(srv, "POST", "/v1/chat/completions", body, key=ATTACKER, timeout=30))

    await asyncio.gather(*(worker() for _ in range(16)))


async def disconnect(srv, stop, tally):
    payload = json.dumps(ordinary(256, stream=True)).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ATTACKER}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()

    async def one():
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(srv.host, srv.port), 5)
            w.write(head + payload)
            await w.drain()
            w.close()
            tally.statuses["hung up"] = tally.statuses.get("hung up", 0) + 1
        except (OSError, asyncio.TimeoutError):
            tally.add(0, {}, b"")

    for start in range(0, 1000, 100):
        if stop.is_set():
            break
        await asyncio.gather(*(one() for _ in range(100)))
        await asyncio.sleep(0.2)
    await stop.wait()


async def full(srv, stop, tally):
    """Exactly the engine's sequences in flight, from a well-behaved client: not an attack,
    but the victim must still get a slot without waiting for one of these to end."""
    async def worker():
        for _ in range(200):
            if stop.is_set():
                return
            tally.add(*await http(srv, "POST", "/v1/chat/completions", ordinary(64), key=ATTACKER, timeout=120))

    await asyncio.gather(*(worker() for _ in range(MAX_NUM_SEQS)))


async def overload(srv, stop, tally):
    """10x the engine's sequences in flight; refused clients come back after Retry-After, as
    the OpenAI SDKs do. One worker in four streams (a stream must end with [DONE])."""
    async def worker(i):
        for _ in range(200):
            if stop.is_set():
                return
            stream = i % 4 == 0
            status, headers, data = await http(
                srv, "POST", "/v1/chat/completions", ordinary(64, stream=stream), key=ATTACKER, timeout=120)
            if stream and status == 200 and b"data: [DONE]" not in data:
                tally.hung += 1
            tally.add(status, headers, data)
            if status == 429:
                await asyncio.sleep(float(headers.get("retry-after", "1")))

    await asyncio.gather(*(worker(i) for i in range(10 * MAX_NUM_SEQS)))


ATTACKS = {"idle": idle, "slowloris": slowloris, "amplify": amplify, "priority": priority,
           "disconnect": disconnect, "full": full, "overload": overload}


async def metrics(srv):
    _, _, data = await http(srv, "GET", "/metrics", key=VICTIM, timeout=10)
    out = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def main_async(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(args.bin, tmp)
        try:
            return await run_all(srv, args)
        finally:
            srv.stop()


async def run_all(srv, args):
    report, failures = {"baseline": None, "attacks": {}}, []
    base = []
    await victim_probe(srv, args.seconds, base)
    ok = [t for s, t, _ in base if s == 200]
    if len(ok) != len(base):
        raise SystemExit(f"unloaded victim requests failed: {[b for b in base if b[0] != 200][:3]}")
    base_p50, base_p99 = pct(ok, 50), pct(ok, 99)
    report["baseline"] = {"requests": len(ok), "p50_ms": base_p50 * 1e3, "p99_ms": base_p99 * 1e3}
    print(f"baseline: {len(ok)} victim requests, p50 {base_p50 * 1e3:.1f} ms, p99 {base_p99 * 1e3:.1f} ms")
    for name in args.attacks:
        stop, tally, probe = asyncio.Event(), Tally(), []
        task = asyncio.create_task(ATTACKS[name](srv, stop, tally))
        await asyncio.sleep(1.0)
        await victim_probe(srv, args.seconds, probe)
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        except asyncio.TimeoutError:
            task.cancel()
            failures.append(f"{name}: the attack did not wind down within 60 s")
        lat = [t for s, t, _ in probe if s == 200]
        bad = [(s, d.decode("utf-8", "replace")) for s, _, d in probe if s != 200]
        p50, p99 = (pct(lat, 50), pct(lat, 99)) if lat else (float("inf"), float("inf"))
        row = {"victim_requests": len(probe), "victim_failed": len(bad), "victim_p50_ms": p50 * 1e3,
               "victim_p99_ms": p99 * 1e3, "p99_vs_unloaded": p99 / base_p99,
               "attacker": {str(k): v for k, v in sorted(tally.statuses.items(), key=str)},
               "attacker_5xx": tally.server_errors(), "malformed_refusals": len(tally.malformed),
               "hung_streams": tally.hung}
        report["attacks"][name] = row
        print(f"{name:10} victim {len(lat)}/{len(probe)} ok, p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms "
              f"({p99 / base_p99:.2f}x unloaded); "
              f"attacker got {row['attacker']}; "
              f"5xx {row['attacker_5xx']}, malformed {row['malformed_refusals']}, hung {tally.hung}")
        if bad:
            failures.append(f"{name}: {len(bad)} victim requests failed, e.g. {bad[0]}")
        if p99 > 3 * base_p99:
            failures.append(f"{name}: victim p99 {p99 * 1e3:.1f} ms > 3x unloaded {base_p99 * 1e3:.1f} ms")
        if tally.server_errors():
            failures.append(f"{name}: {tally.server_errors()} attacker requests got 5xx other than 503")
        if tally.malformed:
            failures.append(f"{name}: malformed refusals, e.g. {tally.malformed[0]}")
        if tally.hung:
            failures.append(f"{name}: {tally.hung} streams never sent [DONE]")
        await asyncio.sleep(2.0)
    # Everything let go: every KV block free, nothing running or waiting.
    deadline, m = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        m = await metrics(srv)
        if (m.get("indus_kv_cache_free_blocks") == m.get("indus_kv_cache_total_blocks")
                and m.get("indus_num_requests_running") == 0 and m.get("indus_num_requests_waiting") == 0):
            break
        await asyncio.sleep(0.5)
    else:
        failures.append(f"KV blocks or sequences still held 30 s after the attacks: "
                        f"{ {k: v for k, v in m.items() if 'kv_cache' in k or 'num_requests' in k} }")
    report["after"] = {k: v for k, v in m.items() if "kv_cache" in k or "num_requests" in k}
    print(f"after: {report['after']}")
    report["failures"] = failures
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    for f in failures:
        print(f"FAILED {f}")
    print("abuse-soak: " + ("all checks passed" if not failures else f"{len(failures)} checks failed"))
    return 1 if failures else 0


def main():
    global MAX_NUM_SEQS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the indus binary")
    ap.add_argument("--seconds", type=float, default=15.0, help="victim probing per attack")
    ap.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=list(ATTACKS))
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--max-num-seqs", type=int, default=MAX_NUM_SEQS,
                    help="the server's sequence capacity (the full and overload attacks scale with it)")
    args = ap.parse_args()
    MAX_NUM_SEQS = args.max_num_seqs
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
