"""The batch scheduler as a planner: vLLM v1 batch forming and preemption, without changing state.

Each test builds one instance's queues and request counters by hand, asks ``BatchScheduler.plan``
for the next batch and checks the plan (and that nothing it was given changed).
"""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import HealthCheck, given, settings

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.emulator.instance import InstanceState
from arrow_rl.cluster.emulator.requests import DECODING, LANDED, PREFILLING, QUEUED_FOR_KV, WAITING, RequestTable
from arrow_rl.cluster.emulator.scheduler import DECODES_ONLY, BatchScheduler, SchedulerLimits
from arrow_rl.workload.workload import Workload

from test_emulator_invariants import cluster_for, scenarios, windows_with_flips

BS = 16


def table(inputs, outputs=None, arrivals=None) -> RequestTable:
    n = len(inputs)
    return RequestTable(Workload(np.asarray(arrivals if arrivals is not None else [0.0] * n, float),
                                 np.asarray(inputs), np.asarray(outputs if outputs is not None else [100] * n)))


def instance(cap_blocks: int = 10_000) -> InstanceState:
    return InstanceState(0, Role.PREFILL, cap_blocks, BS)


def wait(I: InstanceState, R: RequestTable, rid: int) -> None:
    R.state[rid], R.instance[rid] = WAITING, I.id
    I.waiting.append(rid)


def prefilling(I: InstanceState, R: RequestTable, rid: int, computed: int) -> None:
    """A running prompt with ``computed`` tokens of KV."""
    R.state[rid], R.instance[rid], R.computed[rid] = PREFILLING, I.id, computed
    R.blocks[rid] = -(-computed // BS)
    I.other_blocks += R.blocks[rid]
    I.running.append(rid)
    I.prefilling.append(rid)


def decoding(I: InstanceState, R: RequestTable, rid: int) -> None:
    """A running sequence in the decode set, its prompt computed."""
    R.instance[rid] = I.id
    I.running.append(rid)
    I.join_decode_set(R, rid, R.input_tokens[rid])


def limits(M: int = 8192, S: int = 256, **kw) -> BatchScheduler:
    return BatchScheduler(SchedulerLimits(max_num_batched_tokens=M, max_num_seqs=S, **kw))


# memos of pure functions of the state (asking ``decode_set_blocks`` fills one), not state
MEMOS = {"cached_view", "decode_blocks_memo_at", "decode_blocks_memo", "done_memo_version",
         "done_memo_iterations", "done_memo_from", "done_memo_until"}


def snapshot(I: InstanceState, R: RequestTable):
    return ({name: copy.deepcopy(getattr(I, name)) for name in InstanceState.__slots__ if name not in MEMOS},
            {name: list(getattr(R, name)) for name in R._LISTS})


def test_nothing_to_form_returns_the_shared_decodes_only_plan():
    R, I = table([100]), instance()
    decoding(I, R, 0)
    assert limits().plan(I, R, 0.0) is DECODES_ONLY


def test_chunked_prefill_splits_prompts_at_max_num_batched_tokens():
    R, I = table([3000, 3000, 500]), instance()
    for rid in range(3):
        wait(I, R, rid)
    p = limits(M=4096).plan(I, R, 0.0)
    assert p.chunks == [(0, 3000), (1, 1096)]     # the third prompt waits: no tokens left
    assert p.admitted == 2


def test_decode_tokens_come_out_of_the_token_budget_first():
    R, I = table([50] * 10 + [4000]), instance()
    for rid in range(10):
        decoding(I, R, rid)
    wait(I, R, 10)
    p = limits(M=1000).plan(I, R, 0.0)
    assert p.chunks == [(10, 1000 - 10)]   # Arrow §5.4: every decode sequence runs, one token each


def test_a_running_prompt_gets_its_next_chunk_before_new_prompts_are_admitted():
    R, I = table([5000, 300]), instance()
    prefilling(I, R, 0, computed=2048)
    wait(I, R, 1)
    p = limits(M=2048).plan(I, R, 0.0)
    assert p.chunks == [(0, 2048)] and p.admitted == 0


def test_max_num_seqs_caps_the_running_batch():
    R, I = table([100] * 5), instance()
    prefilling(I, R, 0, computed=10)
    for rid in range(1, 5):
        wait(I, R, rid)
    p = limits(S=3).plan(I, R, 0.0)
    assert p.admitted == 2 and [rid for rid, _ in p.chunks] == [0, 1, 2]


def test_no_admission_without_free_kv_blocks():
    R, I = table([100, 200]), instance(cap_blocks=10)
    wait(I, R, 0)
    wait(I, R, 1)
    p = limits().plan(I, R, 0.0)
    assert p.chunks == [(0, 100)] and p.admitted == 1   # 7 blocks fit, 13 more do not (FCFS: stop)
    I.other_blocks = 4                                   # something else holds 4 of the 10 blocks
    assert limits().plan(I, R, 0.0).admitted == 0


def test_preemption_takes_the_newest_running_request_first():
    # vLLM v1 Scheduler.schedule (FCFS policy): a request that cannot get its KV blocks preempts
    # ``self.running.pop()``, the last admitted, until it fits
    R, I = table([64, 64, 64, 64]), instance(cap_blocks=13)
    for rid in range(3):
        decoding(I, R, rid)     # 3 × 4 blocks, each needs a 5th for its next token
    wait(I, R, 3)
    p = limits().plan(I, R, 0.0)
    assert p.materialised
    assert [victim for victim, _ in p.preempted] == [2]
    assert p.chunks == [] and p.admitted == 0           # a step that preempted admits nothing


def test_a_request_that_cannot_fit_preempts_itself_when_it_is_the_newest():
    R, I = table([64, 160]), instance(cap_blocks=14)
    decoding(I, R, 0)              # 4 blocks, needs a 5th
    prefilling(I, R, 1, computed=144)   # 9 blocks, its last chunk needs a 10th
    p = limits().plan(I, R, 0.0)
    assert [victim for victim, _ in p.preempted] == [1]
    assert p.allocations == [(0, 1)]    # the decode got its block before the prompt was dropped


def test_landed_kv_joins_only_while_max_num_seqs_allows():
    R, I = table([100, 100, 100]), instance()
    decoding(I, R, 0)
    for rid in (1, 2):
        R.state[rid], R.instance[rid], R.blocks[rid] = LANDED, 0, 7
        I.other_blocks += 7
        I.landed.append(rid)
    assert limits(S=2).plan(I, R, 0.0).joined == 1


def test_kv_pulls_start_fcfs_while_their_blocks_fit():
    R, I = table([320, 320, 16]), instance(cap_blocks=25)
    for rid in range(3):
        R.state[rid], R.instance[rid] = QUEUED_FOR_KV, 0
        I.transfer_queue.append(rid)
    p = limits().plan(I, R, 0.0)
    assert p.pulls == 1                  # 20 blocks fit, the next 20 do not; the small third waits (FCFS)


def test_no_admission_or_pull_during_a_flip_delay():
    R, I = table([100, 100]), instance()
    wait(I, R, 0)
    R.state[1], R.instance[1] = QUEUED_FOR_KV, 0
    I.transfer_queue.append(1)
    I.blocked_until = 5.0
    p = limits().plan(I, R, 1.0)
    assert p.admitted == 0 and p.pulls == 0


def test_a_waiting_prompt_past_the_client_timeout_is_dropped_not_admitted():
    R, I = table([100, 100], arrivals=[0.0, 9.0]), instance()
    wait(I, R, 0)
    wait(I, R, 1)
    p = limits(client_timeout_s=5.0).plan(I, R, 10.0)
    assert p.timed_out == [0] and p.chunks == [(1, 100)]


def test_decode_run_length_stops_before_the_kv_overflows():
    R, I = table([64], outputs=[1000]), instance(cap_blocks=10)
    decoding(I, R, 0)                     # 4 blocks now; 10 blocks hold 160 tokens
    s = limits()
    assert s.decode_run_length(I, 999, after_preemption=False) == 96
    assert s.decode_run_length(I, 50, after_preemption=False) == 50
    assert s.decode_run_length(I, 50, after_preemption=True) == 1
    assert limits(exact_stepping=True).decode_run_length(I, 50, after_preemption=False) == 1


def test_the_plan_changes_neither_the_instance_nor_the_request_table():
    R, I = table([64, 64, 64, 160, 300, 300]), instance(cap_blocks=20)
    for rid in range(3):
        decoding(I, R, rid)
    prefilling(I, R, 3, computed=100)
    wait(I, R, 4)
    wait(I, R, 5)
    before = snapshot(I, R)
    for s in (limits(), limits(M=64), limits(S=3)):
        s.plan(I, R, 0.0)
        assert snapshot(I, R) == before


class CheckedScheduler(BatchScheduler):
    """Checks, at every boundary of a real run, that planning changes nothing and obeys the limits."""

    def plan(self, I, R, t, prefix=None):
        before = snapshot(I, R)
        p = super().plan(I, R, t, prefix)
        assert snapshot(I, R) == before, "the scheduler changed the state it was given"
        running = len(I.running) + p.joined - len(p.preempted) + p.admitted
        assert running <= self.limits.max_num_seqs
        decodes = I.num_decoding + p.joined - sum(1 for v, _ in p.preempted if R.state[v] == DECODING)
        assert sum(c for _, c in p.chunks) <= max(0, self.limits.max_num_batched_tokens - decodes)
        return p


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_on_random_runs_every_plan_leaves_the_state_alone_and_obeys_the_limits(scenario):
    *_, flips, _ = scenario
    cluster = cluster_for(scenario)
    cluster._scheduler = CheckedScheduler(cluster._scheduler.limits)
    for _ in windows_with_flips(cluster, flips, 0.1):
        pass
    assert cluster.done
