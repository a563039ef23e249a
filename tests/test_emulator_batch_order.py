"""Where remote KV enters the batch and the waiting line, pinned at the planner
(arrow_rl/cluster/emulator/scheduler.py).

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
from arrow_rl.cluster.emulator.requests import LANDED, PREFILLING, QUEUED_FOR_KV, WAITING, RequestTable
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


# ---------------------------------------------------------------------------------------------
# The waiting line: vLLM v1 has one FCFS waiting queue, so a decode leg waiting to pull its KV and
# a new prompt on the same (MIXED or flipped) instance are served in arrival order, and the first
# that does not fit stops everything behind it. Its waiting loop does not run at all in a step that
# preempted, nor once the token budget is spent.

def _line(kinds: str, cap_blocks: int, prompt_tokens: int = 160, leg_tokens: int = 160):
    """An idle MIXED instance whose waiting line is ``kinds``, in order: ``p`` a new prompt,
    ``d`` a decode leg queued to pull its KV."""
    n = len(kinds)
    inputs = [prompt_tokens if k == "p" else leg_tokens for k in kinds]
    requests = RequestTable(Workload(arrival_s=np.zeros(n), input_tokens=np.array(inputs),
                                     output_tokens=np.full(n, 8)))
    inst = InstanceState(0, Role.MIXED, cap_blocks, BS)
    for rid, kind in enumerate(kinds):
        if kind == "p":
            requests.state[rid] = WAITING
            inst.enqueue_prompt(requests, rid)
        else:
            requests.state[rid] = QUEUED_FOR_KV
            inst.enqueue_pull(requests, rid)
    return inst, requests


def test_a_decode_leg_behind_a_prompt_that_does_not_fit_waits():
    # the prompt's whole sequence (328 tokens) needs 21 blocks, the leg's pull 2: only the leg would fit
    inst, requests = _line("pd", cap_blocks=12, prompt_tokens=320, leg_tokens=32)
    plan = _plan(inst, requests, tokens=256)
    assert plan.admitted == 0 and plan.pulls == 0


def test_a_prompt_behind_a_decode_leg_that_does_not_fit_waits():
    inst, requests = _line("dp", cap_blocks=12, prompt_tokens=32, leg_tokens=320)
    plan = _plan(inst, requests, tokens=256)
    assert plan.admitted == 0 and plan.pulls == 0


def test_prompts_and_pulls_are_served_in_arrival_order():
    inst, requests = _line("dpdp", cap_blocks=31)
    plan = _plan(inst, requests, tokens=4096)
    # leg 0 pulls 10 blocks; prompt 1's whole sequence (168 tokens: 11 blocks) fits, its chunk takes
    # 10; leg 2 pulls 10; prompt 3's 11 do not fit. Served by kind, both prompts would run first.
    assert plan.pulls == 2 and plan.admitted == 1 and list(plan.chunks) == [(1, 160)]


def test_no_pull_starts_while_running_prompts_take_the_whole_token_budget():
    inst, requests = _instance(prompt_left=500, landed=0, waiting=1)   # request 1: the leg below
    inst.waiting.clear()
    requests.state[1] = QUEUED_FOR_KV
    inst.enqueue_pull(requests, 1)
    assert _plan(inst, requests, tokens=256).pulls == 0
    assert _plan(inst, requests, tokens=1024).pulls == 1


def test_no_pull_starts_in_a_step_that_preempted():
    requests = RequestTable(Workload(arrival_s=np.zeros(3), input_tokens=np.array([64, 64, 64]),
                                     output_tokens=np.full(3, 100)))
    inst = InstanceState(0, Role.DECODE, 9, BS)
    for rid in (0, 1):                       # two decodes of 64 tokens (4 blocks each) about to grow
        inst.running.append(rid)
        inst.join_decode_set(requests, rid, 64)
    requests.state[2] = QUEUED_FOR_KV
    inst.enqueue_pull(requests, 2)
    plan = _plan(inst, requests, tokens=256)
    assert plan.preempted and plan.pulls == 0
