"""Read aiconfigurator's silicon benchmark table: one closed-loop load point per row.

A row (``silicon_sample.csv``) is one fixed-concurrency benchmark of one deployment: ``backend``,
``model_path``, ``system`` (GPU), ``precision``, ``mode`` (``agg``: one instance at ``tp_size``;
``disagg``: ``prefill_num_workers`` × ``prefill_tp_size`` and ``decode_num_workers`` ×
``decode_tp_size``), ``isl``/``osl`` (random prompts, no prefix reuse), the concurrency
(``silicon_concurrency=`` in ``silicon_data_source``, else ``batch_size``; a disaggregated row
without either: ``decode_batch_size`` × ``decode_num_workers``) and one TTFT and one TPOT
(``silicon_ttft_ms``, ``silicon_tpot_ms``; taken as means). Only vLLM rows are read. The table
states no prompt count: the replay sends :data:`PROMPTS_PER_SLOT` × concurrency prompts, as the
published vLLM sweeps do, and its TTFT is a steady-state figure (154 ms for Qwen3-32B TP2 at 8 in
flight, one prefill's time, where 8 simultaneous 1k-token sends would wait ~0.4 s): the first round
of sends, which start together, is left out of the emulated means (``warmup_requests``). A quantized model is named with its precision (``Llama-3.1-70B
[fp8]``) so no bf16 preset matches it by accident.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from arrow_rl.fidelity.runs import RunFormatError
from arrow_rl.fidelity.trace_run import Topology, TraceRun, TraceStage, field_number, read_csv_rows

PROMPTS_PER_SLOT = 5
_GPUS = {"h100_sxm": "H100", "h200_sxm": "H200", "b200_sxm": "B200", "b300_sxm": "B300", "gb200": "GB200",
         "gb300": "GB300"}
_NEED = ("backend", "model_path", "system", "mode", "isl", "osl", "batch_size", "tp_size",
         "silicon_ttft_ms", "silicon_tpot_ms")
# Weights stored narrower than bf16 that a preset models as its native format (gpt-oss: MXFP4).
_NATIVE_QUANT = {"openai/gpt-oss-120b": ("fp4", "nvfp4", "mxfp4")}


def _int(row: dict[str, str], key: str, path: Path, line: int) -> int:
    return int(field_number(row, key, path, line, integer=True))


def _float(row: dict[str, str], key: str, path: Path, line: int) -> float:
    return field_number(row, key, path, line, positive=True)


def _row_run(row: dict[str, str], path: Path, line: int) -> TraceRun:
    isl, osl = _int(row, "isl", path, line), _int(row, "osl", path, line)
    m = re.search(r"silicon_concurrency=(\d+)", row.get("silicon_data_source") or "")
    if row["mode"] == "disagg":
        p, d = _int(row, "prefill_num_workers", path, line), _int(row, "decode_num_workers", path, line)
        # no concurrency stated: the decode side's batch, every decode worker full
        conc = int(m.group(1)) if m else (_int(row, "batch_size", path, line) if row.get("batch_size")
                                          else d * _int(row, "decode_batch_size", path, line))
        topo = Topology(colocated=0, prefill=p, decode=d, tp_prefill=_int(row, "prefill_tp_size", path, line),
                        tp_decode=_int(row, "decode_tp_size", path, line), connector="nixl")
    elif row["mode"] == "agg":
        conc = int(m.group(1)) if m else _int(row, "batch_size", path, line)
        tp = _int(row, "tp_size", path, line)
        topo = Topology(colocated=1, tp_prefill=tp, tp_decode=tp)
    else:
        raise RunFormatError(f"{path} line {line}: field 'mode' must be 'agg' or 'disagg', got {row['mode']!r}")
    ttft = _float(row, "silicon_ttft_ms", path, line) * 1e-3
    tpot = _float(row, "silicon_tpot_ms", path, line) * 1e-3
    n = PROMPTS_PER_SLOT * conc
    model = row["model_path"]
    quant = (row.get("gemm_quant_mode") or row.get("precision") or "").lower()
    if quant and quant not in ("bf16", "fp16") and quant not in _NATIVE_QUANT.get(model, ()):
        model = f"{model} [{quant}]"
    stage = TraceStage(index=0, rate=0.0, concurrency=conc, duration_s=0.0, sent=n, finished=n, ttft_mean=ttft,
                       tpot_mean=tpot, e2e_mean=ttft + tpot * (osl - 1), throughput_rps=float("nan"),
                       saturated=False)
    return TraceRun(name=f"{path.name}:{row.get('id') or line}", path=path, kind="aiconfigurator", model=model,
                    tensor_parallelism=topo.tp_prefill, gpu=_GPUS.get(row["system"], row["system"]),
                    max_num_batched_tokens=None, max_num_seqs=None, num_gpu_blocks=None, topology=topo,
                    input_tokens=np.full(n, isl, dtype=np.int64), output_tokens=np.full(n, osl, dtype=np.int64),
                    arrivals=None, rate=float("inf"), concurrency=conc, api_server=True, shared_prompt=False,
                    stage=stage, warmup_requests=conc)


def load_silicon_points(path: str | Path) -> list[TraceRun]:
    """Every vLLM row of an aiconfigurator silicon table, one run each."""
    path = Path(path)
    rows = read_csv_rows(path, _NEED)
    return [_row_run(r, path, i) for i, r in enumerate(rows, start=2) if r["backend"] == "vllm"]


def is_silicon_table(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".csv"):
        return False
    with path.open(encoding="utf-8", errors="replace") as fh:
        return "silicon_ttft_ms" in fh.readline()


__all__ = ["PROMPTS_PER_SLOT", "is_silicon_table", "load_silicon_points"]
