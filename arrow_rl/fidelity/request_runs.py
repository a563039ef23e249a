"""Read per-request runs: every request's send time, token counts, TTFT and end-to-end latency.

Three layouts, each one stage:

* BLIS traces (``trace.csv`` + ``trace.yaml``, times in the header's ``time_unit``): the request's
  send, first and last chunk; ``server_input_tokens`` is the prompt as the server tokenized it;
  ``arrival_time_us`` (the planned send) shows when the client itself fell behind (saturated).
* ``requests.csv`` (residency runs): ``start_time`` (s), ``ttft_ms``, ``e2e_ms``,
  ``num_output_tokens`` and ``num_input_tokens`` (older files lack it: the prompt length is then
  ``summary.json``'s ``config.prompt_tokens``); a request the client marked failed (−1 ms, no
  tokens) counts as sent, not finished. A folder with both prefers the trace.
* ``requests.jsonl`` + ``meta.json`` (in-process vLLM replays): the engine's own monotonic clock
  (``queued_ts``, ``first_token_ts``, ``last_token_ts``) and the resolved engine arguments,
  including the reported ``num_gpu_blocks``. No API server sits in the path.

The server's knobs come from ``server_config.json`` in the run folder or a parent folder when there
is one (``max_num_batched_tokens``, ``max_num_seqs``, ``num_gpu_blocks``, ``tensor_parallel_size``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from arrow_rl.fidelity.runs import RunFormatError, read_mapping
from arrow_rl.fidelity.trace_run import (Topology, TraceRun, UnsupportedRun, check_columns, client_backlog,
                                         field_number, measured_stage, read_csv_rows)

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_PARENT_LEVELS = 4


def _rows(path: Path, need: tuple[str, ...]) -> list[dict[str, str]]:
    rows = read_csv_rows(path, need)
    if not rows:
        raise RunFormatError(f"{path}: no requests")
    return rows


_num = field_number


def _server_config(root: Path) -> tuple[dict[str, Any], Path | None]:
    """The nearest ``server_config.json`` at or above the run folder (server knobs), if any."""
    for folder in [root, *root.parents][:_PARENT_LEVELS + 1]:
        path = folder / "server_config.json"
        if path.is_file():
            return read_mapping(path, "server knobs"), path
    return {}, None


def _opt_int(doc: dict[str, Any], key: str, path: Path | None) -> int | None:
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise RunFormatError(f"{path}: field {key!r} must be a positive integer, got {v!r}")
    return v


def _finish(name: str, root: Path, kind: str, model: str, server: dict[str, Any], server_path: Path | None,
            arrivals: np.ndarray, inputs: np.ndarray, outputs: np.ndarray, ttft: np.ndarray, e2e: np.ndarray,
            ok: np.ndarray, *, api_server: bool = True, gpu: str | None = None,
            knobs: dict[str, int | None] | None = None, backlog: bool = False) -> TraceRun:
    order = np.argsort(arrivals, kind="stable")
    arrivals, inputs, outputs, ttft, e2e, ok = (a[order] for a in (arrivals, inputs, outputs, ttft, e2e, ok))
    t0 = float(arrivals.min())
    arrivals = arrivals - t0
    stage = measured_stage(arrivals[ok], ttft[ok], e2e[ok], outputs[ok], sent=int(arrivals.size), backlog=backlog)
    k = knobs if knobs is not None else {key: _opt_int(server, key, server_path) for key in
                                         ("max_num_batched_tokens", "max_num_seqs", "num_gpu_blocks")}
    tp = _opt_int(server, "tensor_parallel_size", server_path) or 1
    return TraceRun(name=name, path=root, kind=kind, model=model, tensor_parallelism=tp, gpu=gpu,
                    max_num_batched_tokens=k["max_num_batched_tokens"], max_num_seqs=k["max_num_seqs"],
                    num_gpu_blocks=k["num_gpu_blocks"], topology=Topology(tp_prefill=tp, tp_decode=tp),
                    input_tokens=inputs.astype(np.int64), output_tokens=outputs.astype(np.int64),
                    arrivals=arrivals, rate=None, concurrency=None, api_server=api_server, shared_prompt=False,
                    stage=stage)


def _run_name(root: Path) -> str:
    """``agg_8rps/vanilla`` rather than ``vanilla``: the folder and its parent."""
    return f"{root.parent.name}/{root.name}" if root.parent.name else root.name


def load_blis_trace(root: Path) -> TraceRun:
    """A folder with a BLIS ``trace.csv`` and its ``trace.yaml`` header."""
    head_path = root / "trace.yaml"
    head = read_mapping(head_path, "the trace header: time_unit, server.model")
    unit = head.get("time_unit", "us")
    if unit not in _TIME_UNITS:
        raise RunFormatError(f"{head_path}: field 'time_unit' must be one of {', '.join(_TIME_UNITS)}, got {unit!r}")
    server_node = head.get("server") if isinstance(head.get("server"), dict) else {}
    model = server_node.get("model")
    if not isinstance(model, str):
        raise RunFormatError(f"{head_path}: missing field 'server.model'")
    path = root / "trace.csv"
    need = ("send_time_us", "first_chunk_time_us", "last_chunk_time_us", "output_tokens", "status")
    need = tuple(c.replace("_us", f"_{unit}") if unit != "us" else c for c in need)
    rows = _rows(path, need)
    scale = _TIME_UNITS[unit]
    send_key, first_key, last_key = need[:3]
    in_key = "server_input_tokens" if "server_input_tokens" in rows[0] else "input_tokens"
    check_columns(path, set(rows[0]), (in_key,))
    n = len(rows)
    send, first, last, inp, out = (np.empty(n) for _ in range(5))
    ok = np.zeros(n, dtype=bool)
    for i, r in enumerate(rows):
        line = i + 2
        send[i] = _num(r, send_key, path, line) * scale
        inp[i] = _num(r, in_key, path, line)
        out[i] = _num(r, "output_tokens", path, line)
        ok[i] = r["status"] == "ok"
        if ok[i]:
            first[i] = _num(r, first_key, path, line) * scale
            last[i] = _num(r, last_key, path, line) * scale
            if not send[i] <= first[i] <= last[i]:
                raise RunFormatError(f"{path} line {line}: times must satisfy send <= first chunk <= last chunk")
        else:
            first[i] = last[i] = np.nan
    if np.any(inp[ok] < 1) or np.any(out[ok] < 1):
        raise RunFormatError(f"{path}: every finished request needs input and output tokens >= 1")
    backlog = False
    if "arrival_time_us" in rows[0] and unit == "us":   # the planned send time (workload schedule)
        planned = np.array([_num(r, "arrival_time_us", path, i + 2) for i, r in enumerate(rows)]) * scale
        backlog = client_backlog(planned, send)
    server, server_path = _server_config(root)
    return _finish(_run_name(root), root, "blis-trace", model, server, server_path, send, inp, out,
                   first - send, last - send, ok, backlog=backlog)


def load_requests_csv(root: Path) -> TraceRun:
    """A folder with a residency ``requests.csv`` (and ``summary.json`` when it lacks input lengths)."""
    path = root / "requests.csv"
    rows = _rows(path, ("start_time", "ttft_ms", "e2e_ms", "num_output_tokens"))
    summary_path = root / "summary.json"
    summary = read_mapping(summary_path, "run summary") if summary_path.is_file() else {}
    config = summary.get("config", {})
    prompt_tokens = config.get("prompt_tokens") if isinstance(config, dict) else None
    has_inputs = "num_input_tokens" in rows[0]
    if not has_inputs and not isinstance(prompt_tokens, int):
        raise RunFormatError(f"{path}: missing field 'num_input_tokens' (and no config.prompt_tokens in "
                             f"{summary_path})")
    n = len(rows)
    start, ttft, e2e, inp, out = (np.empty(n) for _ in range(5))
    ok = np.ones(n, dtype=bool)
    for i, r in enumerate(rows):
        line = i + 2
        start[i] = _num(r, "start_time", path, line)
        ttft[i] = _num(r, "ttft_ms", path, line) * 1e-3
        e2e[i] = _num(r, "e2e_ms", path, line) * 1e-3
        out[i] = _num(r, "num_output_tokens", path, line)
        inp[i] = _num(r, "num_input_tokens", path, line) if has_inputs else prompt_tokens
        if ttft[i] < 0 and e2e[i] < 0:   # the client's mark of a failed request (-1 ms, no tokens)
            ok[i] = False
            continue
        if not 0 <= ttft[i] <= e2e[i]:
            raise RunFormatError(f"{path} line {line}: fields 'ttft_ms' and 'e2e_ms' must satisfy 0 <= ttft <= e2e")
        if inp[i] < 1 or out[i] < 1:
            raise RunFormatError(f"{path} line {line}: token counts must be >= 1")
    if not ok.any():
        raise RunFormatError(f"{path}: every request failed; nothing to compare")
    server, server_path = _server_config(root)
    model = server.get("model") or (config.get("model") if isinstance(config, dict) else None)
    if not isinstance(model, str):
        raise RunFormatError(f"{path}: no model named (server_config.json 'model' or summary.json 'config.model')")
    if not ok.all():   # a failed request is sent and replayed with the run's usual output length
        out[~ok] = float(np.median(out[ok]))
    return _finish(_run_name(root), root, "requests-csv", model, server, server_path, start, inp, out, ttft, e2e, ok)


def load_requests_jsonl(root: Path) -> TraceRun:
    """A folder with an in-process replay's ``requests.jsonl`` and its ``meta.json``."""
    meta_path = root / "meta.json"
    meta = read_mapping(meta_path, "the engine arguments")
    if not isinstance(meta.get("engine_kwargs"), dict):
        raise RunFormatError(f"{meta_path}: missing field 'engine_kwargs'")
    kw = meta["engine_kwargs"]
    model = kw.get("model") or meta.get("model")
    if not isinstance(model, str):
        raise RunFormatError(f"{meta_path}: missing field 'engine_kwargs.model'")
    dp = kw.get("data_parallel_size", 1) or 1
    if dp != 1 or kw.get("enable_expert_parallel"):
        raise UnsupportedRun(f"{meta_path}: data_parallel_size {dp} with expert parallelism "
                             f"{bool(kw.get('enable_expert_parallel'))}: the emulator models TP only")
    kv = meta.get("kv_cache") if isinstance(meta.get("kv_cache"), dict) else {}
    hw = meta.get("hardware") if isinstance(meta.get("hardware"), dict) else {}
    knobs = {"max_num_batched_tokens": _opt_int(kw, "max_num_batched_tokens", meta_path),
             "max_num_seqs": _opt_int(kw, "max_num_seqs", meta_path),
             "num_gpu_blocks": _opt_int(kv, "num_gpu_blocks", meta_path)}
    path = root / "requests.jsonl"
    if not path.is_file():
        raise RunFormatError(f"{path}: missing (the per-request records)")
    need = ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")
    recs = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunFormatError(f"{path} line {line}: not valid JSON: {exc}") from None
        if not isinstance(rec, dict):
            raise RunFormatError(f"{path} line {line}: expected an object")
        check_columns(Path(f"{path} line {line}"), set(rec), need)
        recs.append({k: _num({k: rec[k]}, k, path, line) for k in need})
    if not recs:
        raise RunFormatError(f"{path}: no requests")
    col = {k: np.array([r[k] for r in recs]) for k in need}
    ttft = col["first_token_ts"] - col["queued_ts"]
    e2e = col["last_token_ts"] - col["queued_ts"]
    if np.any(ttft < 0) or np.any(e2e < ttft):
        raise RunFormatError(f"{path}: times must satisfy queued_ts <= first_token_ts <= last_token_ts")
    server = {"tensor_parallel_size": kw.get("tensor_parallel_size", 1)}
    name = f"{root.parent.parent.name}/{root.parent.name}" if root.name == "vllm" else _run_name(root)
    return _finish(name, root, "requests-jsonl", model, server, meta_path, col["queued_ts"], col["input_toks"],
                   col["output_toks"], ttft, e2e, np.ones(len(recs), dtype=bool), api_server=False,
                   gpu=hw.get("device_name") or _gpu_from_path(root), knobs=knobs)


def _gpu_from_path(root: Path) -> str | None:
    """A GPU named by a folder above the run (``RTX4090/Llama-3.1-8B/vllm``), for files that omit it."""
    for part in root.parts[::-1]:
        if part.upper().startswith(("RTX", "H100", "H200", "A100", "B200")):
            return part
    return None


def is_per_request_run(root: Path) -> bool:
    return root.is_dir() and any((root / f).is_file() for f in ("trace.csv", "requests.csv", "requests.jsonl"))


def load_per_request_run(root: str | Path) -> TraceRun:
    """Read a per-request run folder (trace.csv preferred, then requests.csv, then requests.jsonl)."""
    root = Path(root)
    if (root / "trace.csv").is_file():
        return load_blis_trace(root)
    if (root / "requests.csv").is_file():
        return load_requests_csv(root)
    if (root / "requests.jsonl").is_file():
        return load_requests_jsonl(root)
    raise RunFormatError(f"{root}: no trace.csv, requests.csv or requests.jsonl")


__all__ = ["is_per_request_run", "load_blis_trace", "load_per_request_run", "load_requests_csv",
           "load_requests_jsonl"]
