"""KV transfers share each instance's NIC bandwidth (issue 10 §4: "KV links are never shared")."""

from __future__ import annotations

import numpy as np
import pytest

from arrow_rl.cluster.emulator import EmulatedCluster, EmulatorConfig
from arrow_rl.cluster.emulator.transfers import SharedNics
from arrow_rl.perf.presets import get_preset
from arrow_rl.workload.workload import Workload

PRESET = "h100-llama3.1-8b-tp1"
B = 1e9   # bytes/s in the unit tests


def test_a_transfer_alone_on_its_nics_gets_the_whole_bandwidth_and_its_exact_time():
    nics = SharedNics(2, B, 0.001)
    ((rid, byte_end, land),) = nics.start(7, 0, 1, 2e9, 1.0, alone_land=1.0 + 0.001 + 2.0)
    assert (rid, land) == (7, 3.001) and byte_end == pytest.approx(3.0)


def test_seven_senders_into_one_receiver_share_its_ingress_equally():
    nics = SharedNics(8, B, 0.0)
    ends = {}
    for src in range(7):
        for rid, end, _ in nics.start(src, src, 7, 1e9, 0.0, alone_land=1.0):
            ends[rid] = end
    assert sorted(ends) == list(range(7))
    assert all(e == pytest.approx(7.0) for e in ends.values())   # 7× one alone (1 s)
    nics.check()


def test_rates_are_max_min_fair_not_an_equal_split():
    # d1 takes three flows (1/3 each); s2 also sends a flow to d2, which gets the 2/3 s2 has left
    nics = SharedNics(6, B, 0.0)
    nics.start(1, 0, 4, 1e9, 0.0, 1.0)        # s0 -> d1(4)
    nics.start(2, 1, 4, 1e9, 0.0, 1.0)        # s1 -> d1
    nics.start(3, 1, 5, 1e9, 0.0, 1.0)        # s1 -> d2(5)
    nics.start(4, 2, 4, 1e9, 0.0, 1.0)        # s2 -> d1
    rates = {rid: x[4] for rid, x in nics.active.items()}
    assert rates[1] == rates[2] == rates[4] == pytest.approx(B / 3)
    assert rates[3] == pytest.approx(2 * B / 3)
    nics.check()


def test_when_a_shared_transfer_finishes_the_others_speed_up():
    nics = SharedNics(3, B, 0.0)
    nics.start(1, 0, 2, 1e9, 0.0, 1.0)
    nics.start(2, 1, 2, 3e9, 0.0, 3.0)        # both at B/2: rid 1 ends at 2 s
    assert nics.active[1][5] == pytest.approx(2.0)
    ((rid, end, _),) = nics.finish_bytes(1, 2.0)
    # rid 2 sent 1e9 by 2 s and sends the remaining 2e9 alone at B: ends at 4 s
    assert rid == 2 and end == pytest.approx(4.0)


class _SevenToOne:
    """Prefill of request i on instance i (0..6); every decode leg goes to instance 7."""

    name = "seven-to-one"

    def reset(self, n):
        pass

    def route_prefill(self, request, ctx):
        return request.request_id % 7

    def route_decode(self, request, prefill_instance, ctx):
        return 7


@pytest.mark.parametrize("senders", [1, 7])
def test_seven_prefill_instances_feeding_one_decode_nic_take_seven_times_as_long(senders):
    p = get_preset(PRESET)
    n_in = 4000
    w = Workload(np.zeros(senders), np.full(senders, n_in), np.full(senders, 3))
    finish = {}
    for sharing in (False, True):
        cfg = EmulatorConfig(preset=PRESET, num_instances=8, num_prefill=7, kv_link_sharing=sharing)
        c = EmulatedCluster(w, cfg, router=_SevenToOne())
        c.audit_every_event = True
        c.run_until_done()
        finish[sharing] = [r.finish_s for r in c.completed()]
    alone = n_in * p.kv_bytes_per_token / p.kv_transfer_bandwidth_Bps
    extra = (senders - 1) * alone      # every byte phase takes `senders` times as long
    for a, b in zip(finish[False], finish[True]):
        assert b - a == pytest.approx(extra, abs=1e-9)
