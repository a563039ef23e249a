"""A quick estimate of the request rate a cluster serves a workload at: where its knee lies.

``episode.knee_factor`` draws each episode's load as a factor of this estimate, so that training
episodes sit around the load where the split decides the outcome, whatever the trace, model or
cluster size (a fixed rate-scale range idles a 32-instance cluster and floods a 4-instance one).

It is a capacity proxy, not a serving-rate search (a search costs tens of simulations; this costs a
few latency-model calls). One instance spends, per request, its prefill time T(prompt) (Arrow §5.3)
on the prefill side, and on the decode side a share of its decode context for output x SLO_TPOT
seconds (Little's law): (prompt + output / 2) tokens out of min(MT(SLO_TPOT), KV capacity), the
context it holds at TPOT = SLO_TPOT (§5.3). With the split chosen to match, N instances serve
N / (E[T(prompt)] + E[output x SLO_TPOT x (prompt + output / 2)] / capacity) requests per second.
The SLO knee lies below this full-utilisation rate (queueing), which is why the factor range is
drawn around it rather than taken as a bound. Cached per (workload, preset, N, SLO): a trace's
estimate is computed once per process.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from arrow_rl.cluster.base import SLO
from arrow_rl.workload.workload import Workload

_SAMPLE = 512   # requests the per-request means are taken over (evenly spaced through the workload)


def per_request_instance_seconds(prompt: np.ndarray, output: np.ndarray, preset: str, slo: SLO) -> float:
    """Mean instance-seconds one request needs, prefill plus its share of decode capacity (module docstring)."""
    from arrow_rl.perf.presets import get_preset
    from arrow_rl.perf.profile import profile_instance

    spec = get_preset(preset)
    profile = profile_instance(spec)
    capacity = min(profile.max_tokens(slo.tpot_s), float(spec.kv_capacity_tokens))
    prefill = float(np.mean([profile.prefill_time(float(p)) for p in prompt]))
    decode = float(np.mean(output * slo.tpot_s * (prompt + output / 2.0))) / max(capacity, 1.0)
    return prefill + decode


@lru_cache(maxsize=256)
def _cached(key: str, prompt: tuple[float, ...], output: tuple[float, ...], preset: str, n: int,
            ttft_s: float, tpot_s: float) -> float:
    seconds = per_request_instance_seconds(np.asarray(prompt), np.asarray(output), preset, SLO(ttft_s, tpot_s))
    return n / seconds if seconds > 0 else float("inf")


def estimated_serving_rate(workload: Workload, preset: str, num_instances: int, slo: SLO, key: str | None = None) -> float:
    """Requests per second ``num_instances`` instances of ``preset`` serve ``workload``'s mix at
    (module docstring). ``key`` names the workload for the cache (a trace name); None: its name."""
    n = len(workload)
    if n == 0:
        raise ValueError("estimated_serving_rate: the workload has no requests")
    idx = np.unique(np.linspace(0, n - 1, min(n, _SAMPLE)).astype(int))
    prompt = tuple(float(x) for x in np.asarray(workload.input_tokens)[idx])
    output = tuple(float(x) for x in np.asarray(workload.output_tokens)[idx])
    return _cached(key or workload.name, prompt, output, preset, int(num_instances), float(slo.ttft_s), float(slo.tpot_s))
