"""Time real prefill forward passes of a Llama-architecture model on this host's GPU.

Why: the emulator's latency presets are fitted on published GPU profiles (docs/latency_model.md).
When a GPU is at hand but vLLM is not, this measures what the GPU alone can show: the time of one
prefill iteration (one prompt of L tokens, batch 1) for the preset's model shape, with random
weights built from a config in code (nothing fetched from a model hub). Prefill at these lengths is
GEMM-bound, so an eager ``transformers`` forward with SDPA attention is a fair check of a vLLM
prefill iteration; decode steps are not measured (eager per-kernel launch overhead would dominate
them, unlike vLLM's CUDA graphs).

Usage (GPU host with torch and transformers)::

    python scripts/gpu_prefill_check.py --model llama3.1-8b --json prefill.json
    python scripts/gpu_prefill_check.py --compare prefill.json --preset h100-llama3.1-8b-tp1   # anywhere

The second form needs only arrow-rl and prints measured vs the preset's prediction.
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
}


def measure(model_name: str, lengths: list[int], repeats: int, seed: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if not torch.cuda.is_available():
        raise SystemExit("gpu_prefill_check: no CUDA device; run with --compare on a machine without a GPU")
    torch.manual_seed(seed)
    cfg = LlamaConfig(**SHAPES[model_name], max_position_embeddings=max(lengths) + 16, attn_implementation="sdpa",
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
    return {"model": model_name, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "transformers": transformers.__version__, "dtype": "bfloat16", "attention": "sdpa", "rows": rows}


def compare(path: Path, preset: str) -> None:
    from arrow_rl.perf.presets import get_preset

    data = json.loads(path.read_text(encoding="utf-8"))
    model = get_preset(preset).latency
    print(f"{data['model']} on {data['gpu']} (torch {data['torch']}) vs preset {preset}")
    print(f"{'tokens':>7} {'measured ms':>12} {'preset ms':>10} {'preset/measured':>16}")
    for r in data["rows"]:
        n = r["tokens"]
        pred = model.iteration_time(n, n * n / 2.0, 0, 0)
        print(f"{n:>7} {r['median_s'] * 1e3:>12.2f} {pred * 1e3:>10.2f} {pred / r['median_s']:>16.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(SHAPES), default="llama3.1-8b")
    ap.add_argument("--lengths", default="128,512,1024,2048,4096,8192", help="comma-separated prompt lengths")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the measurements here")
    ap.add_argument("--compare", type=Path, help="a JSON written by --json: print it against --preset")
    ap.add_argument("--preset", default="h100-llama3.1-8b-tp1")
    a = ap.parse_args(argv)
    if a.compare:
        compare(a.compare, a.preset)
        return 0
    try:
        lengths = [int(x) for x in a.lengths.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--lengths must be comma-separated integers, got {a.lengths!r}")
    out = measure(a.model, lengths, a.repeats, a.seed)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
