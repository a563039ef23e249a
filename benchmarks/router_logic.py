"""The live router's own logic per request, without I/O: CPU of ``Router.handle_client`` in one process.

The sockets are replaced by canned answers (a prefill response with ``kv_transfer_params``, then a
16-token SSE stream with a usage chunk and ``[DONE]``), so what is timed is parse, validation,
routing, both legs' bookkeeping, the relay's per-event accounting and the request's records: the
part of benchmarks/router_overhead.py's CPU per request that is the router's Python rather than
the kernel's socket work or the event loop's per-event dispatch (docs/live_cluster.md, "Speed").

    python benchmarks/router_logic.py [least-loaded|arrow|arrow-noflip]
"""
import asyncio
import gc
import json
import sys
import time

from arrow_rl.serving import router as R
from arrow_rl.serving.config import RouterConfig
from arrow_rl.serving.httpserver import ClientRequest

PREFILL = json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "tiny",
    "choices": [{"index": 0, "text": "a", "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 256, "completion_tokens": 1, "total_tokens": 257},
    "kv_transfer_params": {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": "e",
                           "remote_block_ids": [1, 2], "remote_host": "h", "remote_port": 1}}).encode()
def chunk(extra=None, choices=None):
    d = {"id": "cmpl-abc", "object": "text_completion", "created": 1, "model": "tiny",
         "choices": choices if choices is not None else [{"index": 0, "text": "tok", "logprobs": None, "finish_reason": None}]}
    if extra: d.update(extra)
    return b"data: " + json.dumps(d).encode() + b"\n\n"
EVENTS = [chunk() for _ in range(16)] + [chunk({"usage": {"prompt_tokens": 256, "completion_tokens": 16, "total_tokens": 272}}, [])] + [b"data: [DONE]\n\n"]

class Conn:
    def __init__(self, pool): self.pool = pool; self.complete = False; self.sink = None
    def send(self, path, body, xid): self.stream = b'"stream": true' in body or b'"stream":true' in body
    def set_timeout(self, total_s=None, idle_s=None): pass
    async def headers(self): return 200
    async def read_all(self): self.complete = True; return PREFILL
    async def read_some(self): return EVENTS[0]
    def release(self): pass
    def close(self): pass
    def attach(self, sink):
        self.sink = sink
        for e in EVENTS[1:-1]:
            sink.on_body(e)
        self.complete = True
        sink.on_body(EVENTS[-1])
        sink.on_end(None)
class Pool:
    async def acquire(self, url): return Conn(self)
    async def open(self, url, path, body, xid, total_s=None, idle_s=None, track=None):
        conn = await self.acquire(url)
        conn.send(path, body, xid)
        return conn, await conn.headers()
    def close(self): pass
class Client:
    closed = False; paused = False
    def start_stream(self, h, extra=b""): pass
    def write_chunk(self, d): pass
    def end_stream(self, d=b"", watch=None):
        if watch is not None: watch(True, "")
    def reply(self, *a, **k): raise AssertionError(a)

async def main(n):
    cfg = RouterConfig(instances=[{"url": "http://127.0.0.1:1", "role": "prefill"}, {"url": "http://127.0.0.1:2", "role": "decode"}],
                       routing=sys.argv[1] if len(sys.argv) > 1 else "least-loaded")
    r = R.Router(cfg)
    r.pool = Pool()
    r.models = frozenset({"tiny"}); r.max_model_len = 2048
    bodies = [json.dumps({"model": "tiny", "prompt": [(k * 131 + 17 * j) % 997 + 1 for j in range(256)], "max_tokens": 16,
                          "ignore_eos": True, "stream": True}).encode() for k in range(50)]
    hdrs = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"1300"), (b"connection", b"close")]
    cl = Client()
    gc.freeze(); gc.set_threshold(20_000, 20, 100)
    for rep in range(2):
        t0 = time.process_time()
        for k in range(n):
            req = ClientRequest(b"POST", b"/v1/completions", b"", hdrs, bodies[k % 50], True, False)
            await r.handle_client(cl, req, False)
        t1 = time.process_time()
    print(f"router python per request (no I/O): {1e6 * (t1 - t0) / n:.1f} us; completed {r.completed}")

asyncio.run(main(5000))
