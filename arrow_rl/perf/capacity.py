"""How much traffic one instance of a preset serves, relative to another preset.

A training distribution that mixes models (``envs.config.DistributionConfig.presets``) draws arrival
rates per instance; an 8B TP1 instance serves several times what a 70B TP4 one does, so the same
absolute rate idles one and floods the other. ``relative_capacity`` gives the factor that puts both at
a comparable load. It is a proxy from the fitted latency model, not a serving-rate search: the time to
serve one reference request, i.e. its prefill alone plus its share of decode iterations in a full batch.
"""

from __future__ import annotations

from functools import lru_cache

from arrow_rl.perf.presets import latency_model

# The reference request: a 1,024-token prompt and 256 output tokens, decoded in a batch of 64
# sequences with 1,024 tokens of context each (the middle of the suite's workloads).
REFERENCE_PROMPT_TOKENS = 1024
REFERENCE_OUTPUT_TOKENS = 256
REFERENCE_DECODE_BATCH = 64
REFERENCE_DECODE_CONTEXT = 1024


@lru_cache(maxsize=None)
def reference_request_seconds(preset: str) -> float:
    """Engine seconds one instance of ``preset`` spends on the reference request."""
    model = latency_model(preset)
    c = REFERENCE_PROMPT_TOKENS
    prefill = model.iteration_time(c, c * c / 2.0, 0, 0)
    step = model.iteration_time(0, 0.0, REFERENCE_DECODE_BATCH, REFERENCE_DECODE_BATCH * REFERENCE_DECODE_CONTEXT)
    return prefill + REFERENCE_OUTPUT_TOKENS * step / REFERENCE_DECODE_BATCH


def relative_capacity(preset: str, reference: str) -> float:
    """Requests per second one ``preset`` instance serves per request of one ``reference`` instance."""
    return reference_request_seconds(reference) / reference_request_seconds(preset)
