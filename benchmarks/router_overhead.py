"""What the live router costs: CPU per request and added latency, direct vs through the router.

Two fake vLLM instances run in one child process, the router (``arrow-rl serve``: its own HTTP
server on uvloop/httptools, arrow_rl/serving/httpserver.py) in another. A load generator (a
minimal asyncio HTTP/1.1 client, so the generator's own CPU stays small) keeps ``--concurrency``
streaming completions in flight, each ``max_tokens`` tokens: first straight to one fake instance,
then through the router (two legs: prefill on one fake, decode on the other). The direct side
sends to one fake because that is the stricter baseline here: sending whole requests to both fakes
in turn made the direct p99 worse (the two fakes share one process), and the router's added
latency look smaller than it is. The router's CPU is read from ``/proc`` before and after
its run. The target: <= 0.5 ms router CPU per request and <= 50 ms added p99 TTFT at 200
concurrent streams of 16 tokens.

Protocol: ``--rounds`` pairs (direct, then routed) alternate on the same processes, and the added
p99 TTFT is the median over the pairs of (routed - direct) p99, in the steady state: the first
``--concurrency`` requests of a run all connect in the same instant (a thundering herd, ``load``'s
docstring) and are left out of the percentiles; the figure with them is printed beside it. On a
2-core host the direct p99 alone moves by tens of ms between runs, hence pairs and a median.

    python benchmarks/router_overhead.py [--requests 2000] [--concurrency 200] [--max-tokens 16] [--rounds 3]

The last line is ``router_cpu_ms_per_request: N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_fakes(ports: list[int], decode_step_s: float) -> None:
    """Child process: fake vLLM instances on ``ports`` until SIGTERM."""
    from arrow_rl.cluster.live.fake_vllm import FakeConfig, FakeVllm, ServerThread

    servers = [ServerThread(FakeVllm(name=f"fake{i}", config=FakeConfig(decode_step_s=decode_step_s)).app,
                            port=p).start() for i, p in enumerate(ports)]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    while not stop:
        time.sleep(0.1)
    for s in servers:
        s.stop()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (and its reaped children), from /proc."""
    fields = [int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15]]
    tick = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[2]) / tick, (fields[1] + fields[3]) / tick  # utime+cutime, stime+cstime


def wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout_s:.0f}s")


async def one_stream(port: int, body: bytes) -> tuple[float, float, int]:
    """POST one streaming completion over a fresh connection: (TTFT s, e2e s, content events)."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"HTTP error: {status!r} {await reader.read(300)!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    ttft = float("nan")
    events = 0
    buf = b""
    done = False
    while not done:  # chunked transfer encoding
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            break
        buf += await reader.readexactly(size + 2)
        buf = buf[:-2] if buf.endswith(b"\r\n") else buf
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if event == b"data: [DONE]":
                done = True
            elif event.startswith(b"data: {\"id\"") and b'"choices":[]' not in event.replace(b" ", b""):
                if events == 0:
                    ttft = time.perf_counter() - t0
                events += 1
    writer.close()
    return ttft, time.perf_counter() - t0, events


async def load(ports: list[int], n: int, concurrency: int, max_tokens: int, prompt_len: int) -> dict:
    """A closed loop: ``n`` streams, ``concurrency`` in flight, each replaced as it ends; request
    ``k`` goes to ``ports[k % len(ports)]``.

    Percentiles are given twice: over all requests, and in the steady state, over the requests
    that started as a replacement (request index >= ``concurrency``). The first ``concurrency``
    requests all connect in the same instant, a thundering herd that no serving load has, and
    with 2,000 requests they are 10% of the sample: they alone would set the p99.
    """
    sem = asyncio.Semaphore(concurrency)
    ttft: dict[int, float] = {}
    e2e: dict[int, float] = {}
    bad = 0

    async def go(k: int) -> None:
        nonlocal bad
        prompt = [(k * 131 + 17 * j) % 997 + 1 for j in range(prompt_len)]
        body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
                           "stream": True}).encode()
        async with sem:
            try:
                t, e, events = await one_stream(ports[k % len(ports)], body)
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                bad += 1
                return
        if events != max_tokens:
            bad += 1
        ttft[k], e2e[k] = t, e

    t0 = time.perf_counter()
    await asyncio.gather(*(go(k) for k in range(n)))
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "failed": bad}
    for label, keep in (("", lambda k: True), ("steady_", lambda k: k >= concurrency)):
        t = [v for k, v in ttft.items() if keep(k)] or [float("nan")]   # a warm-up run has no steady state
        e = [v for k, v in e2e.items() if keep(k)] or [float("nan")]
        out |= {f"{label}ttft_p50_ms": 1e3 * np.percentile(t, 50), f"{label}ttft_p99_ms": 1e3 * np.percentile(t, 99),
                f"{label}e2e_p50_ms": 1e3 * np.percentile(e, 50), f"{label}e2e_p99_ms": 1e3 * np.percentile(e, 99)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="direct/router pairs, alternated; the median is reported")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--decode-step-s", type=float, default=0.005, help="fake engine time per output token")
    ap.add_argument("--profile", help="write a cProfile of the router process to this file")
    ap.add_argument("--serve-fakes", nargs="+", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_fakes:
        serve_fakes(a.serve_fakes, a.decode_step_s)
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ports = [free_port(), free_port()]
    fakes = subprocess.Popen([sys.executable, __file__, "--decode-step-s", str(a.decode_step_s), "--serve-fakes",
                              *map(str, ports)], env=env, stdout=subprocess.PIPE, text=True)
    router = None
    try:
        assert fakes.stdout is not None and fakes.stdout.readline().strip() == "ready"
        rport = free_port()
        code = "from arrow_rl.cli import main; main()"
        if a.profile:
            # The router exits gracefully on SIGTERM, so cProfile.run returns and writes the
            # profile; the handler is a fallback should SIGTERM arrive before the loop runs.
            code = ("import cProfile, signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
                    f"from arrow_rl.cli import main; cProfile.run('main()', {a.profile!r})")
        router = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(rport),
                                   "--routing", "least-loaded", "--token", "bench",
                                   "--instance", f"http://127.0.0.1:{ports[0]}=prefill",
                                   "--instance", f"http://127.0.0.1:{ports[1]}=decode"],
                                  env=env, stdout=subprocess.DEVNULL)
        wait_port(rport)
        time.sleep(1.0)  # first health check done, models learned

        warm = min(200, a.requests)
        asyncio.run(load([ports[1]], warm, a.concurrency, a.max_tokens, a.prompt_len))
        asyncio.run(load([rport], warm, a.concurrency, a.max_tokens, a.prompt_len))
        rounds: list[tuple[dict, dict]] = []
        user = system = 0.0
        for _ in range(a.rounds):   # alternated, so drift in the host's load hits both sides alike
            direct = asyncio.run(load([ports[1]], a.requests, a.concurrency, a.max_tokens, a.prompt_len))
            c0 = cpu_seconds(router.pid)
            routed = asyncio.run(load([rport], a.requests, a.concurrency, a.max_tokens, a.prompt_len))
            c1 = cpu_seconds(router.pid)
            user, system = user + c1[0] - c0[0], system + c1[1] - c0[1]
            rounds.append((direct, routed))
    finally:
        for p in (router, fakes):
            if p is not None:
                p.terminate()
                p.wait(10)

    print(f"{a.rounds} rounds of {a.requests} streaming completions each way, {a.concurrency} concurrent, "
          f"max_tokens {a.max_tokens}, prompt {a.prompt_len} tokens, fake decode step {a.decode_step_s * 1e3:g} ms, "
          f"{os.cpu_count()} CPUs")
    added, added_all = [], []
    for i, (direct, routed) in enumerate(rounds, 1):
        for name, r in (("direct", direct), ("router", routed)):
            print(f"round {i} {name:7s} TTFT p50 {r['steady_ttft_p50_ms']:7.1f} ms  p99 {r['steady_ttft_p99_ms']:7.1f} ms"
                  f" (with the opening herd {r['ttft_p99_ms']:7.1f})   e2e p50 {r['steady_e2e_p50_ms']:7.1f} ms  "
                  f"p99 {r['steady_e2e_p99_ms']:7.1f} ms   {a.requests / r['wall_s']:6.0f} req/s  failed {r['failed']}")
        added.append(routed["steady_ttft_p99_ms"] - direct["steady_ttft_p99_ms"])
        added_all.append(routed["ttft_p99_ms"] - direct["ttft_p99_ms"])
    print("added p99 TTFT per round, steady state: " + ", ".join(f"{x:.1f}" for x in added)
          + " ms; counting the opening herd: " + ", ".join(f"{x:.1f}" for x in added_all) + " ms")
    print(f"added_p99_ttft_ms: {float(np.median(added)):.1f}   (median over rounds, steady state)")
    n = a.requests * a.rounds
    print(f"router CPU per request: user {1e3 * user / n:.3f} ms, system (sockets) "
          f"{1e3 * system / n:.3f} ms; load average {os.getloadavg()[0]:.2f}")
    print(f"router_cpu_ms_per_request: {1e3 * (user + system) / n:.3f}")


if __name__ == "__main__":
    main()
