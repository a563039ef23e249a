"""The emulator's batch former against vLLM's own v1 scheduler, iteration by iteration.

tests/vllm_scheduler.py drives vLLM's real ``Scheduler`` (vllm/v1/core/sched/scheduler.py) on CPU
with a synthetic KV-cache config; the emulator runs one colocated instance with ``exact_stepping``
and the same limits, KV blocks and block size, and records its batches (``EmulatedCluster.batch_log``).
Every request arrives at t = 0; the emulator forms its first batch on the first arrival, so the
other requests join vLLM's queue after its first step. Both then see the same queue and the step
sequences must agree token for token: chunked prefill under the token budget, ``max_num_seqs``, preemption by recompute under
KV pressure, prefix-cache hits on shared prompt blocks, and eviction of freed cached blocks.

Remote KV (disaggregated decode legs) is driven through vLLM's NIXL connector, scheduler side:
those tests pin the vLLM behaviour the emulator's planner mirrors (scheduler.py, steps 3-4).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm")

from arrow_rl.cluster.base import Mode  # noqa: E402
from arrow_rl.cluster.emulator.cluster import EmulatedCluster  # noqa: E402
from arrow_rl.cluster.emulator.config import EmulatorConfig  # noqa: E402
from arrow_rl.perf.presets import get_preset  # noqa: E402
from arrow_rl.workload.workload import Workload  # noqa: E402

import vllm_scheduler as vs  # noqa: E402  (tests/ is on sys.path)

BS = vs.BLOCK_SIZE
PRESET = "h100-llama3.1-8b-tp1"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model config (no weights): all vLLM's ``ModelConfig`` reads."""
    import json
    d = tmp_path_factory.mktemp("tiny")
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
        "num_hidden_layers": 1, "vocab_size": 256, "max_position_embeddings": 4096,
        "torch_dtype": "float32"}))
    return d


def _stream(specs: list[tuple[list[int], int]]) -> list:
    """Requests "0", "1", ... from (prompt block ids, output tokens): block id b stands for 16
    copies of token b + 1, so equal ids at the start of two prompts are a shared prefix."""
    return [vs.StreamRequest(str(i), tuple(t for b in blocks for t in [b + 1] * BS), out, arrival_step=min(i, 1))
            for i, (blocks, out) in enumerate(specs)]


def _workload(specs: list[tuple[list[int], int]]) -> Workload:
    """The same requests for the emulator, all at t = 0; prefix hashes chain the block ids."""
    n = len(specs)
    hashes, offsets = [], [0]
    for blocks, _ in specs:
        chain = [hash(tuple(blocks[:j + 1])) & (2 ** 62 - 1) for j in range(len(blocks))]
        hashes += chain
        offsets.append(len(hashes))
    return Workload(arrival_s=np.zeros(n), input_tokens=np.array([len(b) * BS for b, _ in specs]),
                    output_tokens=np.array([o for _, o in specs]), name="conformance",
                    prefix_hashes=np.array(hashes, dtype=np.int64), prefix_offsets=np.array(offsets),
                    prefix_block_tokens=BS)


def vllm_trace(model_dir: Path, specs, *, seqs: int, tokens: int, blocks: int, prefix: bool):
    sched = vs.make_scheduler(model_dir, max_num_seqs=seqs, max_num_batched_tokens=tokens, num_blocks=blocks,
                              enable_prefix_caching=prefix)
    return vs.run_stream(sched, _stream(specs))


def emulator_steps(specs, *, seqs: int, tokens: int, blocks: int, prefix: bool) -> list[dict[str, int]]:
    # vLLM's block pool keeps block 0 as its null block: ``blocks`` − 1 hold KV
    preset = dataclasses.replace(get_preset(PRESET), kv_capacity_tokens=(blocks - 1) * BS, block_size=BS)
    config = EmulatorConfig(preset=PRESET, num_instances=1, mode=Mode.COLOCATED, max_num_batched_tokens=tokens,
                            max_num_seqs=seqs, exact_stepping=True, enable_prefix_caching=prefix)
    cluster = EmulatedCluster(_workload(specs), config, preset=preset)
    cluster.batch_log = []
    cluster.run_until_done()
    assert all(r.finish_s == r.finish_s for r in cluster.records()), "a request did not finish"
    return [{str(rid): c for rid, c in e.tokens.items()} for e in cluster.batch_log for _ in range(e.iterations)]


def assert_same_steps(model_dir: Path, specs, **limits):
    """Diff the two step sequences; return vLLM's trace (for what the scenario must exercise)."""
    trace = vllm_trace(model_dir, specs, **limits)
    want = trace.steps
    got = emulator_steps(specs, **limits)
    for i, (w, g) in enumerate(zip(want, got)):
        assert g == w, f"step {i}: vLLM schedules {w}, the emulator {g}"
    assert len(got) == len(want), f"vLLM ran {len(want)} steps, the emulator {len(got)}"
    return trace


def _distinct(sizes: list[tuple[int, int]], first: int = 0) -> list[tuple[list[int], int]]:
    """Prompts of ``n`` blocks with no block in common, and their output tokens."""
    out, b = [], first
    for n, o in sizes:
        out.append((list(range(b, b + n)), o))
        b += n
    return out


def test_chunked_prefill_under_the_token_budget(model_dir):
    specs = _distinct([(7, 9), (3, 12), (5, 4), (2, 20), (6, 6)])
    assert_same_steps(model_dir, specs, seqs=8, tokens=48, blocks=200, prefix=False)


def test_max_num_seqs_holds_prompts_back(model_dir):
    specs = _distinct([(2, 6), (1, 9), (3, 3), (2, 5), (1, 7), (2, 4)])
    assert_same_steps(model_dir, specs, seqs=3, tokens=256, blocks=200, prefix=False)


def test_preemption_by_recompute_under_kv_pressure(model_dir):
    specs = _distinct([(6, 40), (5, 45), (6, 30), (4, 50)])
    trace = assert_same_steps(model_dir, specs, seqs=8, tokens=64, blocks=22, prefix=False)
    assert any(trace.preempted)


def test_prefix_cache_hits_on_shared_prompt_blocks(model_dir):
    shared = [900, 901, 902]
    specs = [(shared + [1, 2], 6), (shared + [3], 5), (shared + [4, 5, 6], 4), ([7, 8], 3), (shared, 4)]
    trace = assert_same_steps(model_dir, specs, seqs=2, tokens=64, blocks=200, prefix=True)
    # a whole-prompt hit still computes its last block (max_cache_hit_length = prompt − 1)
    assert trace.prefix_hit_tokens == {"0": 0, "1": 48, "2": 48, "3": 0, "4": 32}


def test_prefix_cache_eviction_under_kv_pressure(model_dir):
    shared = [900, 901, 902, 903]
    specs = [(shared + [1], 3), ([10, 11, 12, 13, 14], 3), ([20, 21, 22, 23, 24], 3), (shared + [2], 3),
             ([30, 31, 32, 33], 3), (shared + [3], 3)]
    trace = assert_same_steps(model_dir, specs, seqs=1, tokens=128, blocks=12, prefix=True)
    assert trace.prefix_hit_tokens["3"] == 0 and trace.prefix_hit_tokens["5"] == 64   # evicted, then kept


# ---------------------------------------------------------------------------------------------
# Remote KV: vLLM's rules for a decode leg whose prompt KV is pulled (NIXL connector), which the
# emulator's planner follows (tests/test_emulator_batch_order.py pins the emulator's side).

def _remote_trace(model_dir: Path, stream, *, tokens: int, blocks: int, prefix: bool = False, pull_steps: int = 0):
    sched = vs.make_scheduler(model_dir, max_num_seqs=8, max_num_batched_tokens=tokens, num_blocks=blocks,
                              enable_prefix_caching=prefix, remote_kv=True)
    return vs.run_stream(sched, stream, pull_steps=pull_steps)


def _prompt(block_ids: list[int]) -> tuple[int, ...]:
    return tuple(t for b in block_ids for t in [b + 1] * BS)


def test_vllm_landed_kv_joins_after_the_running_prompts_for_one_token(model_dir):
    stream = [vs.StreamRequest("R", _prompt([1, 2, 3]), 3, remote_prefill=True),
              vs.StreamRequest("L", _prompt(list(range(10, 20))), 2)]
    trace = _remote_trace(model_dir, stream, tokens=64, blocks=100)
    assert trace.pulls_started[0] == ["R"]          # the pull takes KV blocks, no tokens
    # landed after step 0, R waits while the running prompt takes the whole budget
    assert trace.steps[:4] == [{"L": 64}, {"L": 64}, {"L": 32, "R": 1}, {"L": 1, "R": 1}]


def test_vllm_pulls_and_new_prompts_share_one_fcfs_queue(model_dir):
    # 11 usable blocks: L0 (8) runs; L1 (5 blocks) does not fit and blocks R behind it (2 blocks) too
    stream = [vs.StreamRequest("L0", _prompt(list(range(10, 18))), 2),
              vs.StreamRequest("L1", _prompt(list(range(20, 25))), 2, arrival_step=1),
              vs.StreamRequest("R", _prompt([1, 2]), 2, remote_prefill=True, arrival_step=1)]
    trace = _remote_trace(model_dir, stream, tokens=256, blocks=12)
    start = {rid: i for i, started in enumerate(trace.pulls_started) for rid in started}
    first_l1 = min(i for i, s in enumerate(trace.steps) if "L1" in s)
    assert start["R"] >= first_l1    # R's pull waited for L1's admission (same FCFS queue)


def test_vllm_caches_pulled_blocks_and_pulls_only_what_it_lacks(model_dir):
    stream = [vs.StreamRequest("R1", _prompt([1, 2, 3, 4]), 2, remote_prefill=True),
              vs.StreamRequest("R2", _prompt([1, 2, 3, 5, 6]), 2, remote_prefill=True, arrival_step=6)]
    trace = _remote_trace(model_dir, stream, tokens=256, blocks=100, prefix=True)
    assert trace.pulled_tokens == {"R1": 64, "R2": 32}   # R2 finds R1's first three blocks cached


def test_vllm_starts_no_pull_once_the_token_budget_is_spent(model_dir):
    # blocks are plenty; R arrives at step 1, while L's chunks take the whole budget
    stream = [vs.StreamRequest("L", _prompt(list(range(10, 20))), 2),
              vs.StreamRequest("R", _prompt([1, 2, 3, 4]), 2, remote_prefill=True, arrival_step=1)]
    trace = _remote_trace(model_dir, stream, tokens=64, blocks=100)
    assert trace.steps[:3] == [{"L": 64}, {"L": 64}, {"L": 32}]
    assert trace.pulls_started[1] == [] and trace.pulls_started[2] == ["R"]
