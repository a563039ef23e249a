"""The known colocated-vs-disaggregated trade-off (DistServe, Splitwise; Arrow §3.1) emerges."""

from __future__ import annotations

import numpy as np

from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.metrics import summarize
from arrow_rl.perf.presets import get_preset
from arrow_rl.workload.workload import Workload

PRESET = "h100-llama3.1-8b-tp1"


def prefill_heavy(n=400, rate=6.0, seed=0) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(np.cumsum(rng.exponential(1.0 / rate, n)), rng.integers(3000, 6000, n),
                    rng.integers(100, 300, n))


def simulate(mode: str, workload: Workload):
    c = EmulatedCluster(workload, EmulatorConfig(preset=PRESET, num_instances=2, mode=mode))
    itl_time = itl_iters = 0.0
    while not c.done:
        w = c.advance(1.0)
        for s in w.instances:
            if s.decode_tokens_generated:
                iters = s.decode_tokens_generated  # weight by tokens: a fair mean over decode steps
                itl_time += s.itl_mean * iters
                itl_iters += iters
    return c, summarize(c.completed()), itl_time / itl_iters


def test_disaggregation_removes_prefill_stalls_from_decode_at_the_cost_of_ttft_and_transfer():
    w = prefill_heavy()
    co_c, co, co_itl = simulate("colocated", w)
    dis_c, dis, dis_itl = simulate("disaggregated", w)
    # decode iterations no longer carry 2048-token prompt chunks: lower ITL and TPOT, tighter tail
    assert dis_itl < 0.85 * co_itl
    assert dis["tpot_p50"] < 0.9 * co["tpot_p50"]
    assert dis["tpot_p90"] < 0.85 * co["tpot_p90"]
    # the price: half the instances compute prompts (TTFT grows) and every request moves its KV
    assert dis["ttft_mean"] > co["ttft_mean"]
    assert dis_c.num_transfers == len(w) and co_c.num_transfers == 0
    xfer = get_preset(PRESET).kv_transfer_time
    for r in dis_c.completed():
        assert r.finish_s - r.first_token_s >= xfer(r.input_tokens)   # transfer is charged to TPOT
