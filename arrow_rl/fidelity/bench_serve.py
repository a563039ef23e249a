"""Read ``vllm bench serve`` result JSON: one load point (a Poisson rate, a closed-loop concurrency,
or both) of a colocated or disaggregated deployment.

A result states the load (``request_rate``, ``burstiness``, ``max_concurrency``, ``num_prompts``)
and the means (``mean_ttft_ms``, ``mean_tpot_ms``, ``mean_e2el_ms`` when present). Prompt and output
lengths are the per-request ``input_lens``/``output_lens`` when saved, else the totals over the
prompts (the random dataset's fixed lengths). Files that also save ``start_times``, ``ttfts`` and
``itls`` are replayed request by request.

The deployment is not in the file. It is read from a ``topology.yaml`` beside the file when there
is one (``colocated``, ``prefill``, ``decode``, ``tp_prefill``, ``tp_decode``, ``connector``), else
from the folder and file names as the published studies write them: ``p1xtp2-d2xtp2``,
``1ptp2-3dtp2`` or ``1xtp4-1xtp4`` (P prefill instances at TP a, D decode instances at TP b),
``1p3d`` (TP1), ``4xtp2`` (four colocated replicas at TP2), ``colocated``. A disaggregated run's
KV connector is NIXL unless the name says LMCache.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from arrow_rl.fidelity.runs import RunFormatError, read_mapping
from arrow_rl.fidelity.trace_run import (BENCH_SATURATED_TTFT_S, Topology, TraceRun, TraceStage, UnsupportedRun,
                                         measured_stage)

_PD_PATTERNS = (
    re.compile(r"p(\d+)xtp(\d+)-d(\d+)xtp(\d+)"),
    re.compile(r"(\d+)ptp(\d+)-(\d+)dtp(\d+)"),
    re.compile(r"(?<![0-9a-z])(\d+)xtp(\d+)-(\d+)xtp(\d+)"),
)
_PD_TP1 = re.compile(r"(?<![0-9a-z])(\d+)p(\d+)d(?![0-9a-z])")
_TOPOLOGY_KEYS = ("colocated", "prefill", "decode", "tp_prefill", "tp_decode", "connector")


def _num(doc: dict[str, Any], key: str, path: Path, *, optional: bool = False) -> float | None:
    if key not in doc or doc[key] is None:
        if optional:
            return None
        raise RunFormatError(f"{path}: missing field {key!r}")
    v = doc[key]
    if v == "inf":
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise RunFormatError(f"{path}: field {key!r} must be a number, got {v!r}")
    return float(v)


def _topology_file(path: Path) -> Topology:
    doc = read_mapping(path, "the deployment")
    unknown = sorted(set(doc) - set(_TOPOLOGY_KEYS))
    if unknown:
        raise RunFormatError(f"{path}: unknown field {unknown[0]!r}")
    for key in _TOPOLOGY_KEYS[:-1]:
        v = doc.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise RunFormatError(f"{path}: field {key!r} must be an integer >= 0, got {v!r}")
    p, d = doc.get("prefill", 0) or 0, doc.get("decode", 0) or 0
    if bool(p) != bool(d):
        raise RunFormatError(f"{path}: give both 'prefill' and 'decode' (> 0), or neither")
    tp_p = doc.get("tp_prefill", 1) or 1
    return Topology(colocated=0 if p else (doc.get("colocated", 1) or 1), prefill=p, decode=d, tp_prefill=tp_p,
                    tp_decode=doc.get("tp_decode", tp_p) or tp_p,
                    connector=doc.get("connector", "nixl" if p else None))


def topology_from_names(path: Path, tag: str | None = None) -> Topology:
    """The deployment as the study's folder and file names (and the result's ``tag``) state it."""
    side = path.parent / "topology.yaml"
    if side.is_file():
        return _topology_file(side)
    text = f"{path.parent.name}/{path.stem}/{tag or ''}".lower()
    connector = "lmcache" if "lmcache" in text else "nixl"
    for pattern in _PD_PATTERNS:
        m = pattern.search(text)
        if m:
            p, tp_p, d, tp_d = map(int, m.groups())
            return Topology(colocated=0, prefill=p, decode=d, tp_prefill=tp_p, tp_decode=tp_d, connector=connector)
    m = _PD_TP1.search(text)
    if m:
        p, d = map(int, m.groups())
        return Topology(colocated=0, prefill=p, decode=d, connector=connector)
    for m in re.finditer(r"(\d+)xtp(\d+)", text):
        k, tp = map(int, m.groups())
        return Topology(colocated=k, tp_prefill=tp, tp_decode=tp, connector="lmcache" if "lmcache" in text else None)
    tp = re.search(r"(?<![0-9a-z])tp(\d+)", text)
    t = int(tp.group(1)) if tp else 1
    return Topology(colocated=1, tp_prefill=t, tp_decode=t, connector="lmcache" if "lmcache" in text else None)


def _lengths(doc: dict[str, Any], key: str, total_key: str, n: int, path: Path) -> np.ndarray:
    if isinstance(doc.get(key), list) and len(doc[key]) == n:
        arr = np.asarray(doc[key], dtype=float)
    else:
        total = _num(doc, total_key, path)
        arr = np.full(n, total / n)
    arr = np.maximum(np.rint(arr), 1).astype(np.int64)
    return arr


def load_bench_result(path: str | Path) -> TraceRun:
    """Read one ``vllm bench serve`` result file; :class:`RunFormatError` names the file and field."""
    path = Path(path)
    doc = read_mapping(path, "a vllm bench serve result")
    n = int(_num(doc, "num_prompts", path))
    completed = int(_num(doc, "completed", path))
    if n < 1 or not 0 <= completed <= n:
        raise RunFormatError(f"{path}: fields 'num_prompts' ({n}) and 'completed' ({completed}) disagree")
    if completed < 1:
        raise RunFormatError(f"{path}: field 'completed' is 0; nothing to compare")
    rate = _num(doc, "request_rate", path)
    if rate is not None and rate >= 1e8:   # vllm writes inf as a huge number in some versions
        rate = math.inf
    conc = _num(doc, "max_concurrency", path, optional=True)
    concurrency = int(conc) if conc is not None else None
    if not (rate is not None and rate > 0):
        raise RunFormatError(f"{path}: field 'request_rate' must be > 0, got {rate!r}")
    if not math.isfinite(rate) and concurrency is None:
        raise RunFormatError(f"{path}: an unlimited request_rate needs field 'max_concurrency' (closed loop)")
    burst = _num(doc, "burstiness", path, optional=True) or 1.0
    inputs = _lengths(doc, "input_lens", "total_input_tokens", n, path)
    outputs = _lengths(doc, "output_lens", "total_output_tokens", n, path)
    tag = doc.get("tag") if isinstance(doc.get("tag"), str) else None
    topo = topology_from_names(path, tag)
    if topo.connector == "lmcache":
        raise UnsupportedRun(f"{path}: an LMCache KV offload run; the emulator models vLLM's own KV cache only")
    if topo.disaggregated and re.search(r"(?<![0-9a-z])tcp(?![0-9a-z])", f"{path.parent.name}/{path.stem}".lower()):
        raise UnsupportedRun(f"{path}: KV moved over TCP; the emulator's KV link is RDMA (NIXL over UCX/EFA)")
    model = doc.get("model_id")
    if not isinstance(model, str):
        raise RunFormatError(f"{path}: missing field 'model_id'")
    text = f"{path.parent.name}/{path.stem}".lower()
    shared = "decode-only" in text
    per_request = all(isinstance(doc.get(k), list) and len(doc[k]) == n for k in ("start_times", "ttfts", "itls"))
    arrivals = None
    if per_request:
        errors = doc.get("errors") if isinstance(doc.get("errors"), list) else [""] * n
        ok = np.array([not e for e in errors], dtype=bool)
        starts = np.asarray(doc["start_times"], dtype=float)
        ttft = np.asarray(doc["ttfts"], dtype=float)
        e2e = ttft + np.array([float(np.sum(x)) if isinstance(x, list) else 0.0 for x in doc["itls"]])
        order = np.argsort(starts, kind="stable")
        starts, ttft, e2e, ok, inputs, outputs = (a[order] for a in (starts, ttft, e2e, ok, inputs, outputs))
        arrivals = starts - starts.min()
        stage = measured_stage(arrivals[ok], ttft[ok], e2e[ok], outputs[ok], sent=n, rate=rate,
                               concurrency=concurrency)
    else:
        ttft_s = _num(doc, "mean_ttft_ms", path) * 1e-3
        tpot_s = _num(doc, "mean_tpot_ms", path) * 1e-3
        e2e_ms = _num(doc, "mean_e2el_ms", path, optional=True)
        e2e_s = e2e_ms * 1e-3 if e2e_ms is not None else ttft_s + tpot_s * float(np.mean(outputs - 1))
        duration = _num(doc, "duration", path)
        thr = _num(doc, "request_throughput", path, optional=True)
        peak = _num(doc, "max_concurrent_requests", path, optional=True)
        throttled = math.isfinite(rate) and concurrency is not None and peak is not None and peak >= concurrency
        stage = TraceStage(
            index=0, rate=rate if math.isfinite(rate) else completed / duration, concurrency=concurrency,
            duration_s=duration, sent=n, finished=completed, ttft_mean=ttft_s, tpot_mean=tpot_s, e2e_mean=e2e_s,
            throughput_rps=thr if thr is not None else completed / duration,
            saturated=completed < n or ttft_s > BENCH_SATURATED_TTFT_S or throttled)
    tp = topo.tp_prefill
    gpu = "H200" if "h200" in text else None
    return TraceRun(name=f"{path.parent.name}/{path.stem}", path=path, kind="bench-serve", model=model,
                    tensor_parallelism=tp, gpu=gpu, max_num_batched_tokens=None, max_num_seqs=None,
                    num_gpu_blocks=None, topology=topo, input_tokens=inputs, output_tokens=outputs,
                    arrivals=arrivals, rate=None if arrivals is not None else rate,
                    concurrency=None if arrivals is not None else concurrency, api_server=True,
                    shared_prompt=shared, stage=stage, seed=int(doc.get("seed", 0) or 0), burstiness=burst)


def is_bench_result(path: Path) -> bool:
    return path.is_file() and path.suffix == ".json"


def bench_results_in(folder: Path) -> list[Path]:
    """The result files of a folder of load points (``conc16.json``, ``rr4.json``, ...), sorted."""
    return sorted((p for p in folder.glob("*.json") if p.is_file()),
                  key=lambda p: (len(p.stem), p.stem))


__all__ = ["bench_results_in", "is_bench_result", "load_bench_result", "topology_from_names"]
