#!/usr/bin/env python
"""Regenerate ``arrow_rl/perf/data/*.json`` and the shipped profile rows from the raw GPU profiles.

Developer tool: it reads the public profiles collected under a data directory (Vidur, LLMServingSim,
Splitwise; see ``arrow_rl/perf/data/README.md`` for sources and licences) and writes, per preset,

* ``<preset>.json``: model shape, a compact monotone piecewise-linear table of the token-level ops
  (all layers, ms vs tokens in the batch), a compact all-reduce table (ms vs bytes), the fitted
  attention / LM-head constants and the CPU-overhead constants;
* ``profile_rows/<preset>.csv``: the measured rows the fit report compares against (component,
  x1, x2, measured_ms, source).

Usage: ``python scripts/fit_latency_model.py DATA_DIR [--out arrow_rl/perf/data]``, where ``DATA_DIR`` holds
the downloaded public profiles (their sources and layout are listed in ``arrow_rl/perf/data/README.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

TOKEN_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
             "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")

# Model shapes from the HF configs (bf16).
MODELS = {
    "llama2-7b": dict(layers=32, hidden=4096, n_q_heads=32, n_kv_heads=32, head_dim=128, ffn=11008,
                      vocab=32000, params=6.738e9, max_model_len=4096),
    "llama2-70b": dict(layers=80, hidden=8192, n_q_heads=64, n_kv_heads=8, head_dim=128, ffn=28672,
                       vocab=32000, params=68.977e9, max_model_len=4096),
    "llama3-8b": dict(layers=32, hidden=4096, n_q_heads=32, n_kv_heads=8, head_dim=128, ffn=14336,
                      vocab=128256, params=8.030e9, max_model_len=8192),
    "llama3-70b": dict(layers=80, hidden=8192, n_q_heads=64, n_kv_heads=8, head_dim=128, ffn=28672,
                       vocab=128256, params=70.554e9, max_model_len=8192),
}
# CodeLlama-34B and Mixtral-8x7B: the HF configs of the real H100 runs the engine model is fitted on.
MODELS["codellama-34b"] = dict(layers=48, hidden=8192, n_q_heads=64, n_kv_heads=8, head_dim=128, ffn=22016,
                               vocab=32000, params=33.744e9, max_model_len=16384)
MODELS["mixtral-8x7b"] = dict(layers=32, hidden=4096, n_q_heads=32, n_kv_heads=8, head_dim=128, ffn=14336,
                              vocab=32000, params=46.703e9, max_model_len=32768,
                              moe=dict(experts=8, experts_per_token=2))
MODELS["llama3.1-8b"] = dict(MODELS["llama3-8b"], max_model_len=131072)
MODELS["llama3.1-70b"] = dict(MODELS["llama3-70b"], max_model_len=131072)

# Device facts. memory = what nvidia-smi / torch report as total for the 80 GB parts.
GPUS = {
    "h100": dict(name="H100-80GB-SXM", memory_bytes=81559 * 2**20, hbm_Bps=3.35e12, flops=989.4e12,
                 nic_Bps=50e9),
    "a100": dict(name="A100-80GB-SXM", memory_bytes=81920 * 2**20, hbm_Bps=2.039e12, flops=312e12,
                 nic_Bps=25e9),
}

# Which measured table gives each preset's token-level ops (see README: Vidur has no H100 Llama-3).
PRESETS = {
    "h100-llama2-7b-tp1": dict(gpu="h100", model="llama2-7b", tp=1,
                               mlp=("h100", "Llama-2-7b-hf", 1.0)),
    "h100-llama2-70b-tp4": dict(gpu="h100", model="llama2-70b", tp=4,
                                mlp=("h100", "Llama-2-70b-hf", 1.0)),
    # Llama-3.1-8B has 218M params/layer vs 202M for Llama-2-7B (same hidden size): x1.08,
    # cross-checked against the LLMServingSim H100 Llama-3.1-8B table in the report.
    "h100-llama3.1-8b-tp1": dict(gpu="h100", model="llama3.1-8b", tp=1,
                                 mlp=("h100", "Llama-2-7b-hf", 218.1 / 202.4)),
    # Llama-3-70B's layers are shape-identical to Llama-2-70B's (vocab differs: LM head only).
    "h100-llama3.1-70b-tp4": dict(gpu="h100", model="llama3.1-70b", tp=4,
                                  mlp=("h100", "Llama-2-70b-hf", 1.0)),
    # Vidur profiles CodeLlama-34B on H100 (token ops, comparison only); Mixtral has no such table.
    "h100-codellama-34b-tp2": dict(gpu="h100", model="codellama-34b", tp=2,
                                   mlp=("h100", "codellama/CodeLlama-34b-Instruct-hf", 1.0)),
    "h100-mixtral-8x7b-tp2": dict(gpu="h100", model="mixtral-8x7b", tp=2, mlp=None),
    "a100-llama3-8b-tp1": dict(gpu="a100", model="llama3-8b", tp=1,
                               mlp=("a100", "Meta-Llama-3-8B", 1.0)),
    "a100-llama3-70b-tp4": dict(gpu="a100", model="llama3-70b", tp=4,
                                mlp=("a100", "Meta-Llama-3-70B", 1.0)),
}

# Knots of the compact token-op table (tokens in the batch).
KNOTS = sorted({1, 2, 4, 8, 16, 24} | set(range(32, 1025, 32)) | set(range(1088, 4097, 64))
               | set(range(5120, 32769, 1024)))
AR_KNOTS_BYTES = [2**k for k in range(11, 27)]  # 2 KiB .. 64 MiB

# CPU/engine overhead per iteration (vLLM V1 overlaps most scheduling with the GPU; the legacy
# Vidur cpu_overheads.csv, 1.2-6.2 ms, is for old vLLM without CUDA graphs). Chosen, not fitted:
KV_NIC_Bps = {"h100": 17.5e9, "a100": 8.75e9}
KV_TRANSFER_LATENCY_S = 0.5e-3
CPU_BASE_MS = 0.9
CPU_PER_SEQ_MS = 0.01
# Vidur adds 0.02 ms NCCL launch per all-reduce; vLLM V1 captures decode (and piecewise mixed) steps
# in CUDA graphs, so no host launch cost is added on top of the measured collective time.
NCCL_LAUNCH_MS = 0.0
# vLLM's custom all-reduce (NVLink P2P, used for messages <= 8 MiB) has no table here: roofline with
# stated efficiency: 8 us sync latency + (TP-1)/TP x bytes over NVLink at 50% of one-way peak.
NVLINK_ONE_WAY_Bps = {"h100": 450e9, "a100": 300e9}
CUSTOM_AR = dict(max_bytes=8 * 2**20, latency_ms=0.008, efficiency=0.5)


def isotonic(y: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing sequence closest to ``y`` in least squares."""
    vals: list[float] = []
    wts: list[int] = []
    for v in y:
        vals.append(float(v))
        wts.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w = wts[-2] + wts[-1]
            v2 = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            vals[-2:] = [v2]
            wts[-2:] = [w]
    out = []
    for v, w in zip(vals, wts):
        out.extend([v] * w)
    return np.asarray(out)


def read_mlp(data: Path, dev: str, model_dir: str, tp: int) -> dict[int, float]:
    org = "" if "/" in model_dir else "meta-llama"
    path = data / "vidur_profiling" / "compute" / dev / org / model_dir / "mlp.csv"
    out: dict[int, float] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if int(row["num_tensor_parallel_workers"]) != tp:
                continue
            out[int(row["num_tokens"])] = sum(float(row[f"time_stats.{op}.median"]) for op in TOKEN_OPS)
    return out


def read_all_reduce(data: Path, node: str, workers: int) -> dict[int, float]:
    path = data / "vidur_profiling" / "network" / node / "all_reduce.csv"
    groups: dict[int, list[float]] = defaultdict(list)
    with path.open() as f:
        for row in csv.DictReader(f):
            if int(row["num_workers"]) == workers and int(row["devices_per_node"]) == workers:
                groups[int(row["size"])].append(float(row["time_stats.all_reduce.median"]))
    return {s: float(np.median(v)) for s, v in sorted(groups.items())}


def read_llmservingsim(data: Path, model: str, tp: int) -> dict[str, dict[int, float]]:
    path = (data / "llmservingsim_profiling" / "perf_models" / "H100" / "meta-llama" / model
            / f"tp{tp}" / "layers.csv")
    out: dict[str, dict[int, float]] = defaultdict(dict)
    with path.open() as f:
        for row in csv.DictReader(f):
            out[row["layer_name"]][int(row["input"])] = float(row["latency(ns)"]) / 1e6
    return out


def lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative relative least squares y ≈ x @ beta (weights 1/y, so small rows count too)."""
    from scipy.optimize import nnls

    w = 1.0 / y
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    beta, _ = nnls((x / scale) * w[:, None], y * w)
    return beta / scale


def fit_attention_a100(data: Path, preset_model: str, tp: int, rows_out: list) -> dict:
    """Fit per-GPU decode bandwidth and prefill FLOP rate on the A100 attention profiles.

    Llama-3-8B: the hand-transcribed sample of Vidur's attention.csv (exact model).
    Llama-3-70B: the legacy Llama-2-70B TP2 profile (same head_dim/GQA; constants are per GPU, so
    they transfer across TP).
    """
    dec, pre = [], []  # (batch, kv, kv_heads_gpu, ms) ; (chunk, kv, q_heads_gpu, ms)
    if preset_model == "llama3-8b":
        path = data / "vidur_profiling" / "extracts" / "a100_Meta-Llama-3-8B_attention_sampled.csv"
        with path.open() as f:
            for r in csv.DictReader(f):
                t = int(r["num_tensor_parallel_workers"])
                ms = float(r["attn_median_ms"])
                if r["is_prefill"] == "True":
                    pre.append((int(r["prefill_chunk_size"]), int(r["kv_cache_size"]), 32 // t, ms))
                else:
                    dec.append((int(r["batch_size"]), int(r["kv_cache_size"]), 8 // t, ms))
        src = "vidur:extracts/a100_Meta-Llama-3-8B_attention_sampled.csv"
    else:
        path = data / "vidur_profiling" / "legacy_e2d00e9" / "a100" / "attention.csv"
        with path.open() as f:
            for r in csv.DictReader(f):
                if r["is_prefill"] == "True":
                    ms = r["time_stats.attn_prefill.median"]
                    if ms:
                        pre.append((int(r["prefill_chunk_size"]), int(r["kv_cache_size"]), 32, float(ms)))
                else:
                    ms = r["time_stats.attn_decode.median"]
                    if ms:
                        dec.append((int(r["batch_size"]), int(r["kv_cache_size"]), 4, float(ms)))
        src = "vidur:legacy_e2d00e9/a100/attention.csv (Llama-2-70B TP2)"
    head_dim = 128
    d = np.asarray(dec, dtype=float)
    kv_bytes = d[:, 0] * d[:, 1] * 2 * d[:, 2] * head_dim * 2  # K+V, bf16, this layer, this GPU
    beta = lstsq(np.column_stack([np.ones(len(d)), d[:, 0] * d[:, 2], kv_bytes]), d[:, 3])
    a_d, b_d, bw = float(beta[0]), float(beta[1]), 1e3 / float(beta[2])
    p = np.asarray(pre, dtype=float)
    flops = 4 * head_dim * p[:, 2] * p[:, 0] * (p[:, 1] + p[:, 0] / 2)
    beta = lstsq(np.column_stack([np.ones(len(p)), p[:, 0] * p[:, 2], flops]), p[:, 3])
    a_p, b_p, fl = float(beta[0]), float(beta[1]), 1e3 / float(beta[2])
    rng = np.random.default_rng(0)
    for arr, kind in ((d, "attn_decode"), (p, "attn_prefill")):
        idx = np.arange(len(arr)) if len(arr) <= 300 else np.sort(rng.choice(len(arr), 300, replace=False))
        for i in idx:
            rows_out.append((kind, int(arr[i, 0]), int(arr[i, 1]), int(arr[i, 2]), round(float(arr[i, 3]), 5), src))
    return dict(decode_base_ms=a_d, decode_seq_head_ms=b_d, decode_bw_Bps=bw, prefill_base_ms=a_p,
                prefill_token_head_ms=b_p, prefill_flops=fl, source=src)


def fit_attention_h100(data: Path, rows_out: list, model_key: str, tp: int) -> dict:
    """H100: prefill FLOP rate fitted on LLMServingSim causal-attention rows (kv=0); decode is a
    memory-bound roofline at 0.8 x HBM (no trustworthy H100 decode-attention table exists)."""
    pre = []
    for model, tps in (("Llama-3.1-8B", (1, 2)), ("Llama-3.1-70B", (1, 2, 4))):
        q = 32 if "8B" in model else 64
        for t in tps:
            tab = read_llmservingsim(data, model, t)["attn"]
            for n, ms in tab.items():
                pre.append((n, 0, q // t, ms, f"llmservingsim:{model}/tp{t}"))
    # Fit on the rows of this preset's own shape (q heads per GPU) when the table has them.
    q_gpu = MODELS[model_key]["n_q_heads"] // tp
    mine = [r for r in pre if r[2] == q_gpu] or pre
    p = np.asarray([r[:4] for r in mine], dtype=float)
    flops = 4 * 128 * p[:, 2] * p[:, 0] * (p[:, 1] + p[:, 0] / 2)
    beta = lstsq(np.column_stack([np.ones(len(p)), p[:, 0] * p[:, 2], flops]), p[:, 3])
    a_p, b_p, fl = float(beta[0]), float(beta[1]), 1e3 / float(beta[2])
    for r in mine[::16]:
        rows_out.append(("attn_prefill", r[0], r[1], r[2], round(r[3], 5), r[4]))
    return dict(decode_base_ms=0.02, decode_seq_head_ms=0.0, decode_bw_Bps=0.8 * GPUS["h100"]["hbm_Bps"],
                prefill_base_ms=a_p, prefill_token_head_ms=b_p, prefill_flops=fl,
                source="prefill: llmservingsim attn rows (HF SDPA); decode: roofline 0.8 x 3.35 TB/s, 0.02 ms/layer")


def fit_lm_head(data: Path) -> dict:
    """LM head on H100 from LLMServingSim rows: max(weight bytes / BW, 2·n·hidden·vocab / F)."""
    xs, ys = [], []
    for model, tps, hidden in (("Llama-3.1-8B", (1, 2), 4096), ("Llama-3.1-70B", (1, 2, 4), 8192)):
        for t in tps:
            for n, ms in read_llmservingsim(data, model, t)["lm_head"].items():
                xs.append((n, hidden, t))
                ys.append(ms)
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys)
    wbytes = x[:, 1] * 128256 * 2 / x[:, 2]
    small = x[:, 0] <= 16
    bw = float(np.median(wbytes[small] / (y[small] * 1e-3)))
    large = x[:, 0] >= 1024
    fl = float(np.median(2 * x[large, 0] * x[large, 1] * 128256 / x[large, 2] / (y[large] * 1e-3)))
    return dict(bw_Bps=bw, flops=fl)


def compact_table(table: dict[int, float], scale: float, knots: list[int]) -> tuple[list[int], list[float]]:
    ns = np.asarray(sorted(table))
    ys = isotonic(np.asarray([table[n] for n in ns]) * scale)
    keep = [k for k in knots if k <= ns[-1]]
    vals = np.interp(keep, ns, ys)
    if keep[-1] != ns[-1]:
        keep.append(int(ns[-1]))
        vals = np.append(vals, ys[-1])
    return [int(k) for k in keep], [round(float(v), 5) for v in vals]


def build(data: Path, out: Path) -> None:
    (out / "profile_rows").mkdir(parents=True, exist_ok=True)
    lm = fit_lm_head(data)
    for name, spec in PRESETS.items():
        gpu = GPUS[spec["gpu"]]
        m = MODELS[spec["model"]]
        tp = spec["tp"]
        rows: list[tuple] = []
        token_ops = None
        if spec["mlp"] is not None:  # a measured kernel table: kept for comparison (perf-report)
            dev, mdir, scale = spec["mlp"]
            raw = read_mlp(data, dev, mdir, tp)
            per_model = {n: v * m["layers"] for n, v in raw.items()}
            kn, kv = compact_table(per_model, scale, KNOTS)
            org = "" if "/" in mdir else "meta-llama/"
            src = f"vidur:compute/{dev}/{org}{mdir}/mlp.csv tp{tp}" + (f" x{scale:.4f}" if scale != 1 else "")
            token_ops = dict(tokens=kn, ms=kv, source=src)
            for n in sorted(per_model):
                rows.append(("token_ops", n, 0, 0, round(per_model[n] * scale, 5), src))
        if name == "h100-llama3.1-8b-tp1":  # cross-check only (HF unfused kernels, not in the fit)
            lss = read_llmservingsim(data, "Llama-3.1-8B", 1)
            ops = [k for k in lss if k not in ("embedding", "attn", "final_layernorm", "lm_head")]
            for n in sorted(lss["q_proj"])[::8]:
                rows.append(("xcheck_token_ops", n, 0, 0, round(sum(lss[o][n] for o in ops) * 32, 5),
                             "llmservingsim:Llama-3.1-8B/tp1 (HF kernels)"))
        if spec["gpu"] == "h100" and spec["model"] in ("codellama-34b", "mixtral-8x7b"):
            attn = None  # no kernel rows of these shapes; the engine model needs none
            lm_bw, lm_fl = lm["bw_Bps"], lm["flops"]
        elif spec["gpu"] == "h100":
            attn = fit_attention_h100(data, rows, spec["model"], tp)
            lm_bw, lm_fl = lm["bw_Bps"], lm["flops"]
            if "3.1" in spec["model"]:
                lss = read_llmservingsim(data, "Llama-3.1-8B" if "8b" in spec["model"] else "Llama-3.1-70B", tp)
                for n in sorted(lss["lm_head"])[::16]:
                    rows.append(("lm_head", n, 0, 0, round(lss["lm_head"][n], 5),
                                 f"llmservingsim:{spec['model']}/tp{tp} lm_head"))
        else:
            attn = fit_attention_a100(data, spec["model"], tp, rows)
            ratio_bw = GPUS["a100"]["hbm_Bps"] / GPUS["h100"]["hbm_Bps"]
            ratio_fl = GPUS["a100"]["flops"] / GPUS["h100"]["flops"]
            lm_bw, lm_fl = lm["bw_Bps"] * ratio_bw, lm["flops"] * ratio_fl
        ar = None
        if tp > 1:
            node = f"{spec['gpu']}_dgx"
            table = read_all_reduce(data, node, tp)
            sizes = np.asarray(sorted(table))
            vals = isotonic(np.asarray([table[s] for s in sizes]))
            ks = [s for s in AR_KNOTS_BYTES if s >= sizes[0]]
            ar = dict(bytes=[int(s) for s in ks], ms=[round(float(v), 5) for v in np.interp(ks, sizes, vals)],
                      source=f"vidur:network/{node}/all_reduce.csv num_workers={tp}")
            ar["custom"] = dict(max_bytes=CUSTOM_AR["max_bytes"], latency_ms=CUSTOM_AR["latency_ms"],
                                bw_Bps=NVLINK_ONE_WAY_Bps[spec["gpu"]] * CUSTOM_AR["efficiency"] * tp / (tp - 1),
                                source="roofline: vLLM custom all-reduce, 8 us + (TP-1)/TP bytes at 0.5 x NVLink one-way")
            for s in sizes[::4]:
                rows.append(("all_reduce", int(s), 0, tp, round(table[s], 5), ar["source"]))
        kv_bytes = 2 * m["layers"] * m["n_kv_heads"] * m["head_dim"] * 2
        # KV transfer between instances (PD disaggregation), one RDMA NIC per GPU. Effective rate per
        # NIC from the Mooncake vLLM-v1 1P1D table (8 x CX-7 400G: 1.13 GB in 8.84 ms, 4.5 GB in
        # 31.65 ms -> ~140 GB/s / 8 = 17.5 GB/s per NIC, ~0.5 ms fixed); A100 DGX NICs are 200G (half).
        kv_bw = tp * KV_NIC_Bps[spec["gpu"]]
        doc = dict(
            name=name, gpu=gpu["name"], model=spec["model"], tp=tp,
            shape={k: m[k] for k in ("layers", "hidden", "n_q_heads", "n_kv_heads", "head_dim", "ffn", "vocab")},
            kv_bytes_per_token=kv_bytes, weight_bytes=int(m["params"] * 2), max_model_len=m["max_model_len"],
            gpu_memory_bytes=gpu["memory_bytes"], activation_reserve_bytes_per_gpu=2 * 2**30,
            kv_transfer_bandwidth_Bps=kv_bw, kv_transfer_latency_s=KV_TRANSFER_LATENCY_S, kv_transfer_nics=tp,
            gpu_specs=dict(hbm_Bps=gpu["hbm_Bps"], bf16_flops=gpu["flops"], source="vendor datasheet (dense bf16)"),
            moe=m.get("moe"),
            token_ops=token_ops,
            all_reduce=ar, nccl_launch_ms=NCCL_LAUNCH_MS if tp > 1 else 0.0,
            attention=attn,
            lm_head=dict(bw_Bps=lm_bw, flops=lm_fl, source="llmservingsim lm_head rows (H100); A100 scaled by peak ratios"),
            cpu=dict(base_ms=CPU_BASE_MS, per_seq_ms=CPU_PER_SEQ_MS,
                     source="chosen: vLLM V1 engine step overhead with CUDA graphs (see docs/latency_model.md)"),
        )
        (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        with (out / "profile_rows" / f"{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["component", "x1", "x2", "x3", "measured_ms", "source"])
            w.writerows(rows)
        print(f"{name}: {len(rows)} rows")


def splitwise_anchors(data: Path) -> list[dict]:
    """Median prompt/token times of Splitwise's measured 2023-vLLM Llama-2-70B runs at TP4."""
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    with (data / "splitwise_perf_model" / "perf_model.csv").open() as f:
        for r in csv.DictReader(f):
            if r["model"] != "llama2-70b" or r["tensor_parallel"] != "4" or r["hardware"] == "h100-80gb-pcap":
                continue
            key = (r["hardware"], int(r["prompt_size"]), int(r["batch_size"]), int(r["token_size"]))
            groups[key].append((float(r["prompt_time"]), float(r["token_time"])))
    out = []
    src = "splitwise-sim data/perf_model.csv (2023 vLLM, no CUDA graphs), median of repeated runs"
    for (hw, p, bs, toks), v in sorted(groups.items()):
        preset = "h100-llama2-70b-tp4" if hw == "h100-80gb" else "a100-llama3-70b-tp4"
        if bs == 1 and toks == 128:
            out.append(dict(preset=preset, id=f"splitwise-{hw}-prompt{p}", kind="prefill_iteration",
                            args=dict(tokens=p), measured_ms=round(float(np.median([x[0] for x in v])), 3),
                            source=src, tag="measured", target=False))
        if p == 512 and toks == 128:
            out.append(dict(preset=preset, id=f"splitwise-{hw}-token-bs{bs}", kind="decode",
                            args=dict(batch=bs, context=p + toks // 2),
                            measured_ms=round(float(np.median([x[1] for x in v])), 3),
                            source=src, tag="measured", target=False))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder holding vidur_profiling/, llmservingsim_profiling/, ...")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "arrow_rl" / "perf" / "data")
    args = ap.parse_args()
    build(args.data, args.out)
    anchors = splitwise_anchors(args.data)
    (args.out / "anchors_splitwise.json").write_text(json.dumps(anchors, indent=1) + "\n")


if __name__ == "__main__":
    main()
