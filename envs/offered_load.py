"""Offered load in units of one instance's profiled capacity, from rates and mean lengths.

Shared by the per-window pool frame (``envs.pool_observation``, ``load_features: capacity``) and the
observation memory's EWMAs (``envs.memory_features``), so a 1 s window and a 300 s average of the
same traffic read the same units. Depends on the profile type only, never on a backend.
"""

from __future__ import annotations

import math

from arrow_rl.cluster.base import SLO
from arrow_rl.perf.profile import InstanceProfile


def offered_load_of(rate: float, prompt: float, output: float, slo: SLO, profile: InstanceProfile,
                    kv_capacity_tokens: float = math.inf) -> tuple[float, float]:
    """(prefill, decode) load of ``rate`` requests/s per instance of mean ``prompt`` and ``output``
    tokens on one instance, each in units of its capacity.

    Prefill: rate x T(mean prompt) (Arrow §5.3's T): seconds of prefill per second. Decode: by Little's
    law the requests keep rate x output x TPOT sequences decoding, each holding about prompt + output/2
    tokens of context; at TPOT = SLO_TPOT one instance holds at most MT(SLO_TPOT) tokens (§5.3) and at
    most its KV cache, so the context over the smaller of the two is the share of one instance's decode
    capacity they need (infinite when the instance cannot meet SLO_TPOT at all)."""
    prefill = rate * profile.prefill_time(prompt)
    capacity = min(profile.max_tokens(slo.tpot_s), kv_capacity_tokens)
    context = rate * output * slo.tpot_s * (prompt + output / 2.0)
    decode = context / capacity if capacity > 0 else (math.inf if context > 0 else 0.0)
    return prefill, decode
