"""Fault injection on 127.0.0.1, measured: what clients and the router see when an instance dies,
freezes, or a client leaves or stops reading (docs/live_cluster.md, "Faults: measured").

    PYTHONPATH=. python benchmarks/live_faults.py all --json out.json
    PYTHONPATH=. python benchmarks/live_faults.py kill|freeze|abandon|slow|labels|memory|bearer

Stand-ins (``fake_vllm``) run in their own processes, KV pulled over HTTP. ``kill`` starts them with
``arrow-rl launch --engine fake`` (the CLI, so its supervision is what is measured); the others use
``faultbench.FakeCluster``. The router runs in this process (``RouterServer``) with its defaults,
except ``memory``, which measures ``arrow-rl serve`` in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from arrow_rl.serving.faultbench import (TOKEN, FakeCluster, free_port_range, load, one_request, prompt,
                                              router_for, running_on, wait_until)

CLI = [sys.executable, "-c", "from arrow_rl.cli import main; main()"]


def _summary(out: list, t_fault: float | None = None) -> dict[str, Any]:
    errs = collections.Counter(o.error.split(" (")[0][:60] for o in out if not o.ok)
    lat = [o.end - o.start for o in out]
    ttft = [(o.first_token or o.end) - o.start for o in out]
    return {"requests": len(out), "ok": sum(o.ok for o in out), "http_503": sum(o.status == 503 for o in out),
            "failed_before_first_token": sum(not o.ok and not o.started_streaming for o in out),
            "failed_mid_stream": sum(not o.ok and o.started_streaming for o in out),
            "tokens_before_mid_stream_failure": sorted(len(o.tokens) for o in out if not o.ok and o.started_streaming),
            "max_latency_s": round(max(lat), 2), "p50_latency_s": round(statistics.median(lat), 2),
            "max_wait_first_token_s": round(max(ttft), 2), "over_5s": sum(x > 5 for x in lat),
            "errors": dict(errs.most_common(4))}


def kill(total: int, concurrency: int) -> dict[str, Any]:
    """`arrow-rl launch --engine fake` (1 prefill, 2 decode), a router, `concurrency` streams;
    SIGKILL decode instance 1 a quarter of the way in."""
    tmp = Path(tempfile.mkdtemp())
    base = free_port_range(3)
    cfg = tmp / "launch.json"
    cfg.write_text(json.dumps({"engine": "fake", "num_instances": 3, "base_port": base, "nixl_base_port": base + 5000,
                               "extra_args": ["--decode-step-s", "0.01"]}))
    log = open(tmp / "launch.log", "w")
    launch = subprocess.Popen([*CLI, "launch", "--config", str(cfg), "--cluster-file", str(tmp / "c.json"),
                               "--workdir", str(tmp / "w")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_until(lambda: (tmp / "c.json").exists(), 60), (tmp / "launch.log").read_text()
        time.sleep(0.5)
        c = json.loads((tmp / "c.json").read_text())

        class _C:   # what router_for needs of a cluster
            urls = [i["url"] for i in c["instances"]]
            roles = [i["role"] for i in c["instances"]]

        victim_pid, victim_url = c["launch"]["pids"][1], _C.urls[1]
        t_kill: list[float] = []

        def fault() -> None:
            t_kill.append(time.monotonic())
            os.killpg(victim_pid, signal.SIGKILL)

        with router_for(_C) as rs:   # type: ignore[arg-type]
            out = asyncio.run(load(rs.url, total, concurrency, 30, during=fault))
            s = _summary(out)

            def back() -> bool:
                try:
                    return httpx.get(victim_url + "/health", timeout=0.5).status_code == 200
                except httpx.HTTPError:
                    return False

            waited = wait_until(back, 60)
            s["instance_back_after_kill_s"] = None if waited is None else round(time.monotonic() - t_kill[0], 1)
            s["launch_exited"] = launch.poll()
        return s
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGTERM)
            launch.wait(20)
        log.close()


def freeze(total: int, concurrency: int, victim: int, seconds: float) -> dict[str, Any]:
    """SIGSTOP instance `victim` for `seconds` under `concurrency` streams, then SIGCONT."""
    with FakeCluster(tempfile.mkdtemp(), n=3, decode_step_s=0.01) as cl, router_for(cl) as rs:
        def fault() -> None:
            cl.freeze(victim)
            time.sleep(seconds)
            cl.thaw(victim)

        out = asyncio.run(load(rs.url, total, concurrency, 30, during=fault))
        return _summary(out)


def abandon(n: int) -> dict[str, Any]:
    """`n` whole (non-streamed) requests of 200 tokens (10 s of decode) and `n` whose prefill takes
    10 s, each abandoned by its client after 0.5 s: slots still busy 2 s later, journal statuses."""
    with FakeCluster(tempfile.mkdtemp(), n=3, decode_step_s=0.05, prefill_s_per_token=0.02) as cl, \
            router_for(cl) as rs:
        async def go() -> None:
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=4 * n)) as c:
                await asyncio.gather(*(one_request(c, rs.url, k, 200, stream=False, prompt_len=16, timeout_s=0.5)
                                       for k in range(n)),
                                     *(one_request(c, rs.url, 1000 + k, 5, stream=True, prompt_len=500, timeout_s=0.5)
                                       for k in range(n)))

        asyncio.run(go())
        time.sleep(2.0)
        busy = [running_on(u) for u in cl.urls]
        time.sleep(0.5)
        recs = collections.Counter("200" if not r.rejected else r.reject_reason[:40] for r in rs.router.records)
        return {"abandoned": 2 * n, "instance_slots_busy_2s_later": busy, "journal": dict(recs),
                "router_legs_in_flight": sum(s.num_prefill + s.num_decode for s in rs.router.state.instances)}


def slow(n: int, watch_s: float) -> dict[str, Any]:
    """`n` clients read 256 bytes of a 3,000-token stream and stop reading."""
    from arrow_rl.serving import faultbench

    body = json.dumps({"model": "tiny", "prompt": prompt(1), "max_tokens": 3000, "stream": True, "ignore_eos": True,
                       "return_token_ids": True, "logprobs": 1}).encode()
    with FakeCluster(tempfile.mkdtemp(), n=3, decode_step_s=0.01, max_model_len=8192) as cl, \
            router_for(cl, health_timeout_s=5.0) as rs:
        rss0 = _rss(os.getpid())
        t_open = time.monotonic()
        socks = faultbench.slow_readers(rs.url, body, n)
        t0 = time.monotonic()
        samples = []
        while time.monotonic() - t0 < watch_s:
            samples.append((round(time.monotonic() - t0, 1), sum(s.num_decode for s in rs.router.state.instances)))
            time.sleep(1.0)
        rss = _rss(os.getpid())
        recs = collections.Counter("200" if not r.rejected else r.reject_reason[:40] for r in rs.router.records)
        for s in socks:
            s.close()
        return {"slow_clients": n, "open_s": round(t0 - t_open, 1), "decode_legs_held": samples[-1][1], "decode_legs_over_time": samples[::3],
                "journal": dict(recs), "rss_growth_mb": round((rss - rss0) / 2**20, 1),
                "router_send_queue_mb": round(sum(c.transport.get_write_buffer_size() for c in rs.front.connections
                                                  if c.transport) / 2**20, 1)}


def labels() -> dict[str, Any]:
    """200 flips with distinct 1 KB sources, then 200 with distinct short ones: /metrics size."""
    with FakeCluster(tempfile.mkdtemp(), n=3) as cl, router_for(cl) as rs, \
            httpx.Client(base_url=rs.url, timeout=10) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        size0 = len(c.get("/metrics").content)
        codes = collections.Counter()
        for k in range(200):
            r = c.post("/roles", json={"id": 1, "role": "prefill" if k % 2 == 0 else "decode",
                                       "source": f"{k:04d}" + "x" * 1020}, headers=auth)
            codes[r.status_code] += 1
        size1 = len(c.get("/metrics").content)
        for k in range(200):
            c.post("/roles", json={"id": 1, "role": "prefill" if k % 2 == 0 else "decode", "source": f"ctl-{k}"},
                   headers=auth)
        size2 = len(c.get("/metrics").content)
        return {"metrics_bytes_start": size0, "after_200_unique_1kb_sources": size1, "status_codes_1kb": dict(codes),
                "after_200_more_unique_short_sources": size2}


def bearer() -> dict[str, Any]:
    with FakeCluster(tempfile.mkdtemp(), n=2) as cl, router_for(cl) as rs:
        return {s: httpx.get(rs.url + "/roles", headers={"Authorization": f"{s} {TOKEN}"}).status_code
                for s in ("Bearer", "bearer", "BEARER")}


def memory(total: int, concurrency: int) -> dict[str, Any]:
    """`arrow-rl serve` (defaults) in its own process: RSS after each slice of `total` requests."""
    from arrow_rl.serving.faultbench import free_port_range as fpr

    with FakeCluster(tempfile.mkdtemp(), n=3, decode_step_s=0.0) as cl:
        port = fpr(1)
        args = [*CLI, "serve", "--port", str(port), "--token", TOKEN, "--routing", "least-loaded"]
        for u, r in zip(cl.urls, cl.roles):
            args += ["--instance", f"{u}={r.value}"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            def up() -> bool:
                try:
                    return httpx.get(url + "/health", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            assert wait_until(up, 60)
            points = [(0, _rss(proc.pid))]
            step = total // 5
            t0 = time.monotonic()
            for k in range(5):
                asyncio.run(load(url, step, concurrency, 4))
                points.append(((k + 1) * step, _rss(proc.pid)))
            per_req = (points[-1][1] - points[1][1]) / (points[-1][0] - points[1][0])
            return {"requests": total, "seconds": round(time.monotonic() - t0, 1),
                    "rss_mb": [(n, round(b / 2**20, 1)) for n, b in points],
                    "growth_bytes_per_request_after_warmup": round(per_req)}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def scrape(seconds: float = 6.0, interval_s: float = 0.5) -> dict[str, Any]:
    """`LiveCluster` control windows (`interval_s`) while one instance is frozen for `seconds`: how
    late each window comes back (a deploy step waits for it)."""
    from arrow_rl.cluster.live.cluster import LiveCluster

    with FakeCluster(tempfile.mkdtemp(), n=3) as cl, router_for(cl) as rs:
        lc = LiveCluster(rs.url, TOKEN)
        try:
            lc.advance(interval_s)
            cl.freeze(2)
            t_end = time.monotonic() + seconds
            late = []
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                lc.advance(interval_s)
                late.append(time.monotonic() - t0 - interval_s)
            cl.thaw(2)
            return {"windows": len(late), "max_window_overrun_s": round(max(late), 2),
                    "mean_window_overrun_s": round(sum(late) / len(late), 2),
                    "scrape_lateness_s": [round(x, 2) for x in getattr(lc, "scrape_lateness_s", [])]}
        finally:
            lc.close()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["kill", "freeze", "freeze-prefill", "abandon", "slow", "labels", "bearer",
                                         "scrape", "memory", "all"])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--freeze-s", type=float, default=20.0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    runs = {"kill": lambda: kill(a.requests, a.concurrency),
            "freeze": lambda: freeze(a.requests, a.concurrency, 1, a.freeze_s),
            "freeze-prefill": lambda: freeze(a.requests, a.concurrency, 0, a.freeze_s),
            "abandon": lambda: abandon(10), "slow": lambda: slow(a.concurrency, 40.0), "labels": labels,
            "bearer": bearer, "scrape": scrape, "memory": lambda: memory(10 * a.requests, a.concurrency)}
    names = [n for n in runs if n != "memory"] if a.scenario == "all" else [a.scenario]
    results = {}
    for name in names:
        t0 = time.monotonic()
        try:
            results[name] = runs[name]()
        except Exception as exc:  # noqa: BLE001 - one scenario failing is a result too
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["wall_s"] = round(time.monotonic() - t0, 1)
        print(name, json.dumps(results[name]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
