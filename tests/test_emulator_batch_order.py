"""Where remote KV enters the batch, pinned at the planner (arrow_rl/cluster/emulator/scheduler.py).

vLLM v1's ``Scheduler.schedule`` (vllm/v1/core/sched/scheduler.py) serves the running requests
first, then its waiting loop: requests holding KV blocks (``kv_holding_waiting``: a landed pull) are
drained first, each scheduled for one token (``_update_waiting_for_remote_kv`` leaves the last
prompt token to recompute), under the same token budget and ``max_num_seqs`` as any admission, and
not at all in a step that preempted. tests/test_vllm_scheduler_conformance.py checks the same rules
on vLLM's own scheduler.
"""

from __future__ import annotations

import numpy as np

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.emulator.instance import InstanceState
from arrow_rl.cluster.emulator.requests import LANDED, PREFILLING, WAITING, RequestTable
from arrow_rl.cluster.emulator.scheduler import BatchScheduler, SchedulerLimits
from arrow_rl.workload.workload import Workload

BS = 16


def _instance(prompt_left: int, landed: int, waiting: int = 0, cap_blocks: int = 1000):
    """One MIXED instance: request 0 is a running prompt with ``prompt_left`` tokens to compute,
    then ``landed`` requests whose pulled KV (64-token prompts) has landed, then ``waiting`` new
    32-token prompts."""
    n = 1 + landed + waiting
    inputs = [prompt_left] + [64] * landed + [32] * waiting
    requests = RequestTable(Workload(arrival_s=np.zeros(n), input_tokens=np.array(inputs),
                                     output_tokens=np.full(n, 8)))
    inst = InstanceState(0, Role.MIXED, cap_blocks, BS)
    inst.running.append(0)
    inst.prefilling.append(0)
    requests.state[0] = PREFILLING
    for rid in range(1, 1 + landed):
        requests.state[rid] = LANDED
        requests.computed[rid] = 64
        requests.blocks[rid] = 4
        inst.other_blocks += 4
        inst.landed.append(rid)
    for rid in range(1 + landed, n):
        requests.state[rid] = WAITING
        inst.waiting.append(rid)
    return inst, requests


def _plan(inst, requests, tokens: int, seqs: int = 64):
    return BatchScheduler(SchedulerLimits(max_num_batched_tokens=tokens, max_num_seqs=seqs)).plan(inst, requests, 0.0)


def test_landed_kv_waits_while_running_prompts_take_the_whole_token_budget():
    inst, requests = _instance(prompt_left=500, landed=2)
    plan = _plan(inst, requests, tokens=256)
    assert plan.joined == 0 and list(plan.chunks) == [(0, 256)]


def test_each_landed_request_costs_one_token_after_the_running_prompts():
    inst, requests = _instance(prompt_left=254, landed=3)
    plan = _plan(inst, requests, tokens=256)
    assert plan.joined == 2 and list(plan.chunks) == [(0, 254)]


def test_landed_kv_joins_before_new_prompts_are_admitted_and_shares_their_budget():
    inst, requests = _instance(prompt_left=100, landed=2, waiting=2)
    plan = _plan(inst, requests, tokens=140)
    assert plan.joined == 2
    assert list(plan.chunks) == [(0, 100), (3, 32), (4, 6)] and plan.admitted == 2


def test_landed_kv_obeys_max_num_seqs():
    inst, requests = _instance(prompt_left=10, landed=3)
    plan = _plan(inst, requests, tokens=256, seqs=3)
    assert plan.joined == 2
