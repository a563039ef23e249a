"""Replay a :class:`TraceRun` on the emulator: same requests, same sends, same deployment.

* Per-request runs send every request at its recorded time (open loop).
* ``vllm bench serve`` at a rate draws the sends as the client does (gamma inter-arrivals with the
  run's burstiness; Poisson at burstiness 1), seeded.
* Closed loop (``max_concurrency`` N): the client lets at most N requests be in flight, so request
  j is sent when the (j − N + 1)-th earlier request finishes (or at its own send time under a rate,
  whichever is later). The sends depend on the emulated finishes, so the replay iterates: run,
  derive the sends from the finishes, run again, until the sends stop moving (a fixed point; a few
  rounds for the 5 × N prompts these runs send). The emulator itself is not changed.
* A run that measured in steady state (``warmup_requests``) has its first sends left out of the
  emulated means, as its client left them out of the real ones.
* Disaggregated runs use the emulator's disaggregated mode with P prefill and D decode instances
  of one preset (both roles at the same TP: the emulator has one instance type per cluster).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from arrow_rl.fidelity.replay import SimStage
from arrow_rl.fidelity.trace_run import TraceRun, UnsupportedRun
from arrow_rl.workload.workload import Workload

if TYPE_CHECKING:
    from arrow_rl.cluster.base import RequestRecord
    from arrow_rl.perf.preset import Preset

MAX_ROUNDS = 40          # closed loop: rounds of the fixed-point iteration at most
SEND_TOLERANCE_S = 1e-6  # closed loop: converged when no send moves by more than this


class InProcessLatency:
    """A latency model without the API server's per-request time: the run fed its engine in-process."""

    frontend_s = 0.0

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.iteration_time = inner.iteration_time                     # type: ignore[attr-defined]
        self.decode_time_coefficients = inner.decode_time_coefficients  # type: ignore[attr-defined]


def replay_preset(run: TraceRun, preset: "str | Preset") -> "Preset":
    """The preset as the run's server had it: its reported KV capacity, no API server if in-process."""
    from arrow_rl.perf.presets import get_preset

    p = get_preset(preset) if isinstance(preset, str) else preset
    if run.topology.tp_prefill != run.topology.tp_decode:
        raise UnsupportedRun(f"{run.path}: prefill at TP{run.topology.tp_prefill} and decode at "
                             f"TP{run.topology.tp_decode}; the emulator runs one instance type per cluster")
    if p.tp != run.topology.tp_prefill:
        raise UnsupportedRun(f"{run.path}: the run's instances use TP{run.topology.tp_prefill}, preset "
                             f"{p.name!r} is TP{p.tp}")
    if run.num_gpu_blocks is not None:
        cap = run.num_gpu_blocks * p.block_size
        p = dataclasses.replace(p, kv_capacity_tokens=cap, max_model_len=min(p.max_model_len, cap))
    if not run.api_server:
        p = dataclasses.replace(p, latency=InProcessLatency(p.latency))
    return p


def gated_sends(run: TraceRun, n: int) -> np.ndarray:
    """When the client would send each request with no concurrency limit (from 0)."""
    if run.rate is None or not math.isfinite(run.rate):
        return np.zeros(n)
    rng = np.random.default_rng(run.seed)
    burst = run.burstiness
    gaps = rng.gamma(shape=burst, scale=1.0 / (run.rate * burst), size=n)
    sends = np.cumsum(gaps)
    return sends - sends[0]


def closed_loop_sends(gate: np.ndarray, finish: np.ndarray, concurrency: int) -> np.ndarray:
    """Send times under a FIFO limit of ``concurrency`` requests in flight, given each one's finish."""
    sends = gate.copy()
    for j in range(concurrency, gate.size):
        # the (j − N)-th earliest finish among requests 0..j−1 frees the slot request j takes
        sends[j] = max(gate[j], float(np.partition(finish[:j], j - concurrency)[j - concurrency]))
    return np.maximum.accumulate(sends)


def _workload(run: TraceRun, sends: np.ndarray, count: int) -> Workload:
    wl = Workload(sends, run.input_tokens[:count], run.output_tokens[:count], name=run.name)
    if run.shared_prompt:   # decode-only: one prompt, cached after its first use but for its last token
        return wl.with_shared_prefixes(np.zeros(count, dtype=np.int64), run.input_tokens[:count] - 1)
    return wl


def _simulate(run: TraceRun, preset: "Preset", name: str, wl: Workload, seed: int) -> "list[RequestRecord]":
    from arrow_rl.cluster.base import Mode
    from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
    from arrow_rl.perf.profile import fit_instance_profile
    from arrow_rl.perf.presets import vllm_serve_defaults

    mnbt_default, seqs_default = vllm_serve_defaults(name)
    mnbt = run.max_num_batched_tokens or mnbt_default
    seqs = min(run.max_num_seqs or seqs_default, mnbt)
    topo = run.topology
    if topo.disaggregated:
        cfg = EmulatorConfig(preset=name, num_instances=topo.num_instances, num_prefill=topo.prefill,
                             mode=Mode.DISAGGREGATED, max_num_batched_tokens=mnbt, max_num_seqs=seqs)
    else:
        cfg = EmulatorConfig(preset=name, num_instances=topo.num_instances, mode=Mode.COLOCATED,
                             max_num_batched_tokens=mnbt, max_num_seqs=seqs)
    prof = fit_instance_profile(preset.latency, preset.max_model_len, max_batch_tokens=preset.kv_capacity_tokens)
    cluster = EmulatedCluster(wl, cfg, seed=seed, preset=preset, profile=prof)
    cluster.run_until_done()
    return cluster.records()


def _finishes(records: "list[RequestRecord]", n: int) -> np.ndarray:
    finish = np.full(n, math.inf)
    for r in records:
        if r.finished:
            finish[r.request_id] = r.finish_s
    return finish


def replay_trace(run: TraceRun, preset: "str | Preset", seed: int = 0, duration_s: float | None = None) -> SimStage:
    """Replay ``run`` (module docstring); ``duration_s`` keeps only the sends of its first S seconds."""
    p = replay_preset(run, preset)
    name = preset if isinstance(preset, str) else preset.name
    n = run.input_tokens.size
    if run.arrivals is not None:
        count = n if duration_s is None else max(int(np.searchsorted(run.arrivals, duration_s, side="right")), 1)
        sends = run.arrivals[:count]
        records = _simulate(run, p, name, _workload(run, sends, count), seed)
    else:
        count = n
        gate = gated_sends(run, n)
        if run.concurrency is None or run.concurrency >= n:
            sends = gate
            records = _simulate(run, p, name, _workload(run, sends, n), seed)
        else:
            sends = gate.copy()
            for _ in range(MAX_ROUNDS):
                records = _simulate(run, p, name, _workload(run, sends, n), seed)
                new = closed_loop_sends(gate, _finishes(records, n), run.concurrency)
                if not np.all(np.isfinite(new)) or float(np.max(np.abs(new - sends))) <= SEND_TOLERANCE_S:
                    break   # converged: these records are the replay (or requests never finished)
                sends = new
    done = [r for r in records if r.finished and r.request_id >= run.warmup_requests]
    if not done:
        return SimStage(math.nan, math.nan, math.nan, 0.0, 0, count)
    ttft = np.array([r.ttft_s for r in done])
    e2e = np.array([r.finish_s - r.arrival_s for r in done])
    out = np.array([r.output_tokens for r in done], dtype=float)
    span = max(r.finish_s for r in done) - float(sends[:count].min())
    return SimStage(ttft_mean=float(ttft.mean()), tpot_mean=float(((e2e - ttft) / np.maximum(out - 1, 1)).mean()),
                    e2e_mean=float(e2e.mean()), throughput_rps=len(done) / span if span > 0 else 0.0,
                    finished=len(done), sent=count)


__all__ = ["InProcessLatency", "closed_loop_sends", "gated_sends", "replay_preset", "replay_trace"]
