#!/usr/bin/env python3
"""HTTP load with wrk: requests/s of the bench app per backend x mix x variant.

The server (`load serve BACKEND VARIANT THREADS`, the same app every variant
serves) runs pinned to one core with its store's client; wrk runs alone on
the other core, one thread, 32 connections, each request sending one of 1000
session cookies at random (made before the run by `GET /write`). wrk costs
far less CPU per request than the servers it measures, so requests/s is
about 1 / (server CPU per request). Cells alternate within each round, so
drift on a shared machine hits all of them alike; the table gives the
median of the rounds and the spread (min-max).

    cargo build --release -p bench --bin load
    python3 bench/wrk.py [--rounds 3] [--duration 8] [--threads 1|default]
        [--backends memory,redis,postgres,mysql] [--mixes untouched,read,write,new]
        [--variants ours,tower-sessions,tower-sessions-memory,raw,bare]
        [--bin LABEL=PATH ...]

On memory, `tower-sessions` is tower-sessions over its moka store and
`tower-sessions-memory` over its own `MemoryStore`.

`--bin` adds builds to compare (say, before and after a change); the
default is `ours=target/release/load`. Redis needs `$REDIS_URL`, Postgres
`$DATABASE_URL`, MySQL/MariaDB `$MYSQL_URL`. A cell that gets any non-2xx answer fails the run.
Needs `wrk` and `taskset` (Debian packages `wrk`, `util-linux`).
"""

import argparse
import http.client
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

MIXES = {"untouched": "/untouched", "read": "/read", "write": "/write", "new": "/write"}
VARIANTS = {
    "memory": ["ours", "tower-sessions-memory", "tower-sessions", "raw", "bare"],
    "redis": ["ours", "tower-sessions", "raw", "bare"],
    "postgres": ["ours", "tower-sessions", "bare"],
    "mysql": ["ours", "tower-sessions", "raw", "bare"],
}


def start(binary, backend, variant, threads, cpu):
    server = subprocess.Popen(
        ["taskset", "-c", cpu, binary, "serve", backend, variant, threads],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = server.stdout.readline()
    if not line.startswith("listening "):
        server.kill()
        sys.exit(f"{binary} serve {backend} {variant}: no 'listening' line: {line!r}")
    return server, line.split()[1]


def cookies(addr, n, variant):
    if variant == "bare":
        # No sessions to make: the same size of cookie header, naming none.
        return [f"session={secrets.token_urlsafe(16)}" for _ in range(n)]
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    pairs = []
    for _ in range(n):
        conn.request("GET", "/write")
        reply = conn.getresponse()
        reply.read()
        cookie = reply.getheader("set-cookie")
        if reply.status != 200 or not cookie:
            sys.exit(f"GET /write answered {reply.status} without a cookie")
        pairs.append(cookie.split(";")[0])
    return pairs


def lua(pairs):
    if not pairs:
        return 'request = function() return wrk.format("GET") end\n'
    table = ",".join(f'"{p}"' for p in pairs)
    return (
        f"local cookies = {{{table}}}\n"
        "request = function()\n"
        "  return wrk.format(\"GET\", nil, {[\"Cookie\"] = cookies[math.random(#cookies)]})\n"
        "end\n"
    )


def cell(binary, backend, variant, mix, o):
    server, addr = start(binary, backend, variant, o.threads, o.server_cpu)
    try:
        pairs = [] if mix == "new" else cookies(addr, o.sessions, variant)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(lua(pairs))
        out = subprocess.run(
            ["taskset", "-c", o.load_cpu, "wrk", "-t1", "-c32", f"-d{o.duration}s",
             "-s", f.name, f"http://{addr}{MIXES[mix]}"],
            capture_output=True, text=True, check=True,
        ).stdout
        os.unlink(f.name)
    finally:
        server.kill()
        server.wait()
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        sys.exit(f"{binary} {backend} {variant} {mix}: {bad.group(1)} non-2xx answers")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--threads", default="1", help="server tokio workers, or 'default'")
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--backends", default="memory")
    p.add_argument("--mixes", default="untouched,read,write,new")
    p.add_argument("--variants", default=None, help="default: all that apply")
    p.add_argument("--bin", action="append", default=[], metavar="LABEL=PATH")
    p.add_argument("--server-cpu", default="1")
    p.add_argument("--load-cpu", default="0")
    o = p.parse_args()
    bins = [b.split("=", 1) for b in o.bin] or [["ours", "target/release/load"]]
    results = {}
    for r in range(o.rounds):
        for backend in o.backends.split(","):
            variants = o.variants.split(",") if o.variants else VARIANTS[backend]
            for mix in o.mixes.split(","):
                for label, binary in bins:
                    for variant in variants:
                        if mix != "untouched" and variant == "bare":
                            continue
                        rps = cell(binary, backend, variant, mix, o)
                        name = variant if len(bins) == 1 else f"{label}:{variant}"
                        results.setdefault((backend, mix), {}).setdefault(name, []).append(rps)
                        print(f"round {r + 1} {backend} {mix} {name}: {rps:.0f}/s",
                              file=sys.stderr, flush=True)
    print(f"\nrequests/s, median of {o.rounds} rounds (min-max); server threads: "
          f"{o.threads}; wrk -t1 -c32 -d{o.duration}s; {o.sessions} sessions\n")
    for (backend, mix), cells in results.items():
        print(f"| {backend} {mix} | " + " | ".join(
            f"{name} {statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
            for name, v in cells.items()) + " |")


if __name__ == "__main__":
    start_time = time.time()
    main()
    print(f"\n({time.time() - start_time:.0f} s)", file=sys.stderr)
