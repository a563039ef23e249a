"""Time real prefill and decode iterations of a Llama-architecture model on this host's GPU.

Why: the emulator's latency presets are fitted on published GPU profiles (docs/latency_model.md).
When a GPU is at hand but vLLM is not, this measures what the GPU alone can show, for the preset's
model shape with random bf16 weights built in code (nothing fetched from a model hub):

* prefill: one prompt of L tokens, batch 1, as an eager ``transformers`` forward with SDPA
  attention. GEMM-bound from ~2k tokens, so a fair (slightly slow: unfused) stand-in for a vLLM
  prefill iteration; below ~1k tokens eager launch overhead dominates.
* decode (``--decode``): one decode step of B sequences at context C, written directly in torch
  (fused QKV and gate/up GEMMs, SDPA over a contiguous KV cache, GQA) and replayed from a CUDA graph
  as vLLM does, so launch overhead is gone. GPU time only: vLLM's CPU scheduling overhead is not in it.

Usage (GPU host with torch, and transformers for prefill)::

    python scripts/gpu_latency_check.py --model llama3.1-8b --json prefill.json
    python scripts/gpu_latency_check.py --model llama3.1-8b --decode --json decode.json
    python scripts/gpu_latency_check.py --compare prefill.json --preset h100-llama3.1-8b-tp1   # anywhere

``--compare`` needs only arrow-rl and prints measured vs the preset's prediction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# Model shapes (public architecture hyper-parameters; random weights).
SHAPES = {
    "llama3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, rope_theta=10000.0),
    "llama3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                         num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
}


def shard(model_name: str, tp: int) -> dict:
    """One tensor-parallel rank's share of the model (Megatron split, as vLLM shards it): heads, FFN
    columns and vocabulary divided by ``tp``, hidden size whole. Timing it on one GPU gives a TP
    instance's compute; the all-reduces between ranks are not in it."""
    sh = dict(SHAPES[model_name])
    head_dim = sh["hidden_size"] // sh["num_attention_heads"]
    for key in ("num_attention_heads", "intermediate_size", "vocab_size"):
        if sh[key] % tp:
            raise SystemExit(f"gpu_latency_check: {key}={sh[key]} of {model_name} does not split over tp={tp}")
        sh[key] //= tp
    sh["num_key_value_heads"] = max(sh["num_key_value_heads"] // tp, 1)
    sh["head_dim"] = head_dim
    return sh


def measure(model_name: str, lengths: list[int], repeats: int, seed: int, tp: int = 1) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if not torch.cuda.is_available():
        raise SystemExit("gpu_latency_check: no CUDA device; run with --compare on a machine without a GPU")
    torch.manual_seed(seed)
    cfg = LlamaConfig(**shard(model_name, tp), max_position_embeddings=max(lengths) + 16, attn_implementation="sdpa",
                      torch_dtype="bfloat16")
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    rows = []
    for n in lengths:
        ids = torch.randint(5, cfg.vocab_size - 1, (1, n), device="cuda")
        times = []
        with torch.inference_mode():
            for k in range(repeats + 2):  # two warm-ups
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                # logits_to_keep=1: vLLM computes logits for the last position only.
                model(input_ids=ids, use_cache=False, logits_to_keep=1)
                end.record()
                torch.cuda.synchronize()
                if k >= 2:
                    times.append(start.elapsed_time(end) / 1e3)
        rows.append({"tokens": n, "median_s": statistics.median(times), "min_s": min(times), "repeats": repeats})
        print(f"prefill {n:>6} tokens: median {rows[-1]['median_s'] * 1e3:8.2f} ms  (min {min(times) * 1e3:.2f})",
              flush=True)
    import transformers
    return {"model": model_name, "tp": tp, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "transformers": transformers.__version__, "dtype": "bfloat16", "attention": "sdpa", "rows": rows}


def measure_decode(model_name: str, shapes: list[tuple[int, int]], repeats: int, seed: int, tp: int = 1) -> dict:
    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        raise SystemExit("gpu_latency_check: no CUDA device; run with --compare on a machine without a GPU")
    sh = shard(model_name, tp)
    h, ffn, n_layers = sh["hidden_size"], sh["intermediate_size"], sh["num_hidden_layers"]
    nq, nkv = sh["num_attention_heads"], sh["num_key_value_heads"]
    hd = sh["head_dim"]
    gen = torch.Generator(device="cuda").manual_seed(seed)
    dev, dt = "cuda", torch.bfloat16

    def w(*shape: int) -> "torch.Tensor":
        return (torch.randn(*shape, generator=gen, device=dev, dtype=dt) * 0.02)

    layers = [dict(qkv=w((nq + 2 * nkv) * hd, h), o=w(h, nq * hd), gu=w(2 * ffn, h), d=w(h, ffn),
                   n1=torch.ones(h, device=dev, dtype=dt), n2=torch.ones(h, device=dev, dtype=dt))
              for _ in range(n_layers)]
    lm_head, final_norm = w(sh["vocab_size"], h), torch.ones(h, device=dev, dtype=dt)

    def rms(x: "torch.Tensor", g: "torch.Tensor") -> "torch.Tensor":
        return F.rms_norm(x, (h,), g, 1e-5)

    rows = []
    for bs, ctx in shapes:
        cache = [torch.randn(2, bs, nkv, ctx, hd, generator=gen, device=dev, dtype=dt) for _ in range(n_layers)]
        x0 = torch.randn(bs, 1, h, generator=gen, device=dev, dtype=dt)

        def step() -> "torch.Tensor":
            x = x0
            for lw, kv in zip(layers, cache):
                qkv = rms(x, lw["n1"]) @ lw["qkv"].t()
                q, k, v = qkv.split([nq * hd, nkv * hd, nkv * hd], dim=-1)
                q = q.view(bs, 1, nq, hd).transpose(1, 2)
                kv[0][:, :, ctx - 1] = k.view(bs, nkv, hd)  # this step's K/V into the cache
                kv[1][:, :, ctx - 1] = v.view(bs, nkv, hd)
                a = F.scaled_dot_product_attention(q, kv[0], kv[1], enable_gqa=True)
                x = x + a.transpose(1, 2).reshape(bs, 1, nq * hd) @ lw["o"].t()
                g, u = (rms(x, lw["n2"]) @ lw["gu"].t()).chunk(2, dim=-1)
                x = x + (F.silu(g) * u) @ lw["d"].t()
            return rms(x, final_norm) @ lm_head.t()

        with torch.inference_mode():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            times = []
            for k in range(repeats + 3):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                graph.replay()
                end.record()
                torch.cuda.synchronize()
                if k >= 3:
                    times.append(start.elapsed_time(end) / 1e3)
        rows.append({"batch": bs, "context": ctx, "median_s": statistics.median(times), "min_s": min(times),
                     "repeats": repeats})
        print(f"decode batch {bs:>4} context {ctx:>6}: median {rows[-1]['median_s'] * 1e3:8.3f} ms", flush=True)
        cache = graph = None  # free this shape's KV cache before the next one
        torch.cuda.empty_cache()
    return {"model": model_name, "tp": tp, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "dtype": "bfloat16", "kind": "decode", "attention": "sdpa (contiguous KV, GQA), CUDA graph", "rows": rows}


def compare(path: Path, preset: str) -> None:
    from arrow_rl.perf.presets import get_preset

    data = json.loads(path.read_text(encoding="utf-8"))
    model = get_preset(preset).latency
    tp = int(data.get("tp", 1))
    if tp != model.tp:
        raise SystemExit(f"{path}: measured with tp={tp}, but preset {preset} has tp={model.tp}")
    print(f"{data['model']} (one rank of tp={tp}) on {data['gpu']} (torch {data['torch']}) vs preset {preset}"
          + ("; the preset's all-reduces are left out" if tp > 1 else ""))


    if data.get("kind") == "decode":
        # The measurement is GPU time only: compare with the preset minus its CPU scheduling term.
        print(f"{'batch':>6} {'context':>8} {'measured ms':>12} {'preset GPU ms':>14} {'preset/measured':>16}")
        for r in data["rows"]:
            bs, ctx = r["batch"], r["context"]
            pred = model.iteration_time(0, 0, bs, bs * ctx) - model.cpu_overhead_s(bs) - model.tp_all_reduce_s(bs)
            print(f"{bs:>6} {ctx:>8} {r['median_s'] * 1e3:>12.3f} {pred * 1e3:>14.3f} {pred / r['median_s']:>16.2f}")
        return
    print(f"{'tokens':>7} {'measured ms':>12} {'preset ms':>10} {'preset/measured':>16}")
    for r in data["rows"]:
        n = r["tokens"]
        pred = model.iteration_time(n, n * n / 2.0, 0, 0) - model.tp_all_reduce_s(n)
        print(f"{n:>7} {r['median_s'] * 1e3:>12.2f} {pred * 1e3:>10.2f} {pred / r['median_s']:>16.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(SHAPES), default="llama3.1-8b")
    ap.add_argument("--tp", type=int, default=1, help="time one rank of a tensor-parallel instance (no all-reduce)")
    ap.add_argument("--lengths", default="128,512,1024,2048,4096,8192", help="comma-separated prompt lengths")
    ap.add_argument("--decode", action="store_true", help="time decode steps (CUDA graph) instead of prefill")
    ap.add_argument("--decode-shapes", default="1x1024,8x1024,32x1024,64x1024,128x1024,64x4096",
                    help="comma-separated BATCHxCONTEXT pairs for --decode")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the measurements here")
    ap.add_argument("--compare", type=Path, help="a JSON written by --json: print it against --preset")
    ap.add_argument("--preset", default="h100-llama3.1-8b-tp1")
    a = ap.parse_args(argv)
    if a.compare:
        compare(a.compare, a.preset)
        return 0
    if a.decode:
        try:
            shapes = [tuple(int(v) for v in x.lower().split("x")) for x in a.decode_shapes.split(",") if x.strip()]
            assert all(len(t) == 2 and min(t) > 0 for t in shapes)
        except (ValueError, AssertionError):
            ap.error(f"--decode-shapes must look like 1x1024,64x1024; got {a.decode_shapes!r}")
        out = measure_decode(a.model, shapes, a.repeats, a.seed, a.tp)  # type: ignore[arg-type]
    else:
        try:
            lengths = [int(x) for x in a.lengths.split(",") if x.strip()]
        except ValueError:
            ap.error(f"--lengths must be comma-separated integers, got {a.lengths!r}")
        out = measure(a.model, lengths, a.repeats, a.seed, a.tp)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
