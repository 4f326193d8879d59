"""What the HTTP service costs and holds: ``/v1/compare`` at 1, 8 and 32 concurrent clients against calling the
judge's engine directly in one process, then an overload soak.

    python scripts/bench_serve.py                                  # the embedded judge, decide=verify, 48 requests a level
    python scripts/bench_serve.py --concurrency 1,8,32 --requests 96 -- model.path=runs/demo/round_2/model
    python scripts/bench_serve.py --soak-s 600                     # + 10 minutes at 4x the queue: 429s, RSS

Direct: one process, the same pairs given to ``ServedJudge.compare`` ``c`` at a time (one engine call each), no
HTTP. Served: ``selftaught serve`` in its own process, ``c`` clients each sending one pair per request
(httpx, asyncio) until ``--requests`` are done; latency per request, p50 and p99. Both use the same engine,
model and decision (default ``judge_file.decide=verify``, the demo judge's: two one-token verdicts per pair).
The soak sends ``4 x serve.max_queue`` concurrent one-pair requests for ``--soak-s`` seconds at a server whose
queue holds ``--soak-queue`` rows: it counts 200s and 429s, checks that every 200 carries its own request's
id (nothing lost, duplicated or swapped) and samples the server's resident memory every 10 s.
Pairs: the shipped demo eval set (48 pairs), cycled.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = ["judge_file.decide=verify", "judge_file.constrained=true"]


def pairs(n: int) -> list[dict]:
    rows = [json.loads(x) for x in (ROOT / "selftaught/data/demo_eval.jsonl").read_text().splitlines() if x.strip()]
    return [{"id": f"{i}", "instruction": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"]}
            for i, r in ((i, rows[i % len(rows)]) for i in range(n))]


def direct(overrides: list[str], levels: list[int], n: int) -> dict[int, float]:
    """Pairs/s of the judge called in-process, ``c`` pairs per call."""
    from selftaught.models import resolve_model
    from selftaught.overrides import compose
    from selftaught.serve.judge import ServedJudge

    cfg = compose(overrides)
    judge = ServedJudge.load(cfg, resolve_model(cfg.model))
    try:
        judge.compare(pairs(2))  # warm-up, as the served runs get theirs
        out = {}
        for c in levels:
            rows = pairs(n)
            t0 = time.perf_counter()
            for i in range(0, n, c):
                judge.compare(rows[i:i + c])
            out[c] = n / (time.perf_counter() - t0)
        return out
    finally:
        judge.close()


def start_server(overrides: list[str], port: int, log) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "selftaught.cli", "serve", *overrides, f"serve.port={port}"],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:
        if p.poll() is not None:
            sys.exit(f"selftaught serve exited (rc {p.returncode}); see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return p
        except httpx.TransportError:
            pass
        time.sleep(1)
    sys.exit("selftaught serve did not become healthy in 600 s")


async def served(url: str, c: int, n: int) -> tuple[float, list[float]]:
    rows = pairs(n)
    todo = iter(rows)
    lat: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        for row in todo:
            t0 = time.perf_counter()
            r = await http.post("/v1/compare", json=row)
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200 or r.json().get("id") != row["id"]:
                sys.exit(f"request {row['id']}: {r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await http.post("/v1/compare", json=rows[0])  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(c)))
        return n / (time.perf_counter() - t0), lat


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory (MB) of the server and of each child by name (vLLM's engine core and its worker are
    child processes), and their total."""
    import psutil

    p = psutil.Process(pid)
    out = {"server": p.memory_info().rss / 2 ** 20}
    for i, x in enumerate(p.children(recursive=True)):
        name = x.name().removeprefix("VLLM::") or f"child{i}"
        out[name] = out.get(name, 0) + x.memory_info().rss / 2 ** 20
    return {**out, "total": sum(out.values())}


async def soak(url: str, pid: int, seconds: float, clients: int) -> dict:
    codes: dict[int, int] = {}
    wrong, mem, seq = 0, [], [0]
    end = time.time() + seconds
    rows = pairs(48)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal wrong
        while time.time() < end:
            seq[0] += 1
            row = {**rows[seq[0] % len(rows)], "id": f"s{seq[0]}"}
            r = await http.post("/v1/compare", json=row)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200 and r.json().get("id") != row["id"]:
                wrong += 1
            if r.status_code == 429:
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / 10)  # impatient clients: keep it full

    async def sampler() -> None:
        while time.time() < end:
            mem.append(rss_mb(pid))
            await asyncio.sleep(10)

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(sampler(), *(client(http) for _ in range(clients)))
    # After the first minute (warm-up: allocator pools, the engine's buffers) the RSS should stay flat.
    total = [m["total"] for m in mem]
    return {"codes": codes, "wrong": wrong, "rss_first": total[0], "rss_1min": total[min(6, len(total) - 1)],
            "rss_last": total[-1], "rss_max": max(total), "samples": len(total), "per_minute": mem[::6]}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=48, help="requests (one pair each) per concurrency level")
    ap.add_argument("--soak-s", type=float, default=0, help="seconds of overload after the table (0: none)")
    ap.add_argument("--soak-queue", type=int, default=16, help="serve.max_queue during the soak")
    ap.add_argument("--log", default="runs/bench_serve.log", help="the service's output (runs/ is git-ignored)")
    ap.add_argument("overrides", nargs="*", help="selftaught overrides (after --)")
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]
    overrides = DEFAULTS + a.overrides
    print(f"direct: in-process engine, {a.requests} pairs per level ...", flush=True)
    base = direct(overrides, levels, a.requests)
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    port_n = port.getsockname()[1]
    port.close()
    url = f"http://127.0.0.1:{port_n}"
    rows = []
    os.makedirs(os.path.dirname(a.log) or ".", exist_ok=True)
    with open(a.log, "w") as log:
        server = start_server(overrides + [f"serve.max_batch={max(levels) * 2}"], port_n, log)
        try:
            for c in levels:
                rate, lat = asyncio.run(served(url, c, a.requests))
                rows.append((c, base[c], rate, statistics.median(lat), pct(lat, 0.99)))
        finally:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=120)
        print(f"\n/v1/compare, one pair per request (overrides: {' '.join(overrides)}; {a.requests} requests a level)")
        print(f"{'clients':>7} | {'direct pairs/s':>14} | {'served req/s':>12} | {'served/direct':>13} | "
              f"{'p50 s':>6} | {'p99 s':>6}")
        for c, d, s, p50, p99 in rows:
            print(f"{c:>7} | {d:>14.2f} | {s:>12.2f} | {s / d:>13.2f} | {p50:>6.2f} | {p99:>6.2f}")
        if a.soak_s > 0:
            q = a.soak_queue
            server = start_server(overrides + [f"serve.max_queue={q}", f"serve.max_rows={q}"], port_n, log)
            try:
                s = asyncio.run(soak(url, server.pid, a.soak_s, 4 * q))
            finally:
                os.killpg(server.pid, signal.SIGINT)
                server.wait(timeout=120)
            print(f"\noverload: {4 * q} clients for {a.soak_s:.0f} s at serve.max_queue={q}: responses {s['codes']}, "
                  f"answers carrying another request's id {s['wrong']}; server RSS (with the engine core) "
                  f"{s['rss_first']:.0f} MB at the start, {s['rss_1min']:.0f} MB after 1 min, {s['rss_last']:.0f} MB "
                  f"at the end, {s['rss_max']:.0f} MB max ({s['samples']} samples, every 10 s)")
            for name in s["per_minute"][0]:
                print(f"RSS each minute, {name} (MB): " + " ".join(f"{m.get(name, 0):.0f}" for m in s["per_minute"]))


if __name__ == "__main__":
    main()
