"""A fake vLLM OpenAI server with NIXL-style prefill/decode semantics, for fast deterministic tests.

It mimics what the live router depends on (docs/live_cluster.md, the router's protocol; vLLM's ``/metrics`` names): a prefill leg
(``kv_transfer_params.do_remote_decode``) keeps the prompt's "KV" and answers with top-level
``kv_transfer_params``; a decode leg (``do_remote_prefill``) pulls it from the named remote engine
and counts the prompt under ``prompt_tokens_by_source_total{source="external_kv_transfer"}``; a
hand-off from an engine to itself fails with HTTP 500 like real NIXL; ``/metrics`` uses vLLM's
metric names. It speaks vLLM's OpenAI shapes: text and token-id prompts (text is one token per
character), ``text_completion`` and ``chat.completion`` objects, SSE chunks (chat: a role delta
first, then content deltas, ``finish_reason`` on the last, usage with ``stream_options``), ``n``,
``stop``, ``logprobs``, ``return_token_ids``, and vLLM's error object and validation. Output tokens
are a pure function of the prompt, so a hand-off returns the same tokens as a local run. Latencies and failures are configurable (``FakeConfig``, ``/fake/config``).

Engines in one process pull KV from each other's memory (``ENGINES``). An engine given its own
``http_url`` also advertises it in ``kv_transfer_params`` (``remote_http``), and a decode leg whose
source engine lives in another process pulls the KV over HTTP (``POST /fake/kv/pull``) with a
timeout (``FakeConfig.kv_pull_timeout_s``): a dead or frozen prefill instance then fails the pull as
it would with NIXL, instead of the pull succeeding from shared memory. ``python -m
arrow_rl.cluster.live.fake_vllm --port P`` serves one engine in its own process (what ``arrow-rl
launch --engine fake`` starts).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from arrow_rl.cluster.live.validation import BadRequest, error_body, parse_json, validate_request

# Every fake engine in this process, by engine id: where a decode leg "pulls" KV from.
ENGINES: dict[str, "FakeVllm"] = {}

VOCAB = 1000
KV_HELD_MAX = 10_000  # prompts held for pulls per engine (a real engine frees unpulled blocks after a timeout)


def expected_tokens(prompt: list[int], n: int) -> list[int]:
    """The deterministic output of every fake engine for ``prompt`` (same on any instance)."""
    h = 0
    for t in prompt:
        h = (h * 31 + int(t)) % 1_000_003
    return [(h + 7919 * (k + 1)) % VOCAB for k in range(n)]


@dataclass
class FakeConfig:
    prefill_s_per_token: float = 0.0      # prefill compute time per prompt token
    prefill_base_s: float = 0.001
    decode_step_s: float = 0.002          # time per generated token
    kv_pull_s: float = 0.001
    kv_pull_timeout_s: float = 2.0        # a pull over HTTP from an engine in another process
    # Failure injection (each counts down per matching request; -1 = forever):
    fail_prefill: int = 0                 # answer prefill legs with HTTP 500
    fail_decode_before_stream: int = 0    # answer decode legs with HTTP 500
    break_stream_after: int = -1          # close a stream after this many tokens (-1: never)
    fail_kv_pull_in_stream: int = 0       # a streamed decode leg answers 200, then an error event: what vLLM
                                          # sends when a KV pull fails (kv_load_failure_policy "fail")
    hang: bool = False                    # accept requests but never answer
    hang_health: bool = False             # /health never answers either (a frozen process)
    healthy: bool = True                  # /health answers 200 (else 503)


@dataclass
class FakeVllm:
    name: str = "fake"
    model: str = "tiny"
    max_model_len: int = 2048
    config: FakeConfig = field(default_factory=FakeConfig)
    engine_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    nixl_port: int = 5600
    http_url: str | None = None          # set: KV can be pulled over HTTP from another process
    aliases: tuple[str, ...] = ()        # further served model names (vLLM's --served-model-name a b)

    def __post_init__(self) -> None:
        ENGINES[self.engine_id] = self
        self._http: Any = None  # httpx.AsyncClient for KV pulls from other processes, made on first use
        self.kv_store: dict[str, list[int]] = {}      # remote_request_id -> prompt tokens held for pulls
        self.running = 0
        self.requests_seen: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._lock = asyncio.Lock()
        r = self.registry = CollectorRegistry()
        lab = ["model_name", "engine"]
        self.g_running = Gauge("vllm:num_requests_running", "running", lab, registry=r)
        self.g_waiting = Gauge("vllm:num_requests_waiting", "waiting", lab, registry=r)
        self.g_kv = Gauge("vllm:kv_cache_usage_perc", "kv usage", lab, registry=r)
        self.g_cache = Gauge("vllm:cache_config_info", "cache config", ["block_size", "num_gpu_blocks"], registry=r)
        self.g_cache.labels("128", "8192").set(1)
        self.c_prompt = Counter("vllm:prompt_tokens", "prompt tokens", lab, registry=r)
        self.c_gen = Counter("vllm:generation_tokens", "generation tokens", lab, registry=r)
        self.c_src = Counter("vllm:prompt_tokens_by_source", "by source", lab + ["source"], registry=r)
        self.c_fail = Counter("vllm:nixl_num_failed_transfers", "failed transfers", lab, registry=r)
        self.c_ok = Counter("vllm:request_success", "finished", lab + ["finished_reason"], registry=r)
        b = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
        self.h_ttft = Histogram("vllm:time_to_first_token_seconds", "ttft", lab, buckets=b, registry=r)
        self.h_itl = Histogram("vllm:inter_token_latency_seconds", "itl", lab, buckets=b, registry=r)
        self._lab = (self.model, "0")
        for src in ("local_compute", "local_cache_hit", "external_kv_transfer"):
            self.c_src.labels(*self._lab, src)
        self.c_fail.labels(*self._lab)
        self.app = Starlette(routes=[
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/fake/config", self._set_config, methods=["POST"]),
            Route("/fake/kv/pull", self._kv_pull, methods=["POST"]),
        ])

    # ---- endpoints ------------------------------------------------------------------------
    async def _health(self, request: Request) -> Response:
        if self.config.hang_health:
            await asyncio.sleep(3600)
        return Response(status_code=200 if self.config.healthy else 503)

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model",
                                                         "max_model_len": self.max_model_len}
                                                        for name in (self.model, *self.aliases)]})

    async def _kv_pull(self, request: Request) -> Response:
        """Hand a held prompt's "KV" to a decode engine in another process (and forget it, as a
        NIXL pull frees the prefill instance's blocks)."""
        try:
            rid = (await request.json())["request_id"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "body must be {\"request_id\": ...}"}, status_code=400)
        held = self.kv_store.pop(str(rid), None)
        if held is None:
            return JSONResponse({"error": f"no KV held for {rid!r}"}, status_code=404)
        return JSONResponse({"tokens": held})

    async def _pull_remote(self, kvp: dict) -> list[int] | None:
        """The prompt tokens a prefill engine holds for this decode leg, or None (pull failed)."""
        rid = kvp.get("remote_request_id", "")
        remote = ENGINES.get(kvp.get("remote_engine_id", ""))
        if remote is not None:
            return remote.kv_store.pop(rid, None)
        url = kvp.get("remote_http")
        if not isinstance(url, str) or not url.startswith("http://"):
            return None
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient()
        try:
            r = await self._http.post(url + "/fake/kv/pull", json={"request_id": rid},
                                      timeout=self.config.kv_pull_timeout_s)
            return list(r.json()["tokens"]) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    async def _metrics(self, request: Request) -> Response:
        self.g_running.labels(*self._lab).set(self.running)
        self.g_waiting.labels(*self._lab).set(0)
        self.g_kv.labels(*self._lab).set(min(1.0, len(self.kv_store) / 100))
        return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4")

    async def _set_config(self, request: Request) -> Response:
        for k, v in (await request.json()).items():
            if not hasattr(self.config, k):
                return JSONResponse({"error": f"unknown field {k}"}, status_code=400)
            setattr(self.config, k, v)
        return JSONResponse({"ok": True})

    @staticmethod
    def _take(n: int) -> tuple[bool, int]:
        """Count down a failure budget: (fire now?, new budget)."""
        if n == 0:
            return False, 0
        return True, (n - 1 if n > 0 else n)

    async def _chat_completions(self, request: Request) -> Response:
        return await self._endpoint(request, chat=True)

    async def _completions(self, request: Request) -> Response:
        return await self._endpoint(request, chat=False)

    async def _endpoint(self, request: Request, chat: bool) -> Response:
        """Validate like vLLM (same rules as the router: ``validation.py``), then serve."""
        try:
            body, _ = validate_request(parse_json(await request.body()), chat, self.max_model_len,
                                       frozenset({self.model, *self.aliases}), engine=True)
        except BadRequest as exc:
            return _error(exc.status, str(exc), exc.param)
        self.requests_seen.append(body)
        prompt = chat_tokens(body["messages"]) if chat else tokenize(body["prompt"])
        key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
        # vLLM's defaults: 16 for completions, the rest of the context for chat.
        max_tokens = body.get(key) or (self.max_model_len - len(prompt) if chat else 16)
        if len(prompt) + max_tokens > self.max_model_len:
            return _error(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                               f"you requested {len(prompt) + max_tokens} tokens.", key)
        return await self._until_disconnect(request, self._handle(body, prompt, max_tokens, chat))

    @staticmethod
    async def _until_disconnect(request: Request, work: Any) -> Response:
        """Run ``work`` but abandon it if the client disconnects first, as vLLM's API server does
        (``with_cancellation``): a router that closes a leg frees the engine's slot. A streamed
        answer is watched by Starlette's ``StreamingResponse`` itself once it starts."""
        task = asyncio.ensure_future(work)

        async def gone() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watch = asyncio.ensure_future(gone())
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return Response(status_code=499)   # nobody is listening
        return task.result()

    async def _handle(self, body: dict, prompt: list[int], max_tokens: int, chat: bool) -> Response:
        cfg = self.config
        if cfg.hang:
            await asyncio.sleep(3600)
        kvp = body.get("kv_transfer_params") or {}
        t0 = time.perf_counter()
        if kvp.get("do_remote_decode"):
            return await self._prefill_leg(body, prompt, t0, chat)
        if kvp.get("do_remote_prefill"):
            fire, cfg.fail_decode_before_stream = self._take(cfg.fail_decode_before_stream)
            if fire:
                return _error(500, "injected decode failure")
            if kvp.get("remote_engine_id") == self.engine_id:
                # Real NIXL: kv_connector/utils.py::register_remote_engine asserts.
                self.c_fail.labels(*self._lab).inc()
                return _error(500, f"AssertionError: Cannot register local engine {self.engine_id} as remote")
            held = await self._pull_remote(kvp)
            if held is None or held != prompt:
                self.c_fail.labels(*self._lab).inc()
                return _error(500, "KV pull failed")
            await asyncio.sleep(cfg.kv_pull_s)
            fire, cfg.fail_kv_pull_in_stream = self._take(cfg.fail_kv_pull_in_stream)
            if fire and body.get("stream"):
                self.c_fail.labels(*self._lab).inc()
                return StreamingResponse(self._failed_stream(chat), media_type="text/event-stream")
            self.c_src.labels(*self._lab, "external_kv_transfer").inc(len(prompt))
        else:
            fire, cfg.fail_decode_before_stream = self._take(cfg.fail_decode_before_stream)
            if fire:
                return _error(500, "injected failure")
            self.c_src.labels(*self._lab, "local_compute").inc(len(prompt))
            await asyncio.sleep(cfg.prefill_base_s + cfg.prefill_s_per_token * len(prompt))
        self.c_prompt.labels(*self._lab).inc(len(prompt))
        seqs = [_generate(prompt, max_tokens, k, body.get("stop")) for k in range(body.get("n") or 1)]
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        if body.get("stream"):
            return StreamingResponse(self._stream(rid, seqs, len(prompt), t0, body, chat),
                                     media_type="text/event-stream")
        self.running += 1
        try:
            for _ in range(max(len(toks) for toks, _ in seqs)):
                await asyncio.sleep(cfg.decode_step_s)
        finally:
            self.running -= 1
        for toks, _ in seqs:
            self._count_done(toks, t0)
        return JSONResponse(self._response(rid, seqs, len(prompt), body, chat))

    async def _prefill_leg(self, body: dict, prompt: list[int], t0: float, chat: bool) -> Response:
        cfg = self.config
        fire, cfg.fail_prefill = self._take(cfg.fail_prefill)
        if fire:
            return _error(500, "injected prefill failure")
        assert body.get("max_tokens") == 1 and body.get("stream") is False, "router must send max_tokens=1, stream=false"
        self.running += 1
        try:
            await asyncio.sleep(cfg.prefill_base_s + cfg.prefill_s_per_token * len(prompt))
        finally:
            self.running -= 1
        self.c_prompt.labels(*self._lab).inc(len(prompt))
        self.c_src.labels(*self._lab, "local_compute").inc(len(prompt))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        self.kv_store[rid] = list(prompt)
        if len(self.kv_store) > KV_HELD_MAX:  # never pulled (the router retried elsewhere): drop the oldest
            self.kv_store.pop(next(iter(self.kv_store)))
        seqs = [_generate(prompt, 1, 0, None)]
        self._count_done(seqs[0][0], t0)
        out = self._response(rid, seqs, len(prompt), body, chat)
        out["kv_transfer_params"] = {
            "do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [[1]],
            "remote_engine_id": self.engine_id, "remote_request_id": rid, "remote_host": "localhost",
            "remote_port": self.nixl_port, "tp_size": 1, "remote_num_tokens": len(prompt), "transfer_mode": "pull",
        }
        if self.http_url:
            out["kv_transfer_params"]["remote_http"] = self.http_url
        return JSONResponse(out)

    def _count_done(self, tokens: list[int], t0: float) -> None:
        self.c_gen.labels(*self._lab).inc(len(tokens))
        self.h_ttft.labels(*self._lab).observe(time.perf_counter() - t0)
        self.c_ok.labels(*self._lab, "length").inc()

    def _response(self, rid: str, seqs: list[tuple[list[int], str | None]], n_prompt: int, body: dict,
                  chat: bool) -> dict:
        """vLLM's non-streaming ``text_completion`` / ``chat.completion`` object."""
        choices = []
        for k, (toks, stop) in enumerate(seqs):
            text = detokenize(toks)
            finish = "stop" if stop else "length"
            if chat:
                ch: dict[str, Any] = {"index": k, "message": {"role": "assistant", "content": text},
                                      "logprobs": _chat_logprobs(toks) if body.get("logprobs") else None,
                                      "finish_reason": finish, "stop_reason": stop}
            else:
                ch = {"index": k, "text": text, "logprobs": _completion_logprobs(toks) if body.get("logprobs")
                      is not None else None, "finish_reason": finish, "stop_reason": stop}
            if body.get("return_token_ids"):
                ch["token_ids"] = toks
            choices.append(ch)
        n_out = sum(len(t) for t, _ in seqs)
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}}

    async def _failed_stream(self, chat: bool):
        """A stream the engine fails before its first token: (chat: the role delta, then) vLLM's
        error object as an SSE event, then [DONE]."""
        if chat:
            yield (b'data: {"id": "chatcmpl-failed", "object": "chat.completion.chunk", "model": "' + self.model.encode()
                   + b'", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}\n\n')
        yield b"data: " + json.dumps(error_body(500, "Internal server error")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def _stream(self, rid: str, seqs: list[tuple[list[int], str | None]], n_prompt: int, t0: float,
                      body: dict, chat: bool):
        """vLLM's SSE shapes: chat sends a role delta first, then one content delta per token; the
        last token's chunk carries ``finish_reason``; a usage chunk (``choices: []``) when asked."""
        cfg = self.config
        obj = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())

        def chunk(choices: list[dict], **extra: Any) -> bytes:
            return b"data: " + json.dumps({"id": rid, "object": obj, "created": created, "model": self.model,
                                           "choices": choices, **extra}).encode() + b"\n\n"

        self.running += 1
        try:
            if chat:
                yield chunk([{"index": k, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None} for k in range(len(seqs))])
            last = None
            for step in range(max(len(toks) for toks, _ in seqs)):
                if 0 <= cfg.break_stream_after <= step:
                    raise ConnectionAbortedError("injected stream break")
                await asyncio.sleep(cfg.decode_step_s)
                now = time.perf_counter()
                if last is None:
                    self.h_ttft.labels(*self._lab).observe(now - t0)
                else:
                    self.h_itl.labels(*self._lab).observe(now - last)
                last = now
                choices = []
                for k, (toks, stop) in enumerate(seqs):
                    if step >= len(toks):
                        continue
                    self.c_gen.labels(*self._lab).inc()
                    tok = toks[step]
                    end = step == len(toks) - 1
                    finish = ("stop" if stop else "length") if end else None
                    text = detokenize([tok])
                    if chat:
                        ch: dict[str, Any] = {"index": k, "delta": {"content": text},
                                              "logprobs": _chat_logprobs([tok]) if body.get("logprobs") else None,
                                              "finish_reason": finish}
                    else:
                        ch = {"index": k, "text": text, "logprobs": _completion_logprobs([tok]) if body.get(
                            "logprobs") is not None else None, "finish_reason": finish}
                    if end:
                        ch["stop_reason"] = stop
                    if body.get("return_token_ids"):
                        ch["token_ids"] = [tok]
                    choices.append(ch)
                yield chunk(choices)
            if (body.get("stream_options") or {}).get("include_usage"):
                n_out = sum(len(t) for t, _ in seqs)
                yield chunk([], usage={"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                       "total_tokens": n_prompt + n_out})
            yield b"data: [DONE]\n\n"
            self.c_ok.labels(*self._lab, "length").inc()
        finally:
            self.running -= 1


# ---- the fake's "tokenizer" (deterministic, no model files) -----------------------------------------
def tokenize(prompt: str | list[int]) -> list[int]:
    """Token ids as given, or one token per character of a text prompt."""
    return list(prompt) if isinstance(prompt, list) else [ord(c) % VOCAB for c in prompt]


def chat_tokens(messages: list[dict]) -> list[int]:
    """A chat prompt: the messages' text parts, one token per character (no template)."""
    text = []
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        text.append(str(content))
    return tokenize("".join(text))


def detokenize(tokens: list[int]) -> str:
    """Each output token reads as one short word, so stop strings and text deltas behave as in vLLM."""
    return "".join(f" w{t}" for t in tokens)


def _generate(prompt: list[int], n: int, seq: int, stop: str | list[str] | None) -> tuple[list[int], str | None]:
    """Sequence ``seq`` of a request (``expected_tokens`` for the first), cut before a stop string."""
    toks = expected_tokens(prompt if seq == 0 else [*prompt, seq], n)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    for k in range(len(toks)):
        text = detokenize(toks[: k + 1])
        hit = next((st for st in stops if st in text), None)
        if hit is not None:
            return toks[:k], hit
    return toks, None


def _completion_logprobs(tokens: list[int]) -> dict:
    return {"tokens": [detokenize([t]) for t in tokens], "token_logprobs": [-1.0] * len(tokens),
            "top_logprobs": [None] * len(tokens), "text_offset": [0] * len(tokens)}


def _chat_logprobs(tokens: list[int]) -> dict:
    return {"content": [{"token": detokenize([t]), "logprob": -1.0, "bytes": list(detokenize([t]).encode()),
                         "top_logprobs": []} for t in tokens]}


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


class ServerThread:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread (tests, local demos)."""

    def __init__(self, app: Any, port: int = 0, host: str = "127.0.0.1") -> None:
        import socket

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                   lifespan="on", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "ServerThread":
        self.thread.start()
        t_end = time.time() + timeout_s
        while not self.server.started:
            if time.time() > t_end or not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve one fake engine in this process (``arrow-rl launch --engine fake`` starts these).

    Accepts the flags ``arrow-rl launch`` gives every engine it knows (``--served-model-name`` with
    several names: the first is what clients use, the others are aliases the launcher checks)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m arrow_rl.cluster.live.fake_vllm",
                                 description="A fake vLLM OpenAI server with NIXL-like P/D semantics (tests, demos)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--served-model-name", nargs="+", default=["tiny"])
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--nixl-port", type=int, default=5600)
    for f in ("prefill_s_per_token", "prefill_base_s", "decode_step_s", "kv_pull_s", "kv_pull_timeout_s"):
        ap.add_argument("--" + f.replace("_", "-"), type=float, default=getattr(FakeConfig(), f))
    a = ap.parse_args(argv)
    cfg = FakeConfig(**{f: getattr(a, f) for f in ("prefill_s_per_token", "prefill_base_s", "decode_step_s",
                                                     "kv_pull_s", "kv_pull_timeout_s")})
    names = a.served_model_name
    engine = FakeVllm(name=f"fake@{a.port}", model=names[0], aliases=tuple(names[1:]), max_model_len=a.max_model_len,
                      config=cfg, nixl_port=a.nixl_port, http_url=f"http://{a.host}:{a.port}")
    uvicorn.run(engine.app, host=a.host, port=a.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
