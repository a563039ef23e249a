"""Fault injection on 127.0.0.1: stand-in instances in their own processes, a router, client load.

Used by the fault-injection test tier (``tests/test_live_faults.py``) and by the measurements in
docs/live_cluster.md ("Faults: measured", ``benchmarks/live_faults.py``). The instances are
``fake_vllm`` engines started by the real :class:`~arrow_rl.cluster.live.launcher.Launcher`
(``engine="fake"``) and supervised by it, each in its own process group, pulling KV from each other
over HTTP: a SIGKILL, SIGSTOP or closed socket behaves as it would for a vLLM instance (a frozen
prefill instance also freezes the KV pulls of its requests), not as a flag in shared memory.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.launcher import LaunchConfig, Launcher, port_is_free
from arrow_rl.serving.config import InstanceSpec, RouterConfig
from arrow_rl.serving.httpserver import RouterServer
from arrow_rl.serving.router import Router

TOKEN = "fault-token"


def free_port_range(n: int, host: str = "127.0.0.1", low: int = 20000, high: int = 40000) -> int:
    """A base port with ``n`` consecutive free ports above it (and ``n`` free at base + 5000, the
    launcher's side-channel range), tried at random so parallel runs rarely collide."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(low, high - n)
        if all(port_is_free(host, base + k) and port_is_free(host, base + 5000 + k) for k in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports in {low}..{high}")


class FakeCluster:
    """``n`` fake instances started and supervised by a :class:`Launcher` (a background thread
    calls ``supervise`` every ``tick_s``); ``kill``/``freeze``/``thaw`` inject faults."""

    def __init__(self, workdir: str | Path, n: int = 3, decode_step_s: float = 0.01, prefill_s_per_token: float = 0.0,
                 initial_prefill: int = 1, restart_backoff_s: float = 0.2, max_model_len: int = 4096,
                 tick_s: float = 0.1) -> None:
        base = free_port_range(n)
        self.config = LaunchConfig(engine="fake", num_instances=n, initial_prefill=initial_prefill, base_port=base,
                                   nixl_base_port=base + 5000, max_model_len=max_model_len,
                                   restart_backoff_s=restart_backoff_s, startup_timeout_s=120,
                                   extra_args=["--decode-step-s", str(decode_step_s),
                                               "--prefill-s-per-token", str(prefill_s_per_token)])
        self.launcher = Launcher(self.config, workdir)
        self.tick_s = tick_s
        self.events: list[tuple[float, str]] = []   # (time.monotonic(), supervision line)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> "FakeCluster":
        self.launcher.start()
        try:
            self.launcher.wait_healthy(timeout_s=self.config.startup_timeout_s)
        except BaseException:
            self.launcher.stop(grace_s=2)
            raise
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                lines = self.launcher.supervise()
            now = time.monotonic()
            self.events.extend((now, line) for line in lines)

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.launcher.instances]

    @property
    def roles(self) -> list[Role]:
        return [i.role for i in self.launcher.instances]

    def pid(self, index: int) -> int:
        return self.launcher.instances[index].process.pid

    def kill(self, index: int) -> None:
        """SIGKILL instance ``index``'s process group (the supervisor restarts it)."""
        with self._lock:
            os.killpg(self.pid(index), signal.SIGKILL)

    def freeze(self, index: int) -> None:
        """SIGSTOP: the process stays, its sockets accept connections, nothing answers."""
        os.killpg(self.pid(index), signal.SIGSTOP)

    def thaw(self, index: int) -> None:
        os.killpg(self.pid(index), signal.SIGCONT)

    def back_event(self, index: int, after: float) -> float | None:
        """When the supervisor saw instance ``index`` healthy again after ``after`` (monotonic)."""
        for t, line in self.events:
            if t >= after and line.startswith(f"instance {index} is back"):
                return t
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for inst in self.launcher.instances:   # a frozen process cannot act on SIGTERM
            try:
                os.killpg(inst.process.pid, signal.SIGCONT)
            except OSError:
                pass
        self.launcher.stop(grace_s=2)

    def __enter__(self) -> "FakeCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def router_for(cluster: FakeCluster, **overrides: Any) -> RouterServer:
    """A router in front of ``cluster`` (least-loaded routing unless overridden); ``with`` starts it."""
    cfg = RouterConfig(instances=[InstanceSpec(url=u, role=r) for u, r in zip(cluster.urls, cluster.roles)],
                       **{"routing": "least-loaded", **overrides})
    return RouterServer(Router(cfg, token=TOKEN))


@dataclass
class Outcome:
    """What one client saw."""

    start: float
    end: float = 0.0
    first_token: float | None = None    # monotonic time of the first token (streams)
    status: int = 0
    tokens: list[int] = field(default_factory=list)
    error: str = ""
    done: bool = False                  # the stream ended with [DONE]

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def started_streaming(self) -> bool:
        return self.first_token is not None


def prompt(seed: int, length: int = 64) -> list[int]:
    return [(seed * 131 + 17 * k) % 997 + 1 for k in range(length)]


async def one_request(client: httpx.AsyncClient, url: str, seed: int, max_tokens: int, stream: bool = True,
                      prompt_len: int = 64, timeout_s: float = 120.0) -> Outcome:
    """One completion; never raises (a transport error is an outcome)."""
    import orjson

    body = {"model": "tiny", "prompt": prompt(seed, prompt_len), "max_tokens": max_tokens, "stream": stream,
            "ignore_eos": True, "return_token_ids": True}
    o = Outcome(start=time.monotonic())
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url + "/v1/completions", json=body) as r:
                o.status = r.status_code
                if not stream or r.status_code != 200:
                    data = orjson.loads(await r.aread())
                    if r.status_code == 200:
                        o.tokens = list(data["choices"][0].get("token_ids") or [])
                    else:
                        o.error = str(data.get("error", {}).get("message", data))[:200]
                else:
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        if line == "data: [DONE]":
                            o.done = True
                            continue
                        obj = orjson.loads(line[6:])
                        if "error" in obj:
                            o.error = str(obj["error"].get("message"))[:200]
                            continue
                        for ch in obj.get("choices") or []:
                            ids = ch.get("token_ids") or []
                            if ids and o.first_token is None:
                                o.first_token = time.monotonic()
                            o.tokens.extend(ids)
    except (httpx.HTTPError, TimeoutError, ValueError, KeyError) as exc:
        o.error = o.error or f"{type(exc).__name__}: {exc}"[:200]
    o.end = time.monotonic()
    return o


async def load(url: str, total: int, concurrency: int, max_tokens: int, stream: bool = True,
               during: Any = None, prompt_len: int = 64, timeout_s: float = 120.0) -> list[Outcome]:
    """``total`` requests, ``concurrency`` at a time; ``during()`` (sync, run in a thread) is
    started once a quarter of them have been issued (the fault), its result ignored."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    issued = 0
    fault: asyncio.Future | None = None

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:
        async def run(k: int) -> Outcome:
            nonlocal issued, fault
            async with sem:
                issued += 1
                if during is not None and fault is None and issued >= total // 4:
                    fault = asyncio.ensure_future(asyncio.to_thread(during))
                return await one_request(client, url, k, max_tokens, stream, prompt_len, timeout_s)

        out = await asyncio.gather(*(run(k) for k in range(total)))
        if fault is not None:
            await fault
    return list(out)


def wait_until(pred: Any, timeout_s: float, poll_s: float = 0.05) -> float | None:
    """Seconds until ``pred()`` held, or None if it did not within ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return time.monotonic() - t0
        time.sleep(poll_s)
    return None


def running_on(url: str) -> int:
    """``vllm:num_requests_running`` of a fake instance (its slots in use), -1 if it does not answer."""
    try:
        text = httpx.get(url + "/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return -1
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_running{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return -1


def slow_readers(url: str, body: bytes, n: int, read_bytes: int = 256, rcvbuf: int = 4096) -> list[socket.socket]:
    """Open ``n`` streamed completions on raw sockets with a small receive buffer, read
    ``read_bytes`` of each and stop reading (the sockets stay open: the caller closes them)."""
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect((host, int(port)))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        socks.append(s)
    for s in socks:
        got = 0
        s.settimeout(30)
        while got < read_bytes:
            chunk = s.recv(min(4096, read_bytes - got))
            if not chunk:
                break
            got += len(chunk)
    return socks
