"""Replay a workload against the router: token-id prompts of each request's input length,
``max_tokens`` = its output length with ``ignore_eos`` (so the output length is exact), sent at the
trace's (rate-scaled) arrival times. With ``api="chat"`` each request is a chat completion whose
user message is that many common English words (about one token each on an English BPE tokenizer;
the instance's usage report gives the exact count, which the record keeps). Every request becomes a client-side ``RequestRecord`` and a
journal line, scored by ``arrow_rl.metrics.summary.summarize`` like an emulator run.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import httpx
import numpy as np

from arrow_rl.cluster.base import RequestRecord
from arrow_rl.workload.workload import Workload


@dataclass(frozen=True)
class BenchOptions:
    model: str = "tiny"
    vocab_size: int = 1000            # prompt ids are drawn from [10, vocab_size)
    max_model_len: int | None = None  # clamp input+output to fit (a CPU test model has 1024)
    seed: int = 0
    timeout_s: float = 600.0
    temperature: float = 0.0
    api: Literal["completions", "chat"] = "completions"


# Short common words: about one BPE token each (with the leading space), so a chat message of n
# words is about n prompt tokens.
CHAT_WORDS = ("the", "time", "day", "way", "man", "world", "life", "hand", "part", "child", "eye", "place",
              "work", "week", "case", "point", "home", "water", "room", "book", "word", "night", "sea", "cat")


def chat_text(prompt: list[int]) -> str:
    return " ".join(CHAT_WORDS[t % len(CHAT_WORDS)] for t in prompt)


def shape_requests(wl: Workload, opts: BenchOptions) -> tuple[np.ndarray, np.ndarray, int]:
    """Input/output lengths actually sent, and how many requests were clamped to ``max_model_len``."""
    inp = wl.input_tokens.copy()
    out = wl.output_tokens.copy()
    clamped = 0
    if opts.max_model_len is not None:
        cap = opts.max_model_len
        out_c = np.minimum(out, cap // 2)
        in_c = np.minimum(inp, cap - out_c - 1)
        clamped = int(np.sum((in_c != inp) | (out_c != out)))
        inp, out = np.maximum(in_c, 1), np.maximum(out_c, 1)
    return inp, out, clamped


async def _one(client: httpx.AsyncClient, url: str, idx: int, t0: float, prompt: list[int], n_out: int,
               opts: BenchOptions, journal, records: list[RequestRecord]) -> None:
    body: dict = {"model": opts.model, "max_tokens": int(n_out), "ignore_eos": True, "stream": True,
                  "temperature": opts.temperature, "stream_options": {"include_usage": True}}
    if opts.api == "chat":
        body["messages"] = [{"role": "user", "content": chat_text(prompt)}]
        path = "/v1/chat/completions"
    else:
        body.update(prompt=prompt, return_token_ids=True)
        path = "/v1/completions"
    arrival = time.monotonic() - t0
    first = math.nan
    tokens = 0
    usage: dict | None = None
    n_in = len(prompt)
    error = ""
    done = False
    try:
        async with client.stream("POST", url + path, json=body, timeout=opts.timeout_s) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {(await r.aread()).decode('utf-8', 'replace')[:300]}"
            else:
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    obj = json.loads(line[6:])
                    if "error" in obj:
                        error = str(obj["error"].get("message", obj["error"]))[:300]
                        continue
                    if obj.get("usage"):
                        usage = obj["usage"]
                    for ch in obj.get("choices") or []:
                        if math.isnan(first):
                            first = time.monotonic() - t0
                        delta = ch.get("delta") or {}
                        tokens += len(ch.get("token_ids") or []) or (1 if ch.get("text") or delta.get("content") else 0)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finish = time.monotonic() - t0
    if usage:  # the instance's exact counts (chat prompts are words, not token ids)
        tokens = int(usage.get("completion_tokens") or tokens)
        n_in = int(usage.get("prompt_tokens") or n_in)
    ok = done and not error
    rec = RequestRecord(request_id=idx, arrival_s=arrival, input_tokens=n_in, output_tokens=tokens if ok else 0,
                        first_token_s=first if ok else math.nan, finish_s=finish if ok else math.nan,
                        rejected=not ok, reject_reason=error or ("" if ok else "stream ended without [DONE]"))
    records.append(rec)
    if journal is not None:
        journal.write(json.dumps({"id": idx, "arrival_s": arrival, "input_tokens": n_in, "max_tokens": int(n_out),
                                  "output_tokens": tokens, "first_token_s": None if math.isnan(first) else first,
                                  "finish_s": finish, "ok": ok, "error": error}) + "\n")


async def replay(router_url: str, wl: Workload, opts: BenchOptions = BenchOptions(), journal: str | Path | None = None,
                 progress: Callable[[int], None] | None = None) -> list[RequestRecord]:
    """Send every request of ``wl`` at its arrival time; return records sorted by request id."""
    rng = np.random.default_rng(opts.seed)
    inp, out, _ = shape_requests(wl, opts)
    url = router_url.rstrip("/")
    records: list[RequestRecord] = []
    jf = open(journal, "w", encoding="utf-8", buffering=1) if journal else None
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    try:
        async with httpx.AsyncClient(limits=limits) as client:
            t0 = time.monotonic()
            tasks = []
            for k in range(len(wl)):
                delay = float(wl.arrival_s[k] - wl.arrival_s[0]) - (time.monotonic() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                prompt = rng.integers(10, opts.vocab_size, size=int(inp[k])).tolist()
                task = asyncio.create_task(_one(client, url, k, t0, prompt, int(out[k]), opts, jf, records))
                if progress:
                    task.add_done_callback(lambda _t: progress(1))
                tasks.append(task)
            await asyncio.gather(*tasks)
    finally:
        if jf:
            jf.close()
    return sorted(records, key=lambda r: r.request_id)
