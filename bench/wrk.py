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
import glob
import http.client
import os
import re
import resource
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
        # No cookie: wrk's own static request, no Lua per request.
        return ""
    table = ",".join(f'"{p}"' for p in pairs)
    # Each request is formatted once, in `init`, not per request: wrk's
    # cost per request stays well below the servers'.
    return (
        f"local cookies = {{{table}}}\n"
        "local requests = {}\n"
        "init = function(args)\n"
        "  for i, cookie in ipairs(cookies) do\n"
        "    requests[i] = wrk.format(\"GET\", nil, {[\"Cookie\"] = cookie})\n"
        "  end\n"
        "end\n"
        "request = function()\n"
        "  return requests[math.random(#requests)]\n"
        "end\n"
    )


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid, children=False):
    """CPU time (user + system) a process has used so far, in seconds; with
    `children`, also what its exited, reaped children used (a Postgres
    postmaster reaps its backends). 0 for a process that is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def store_cpu(pids):
    """CPU seconds used so far by the store's processes: each of `pids` and,
    for each, its live children and the reaped ones (Postgres forks a
    backend per connection)."""
    total = 0.0
    for pid in pids:
        total += cpu_seconds(pid, children=True)
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                total += cpu_seconds(int(stat.split("/")[2]))
    return total


def cell(binary, backend, variant, mix, o):
    """One run of wrk against a fresh server: (requests/s, CPU microseconds
    per request of the server, of the store's processes and of wrk)."""
    server, addr = start(binary, backend, variant, o.threads, o.server_cpu)
    store = o.store_pids.get(backend, [])
    try:
        pairs = [] if mix == "new" else cookies(addr, o.sessions, variant)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(lua(pairs))
        before = (cpu_seconds(server.pid), store_cpu(store),
                  resource.getrusage(resource.RUSAGE_CHILDREN))
        out = subprocess.run(
            ["taskset", "-c", o.load_cpu, "wrk", "-t1", "-c32", f"-d{o.duration}s",
             "-s", f.name, f"http://{addr}{MIXES[mix]}"],
            capture_output=True, text=True, check=True,
        ).stdout
        after = (cpu_seconds(server.pid), store_cpu(store),
                 resource.getrusage(resource.RUSAGE_CHILDREN))
        os.unlink(f.name)
    finally:
        server.kill()
        server.wait()
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        sys.exit(f"{binary} {backend} {variant} {mix}: {bad.group(1)} non-2xx answers")
    done = int(re.search(r"(\d+) requests in", out).group(1))
    waited = (after[2].ru_utime + after[2].ru_stime) - (before[2].ru_utime + before[2].ru_stime)
    per = lambda seconds: seconds * 1e6 / done
    return (float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            per(after[0] - before[0]), per(after[1] - before[1]), per(waited))


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
    p.add_argument("--store-pid", action="append", default=[], metavar="BACKEND=PID",
                   help="a store server process (Redis, the Postgres postmaster, mariadbd): "
                        "pinned to the server's core, and its CPU per request reported")
    o = p.parse_args()
    o.store_pids = {}
    for entry in o.store_pid:
        backend, pid = entry.split("=", 1)
        o.store_pids.setdefault(backend, []).append(int(pid))
        subprocess.run(["taskset", "-a", "-p", "-c", o.server_cpu, pid],
                       check=True, stdout=subprocess.DEVNULL)
    bins = [b.split("=", 1) for b in o.bin] or [["ours", "target/release/load"]]
    results = {}
    cpu = {}
    for r in range(o.rounds):
        for backend in o.backends.split(","):
            variants = o.variants.split(",") if o.variants else VARIANTS[backend]
            for mix in o.mixes.split(","):
                for label, binary in bins:
                    for variant in variants:
                        if mix != "untouched" and variant == "bare":
                            continue
                        rps, app, db, load = cell(binary, backend, variant, mix, o)
                        name = variant if len(bins) == 1 else f"{label}:{variant}"
                        results.setdefault((backend, mix), {}).setdefault(name, []).append(rps)
                        cpu.setdefault((backend, mix), {}).setdefault(name, []).append(
                            (app, db, load))
                        print(f"round {r + 1} {backend} {mix} {name}: {rps:.0f}/s; CPU per "
                              f"request: server {app:.2f} us, store {db:.2f} us, "
                              f"wrk {load:.2f} us", file=sys.stderr, flush=True)
    print(f"\nrequests/s, median of {o.rounds} rounds (min-max); server threads: "
          f"{o.threads}; wrk -t1 -c32 -d{o.duration}s; {o.sessions} sessions\n")
    for (backend, mix), cells in results.items():
        print(f"| {backend} {mix} | " + " | ".join(
            f"{name} {statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
            for name, v in cells.items()) + " |")
    print("\nCPU microseconds per request, medians: server + store = total (wrk's own)\n")
    for (backend, mix), cells in cpu.items():
        print(f"| {backend} {mix} | " + " | ".join(
            f"{name} {statistics.median(a for a, _, _ in v):.2f} + "
            f"{statistics.median(d for _, d, _ in v):.2f} = "
            f"{statistics.median(a + d for a, d, _ in v):.2f} "
            f"({statistics.median(w for _, _, w in v):.2f})"
            for name, v in cells.items()) + " |")


if __name__ == "__main__":
    start_time = time.time()
    main()
    print(f"\n({time.time() - start_time:.0f} s)", file=sys.stderr)
