"""Presets: names, KV facts and capacity, transfer model."""

from __future__ import annotations

import pytest

from arrow_rl.perf.model import LatencyModel
from arrow_rl.perf.presets import get_preset, list_presets

REQUIRED = ["h100-llama2-7b-tp1", "h100-llama2-70b-tp4", "h100-llama3.1-8b-tp1",
            "h100-llama3.1-70b-tp4", "a100-llama3-8b-tp1", "a100-llama3-70b-tp4"]


def test_all_required_presets_are_listed_and_load():
    assert set(REQUIRED) <= set(list_presets())
    for name in REQUIRED:
        p = get_preset(name)
        assert p.name == name
        assert isinstance(p.latency, LatencyModel)


def test_unknown_preset_error_lists_valid_names():
    with pytest.raises(ValueError) as exc:
        get_preset("h100-gpt5-tp1")
    assert "h100-gpt5-tp1" in str(exc.value)
    for name in REQUIRED:
        assert name in str(exc.value)


@pytest.mark.parametrize("name,kib", [("h100-llama3.1-8b-tp1", 128), ("a100-llama3-8b-tp1", 128),
                                      ("h100-llama3.1-70b-tp4", 320), ("a100-llama3-70b-tp4", 320),
                                      ("h100-llama2-70b-tp4", 320), ("h100-llama2-7b-tp1", 512)])
def test_kv_bytes_per_token_match_model_configs(name, kib):
    # KV bytes per token = 2 (K and V) x layers x kv_heads x head_dim x 2 B (fp16), from each model's config.json
    assert get_preset(name).kv_bytes_per_token == kib * 1024


@pytest.mark.parametrize("name,lo,hi", [
    ("h100-llama2-7b-tp1", 100_000, 130_000),     # (72 GiB - 13.5 GB - 2 GiB) / 512 KiB
    ("h100-llama3.1-8b-tp1", 400_000, 500_000),   # 128 KiB/token
    ("h100-llama2-70b-tp4", 400_000, 560_000),    # 4 x 72 GiB - 138 GB over 320 KiB
    ("a100-llama3-70b-tp4", 400_000, 560_000),
])
def test_kv_capacity_positive_and_plausible(name, lo, hi):
    p = get_preset(name)
    assert lo <= p.kv_capacity_tokens <= hi
    assert p.kv_capacity_tokens % p.block_size == 0


def test_kv_capacity_grows_with_gpu_memory_utilization():
    lo = get_preset("h100-llama3.1-8b-tp1", gpu_memory_utilization=0.5).kv_capacity_tokens
    hi = get_preset("h100-llama3.1-8b-tp1", gpu_memory_utilization=0.95).kv_capacity_tokens
    assert 0 < lo < hi


def test_utilization_too_small_for_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="weights"):
        get_preset("h100-llama2-70b-tp4", gpu_memory_utilization=0.3)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        get_preset("h100-llama2-7b-tp1", gpu_memory_utilization=1.5)


def test_max_model_len_never_exceeds_kv_capacity():
    for name in list_presets():
        p = get_preset(name)
        assert 0 < p.max_model_len <= p.kv_capacity_tokens


def test_kv_transfer_time_is_latency_plus_bytes_over_bandwidth():
    p = get_preset("h100-llama3.1-8b-tp1")
    t0 = p.kv_transfer_time(0)
    t2k = p.kv_transfer_time(2048)
    assert t0 == pytest.approx(p.kv_transfer_latency_s)
    assert t2k - t0 == pytest.approx(2048 * 128 * 1024 / p.kv_transfer_bandwidth_Bps)


def test_tp4_instance_moves_kv_faster_than_tp1_per_byte():
    # one NIC per GPU: a TP4 instance has four times the NICs of a TP1 instance
    assert (get_preset("h100-llama3.1-70b-tp4").kv_transfer_bandwidth_Bps
            == pytest.approx(4 * get_preset("h100-llama3.1-8b-tp1").kv_transfer_bandwidth_Bps))
