"""Published latency anchors the fit report checks (listed with their sources in docs/latency_model.md).

Each anchor is a measured or derived time for one batch shape, with its source and tag:
``measured`` (read from a public data file or document), ``derived`` (computed by hand from measured
kernel tables: eager kernels, older vLLM, so context rather than truth). ``target`` marks measured
anchors of this preset's own hardware and software; the others are reported for context, with the
expected direction stated in the description.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

CAL = "derived by hand from Vidur / LLMServingSim kernel tables (docs/latency_model.md, Anchors)"
BUILDKITE = "vLLM buildkite perf benchmark build 9515 (H200), latency test input 32 / output 128 / batch 8"
MOONCAKE = "Mooncake docs vllm-v1-pd-performance.md (vLLM 0.11.2, MooncakeConnector, 8x CX-7 RoCE, Qwen3-8B TP8)"

_ANCHORS: list[dict[str, Any]] = [
    dict(preset="h100-llama3.1-8b-tp1", id="h100-8b-prefill2048", kind="prefill_iteration",
         args=dict(tokens=2048), low_ms=45.0, high_ms=62.0, source=CAL, tag="derived", target=False,
         description="prefill of 2048 tokens, one iteration (vidur x1.08 .. LLMServingSim)"),
    dict(preset="h100-llama3.1-8b-tp1", id="h100-8b-decode-bs1", kind="decode",
         args=dict(batch=1, context=1024), low_ms=6.0, high_ms=8.0, source=CAL, tag="derived", target=False,
         description="decode step, batch 1 (4.8 ms weight-read floor)"),
    dict(preset="h100-llama3.1-8b-tp1", id="h100-8b-decode-bs64", kind="decode",
         args=dict(batch=64, context=1024), low_ms=10.0, high_ms=13.0, source=CAL, tag="derived", target=False,
         description="decode step, batch 64 at 1k context"),
    dict(preset="a100-llama3-8b-tp1", id="a100-8b-prefill2048", kind="prefill_iteration",
         args=dict(tokens=2048), low_ms=160.0, high_ms=165.0, source=CAL, tag="derived", target=False,
         description="prefill of 2048 tokens, one iteration"),
    dict(preset="a100-llama3-8b-tp1", id="a100-8b-decode-bs1", kind="decode",
         args=dict(batch=1, context=1024), measured_ms=10.0, source=CAL, tag="derived", target=False,
         description="decode step, batch 1 (about 10 ms)"),
    dict(preset="a100-llama3-8b-tp1", id="a100-8b-decode-bs64", kind="decode",
         args=dict(batch=64, context=1344), measured_ms=18.5, source=CAL, tag="derived", target=False,
         description="decode step, batch 64 at 1344 context (measured token-op + attention rows)"),
    dict(preset="h100-llama3.1-8b-tp1", id="h200-buildkite-8b", kind="decode",
         args=dict(batch=8, context=96), measured_ms=6.5, source=BUILDKITE, tag="measured", target=False,
         description="H200 step time (833 ms / 128); an H100 (30% less HBM bandwidth) should be slower"),
    dict(preset="h100-llama3.1-70b-tp4", id="h200-buildkite-70b", kind="decode",
         args=dict(batch=8, context=96), measured_ms=16.0, source=BUILDKITE, tag="measured", target=False,
         description="H200 step time, Llama-3-70B TP4 (2078 ms / 128); H100 should be slower"),
    dict(preset="h100-llama3.1-70b-tp4", id="mooncake-kv-2048", kind="kv_transfer",
         args=dict(bytes=290e6, nics=8), measured_ms=2.51, source=MOONCAKE, tag="measured", target=True,
         description="KV transfer of 290 MB over 8 NICs (per-NIC rate of this preset x 8)"),
    dict(preset="h100-llama3.1-70b-tp4", id="mooncake-kv-8192", kind="kv_transfer",
         args=dict(bytes=1.13e9, nics=8), measured_ms=8.84, source=MOONCAKE, tag="measured", target=True,
         description="KV transfer of 1.13 GB over 8 NICs"),
    dict(preset="h100-llama3.1-70b-tp4", id="mooncake-kv-32768", kind="kv_transfer",
         args=dict(bytes=4.5e9, nics=8), measured_ms=31.65, source=MOONCAKE, tag="measured", target=True,
         description="KV transfer of 4.5 GB over 8 NICs"),
    dict(preset="h100-llama3.1-8b-tp1", id="mooncake-ttft-shape-8192", kind="prefill_growth",
         args=dict(tokens=8192, base=2048, floor=128), measured_ms=(212.0 - 46.0) / (85.3 - 46.0),
         source=MOONCAKE, tag="derived", target=False,
         description="TTFT growth (T(8192)-T(128))/(T(2048)-T(128)), a ratio (Qwen3-8B TP8 on H800)"),
    dict(preset="h100-llama3.1-8b-tp1", id="mooncake-ttft-shape-32768", kind="prefill_growth",
         args=dict(tokens=32768, base=2048, floor=128), measured_ms=(750.0 - 46.0) / (85.3 - 46.0),
         source=MOONCAKE, tag="derived", target=False,
         description="TTFT growth (T(32768)-T(128))/(T(2048)-T(128)), a ratio (Qwen3-8B TP8 on H800)"),
]


@lru_cache(maxsize=1)
def _splitwise() -> tuple[dict[str, Any], ...]:
    text = resources.files("arrow_rl.perf").joinpath("data", "anchors_splitwise.json").read_text()
    out = []
    for a in json.loads(text):
        a = dict(a)
        a["description"] = (f"2023 vLLM (no CUDA graphs) Llama-2-70B TP4 "
                            + ("prompt iteration" if a["kind"] == "prefill_iteration" else "decode step")
                            + "; modern vLLM is faster" + ("" if "h100" in a["preset"] else
                                                            "; preset is Llama-3-70B (LM head differs)"))
        out.append(a)
    return tuple(out)


def anchors_for(preset: str) -> list[dict[str, Any]]:
    """All anchors that concern ``preset`` (hand-derived and published anchors, then Splitwise rows)."""
    return [a for a in (*_ANCHORS, *_splitwise()) if a["preset"] == preset]
