"""Scraper: parsing vLLM's exposition, windowed counter/histogram deltas, counter resets."""

from __future__ import annotations

import math

import pytest

from arrow_rl.cluster.live.scraper import (
    counter_delta, histogram_window, instance_window, kv_capacity_tokens, parse_metrics,
)

BODY = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="tiny"}} {running}
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="tiny"}} 3.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="tiny"}} 0.25
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{{block_size="128",num_gpu_blocks="8192"}} 1.0
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{{engine="0",model_name="tiny"}} {prompt}
vllm:prompt_tokens_created{{engine="0",model_name="tiny"}} {created}
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{{engine="0",model_name="tiny"}} {gen}
# TYPE vllm:prompt_tokens_by_source counter
vllm:prompt_tokens_by_source_total{{engine="0",model_name="tiny",source="external_kv_transfer"}} {ext}
vllm:prompt_tokens_by_source_total{{engine="0",model_name="tiny",source="local_compute"}} 5.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.01",model_name="tiny"}} {b1}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.1",model_name="tiny"}} {b2}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="tiny"}} {b2}
vllm:time_to_first_token_seconds_count{{engine="0",model_name="tiny"}} {b2}
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="tiny"}} {tsum}
vllm:time_to_first_token_seconds_created{{engine="0",model_name="tiny"}} {created}
"""


def body(running=1.0, prompt=100.0, gen=50.0, ext=0.0, b1=0.0, b2=0.0, tsum=0.0, created=1000.0):
    return BODY.format(running=running, prompt=prompt, gen=gen, ext=ext, b1=b1, b2=b2, tsum=tsum, created=created)


def test_parse_reads_gauges_and_capacity():
    s = parse_metrics(body(running=4))
    assert s.value("vllm:num_requests_running") == 4
    assert s.value("vllm:kv_cache_usage_perc") == 0.25
    assert kv_capacity_tokens(s) == 8192 * 128


def test_parse_rejects_garbage_with_a_clear_error():
    with pytest.raises(ValueError, match="unparseable /metrics"):
        parse_metrics("vllm:foo{bad 1 2 3\n")


def test_counter_delta_is_the_difference_between_scrapes():
    a, b = parse_metrics(body(prompt=100)), parse_metrics(body(prompt=740))
    assert counter_delta(a, b, "vllm:prompt_tokens_total") == 640


def test_counter_reset_counts_from_zero():
    a, b = parse_metrics(body(prompt=1000)), parse_metrics(body(prompt=30))
    assert counter_delta(a, b, "vllm:prompt_tokens_total") == 30


def test_restart_detected_by_created_timestamp_even_if_value_grew():
    a = parse_metrics(body(prompt=10, created=1000))
    b = parse_metrics(body(prompt=40, created=2000))
    assert counter_delta(a, b, "vllm:prompt_tokens_total") == 40


def test_counter_filtered_by_label():
    a, b = parse_metrics(body(ext=0)), parse_metrics(body(ext=600))
    assert counter_delta(a, b, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer") == 600


def test_histogram_window_mean_and_quantile():
    a = parse_metrics(body(b1=2, b2=4, tsum=0.1))
    b = parse_metrics(body(b1=2, b2=14, tsum=0.6))  # 10 new samples, all in (0.01, 0.1]
    h = histogram_window(a, b, "vllm:time_to_first_token_seconds")
    assert h.count == 10 and h.mean == pytest.approx(0.05)
    assert 0.01 < h.quantile(0.5) <= 0.1


def test_histogram_reset_uses_the_new_process_values():
    a = parse_metrics(body(b1=5, b2=50, tsum=3.0))
    b = parse_metrics(body(b1=1, b2=2, tsum=0.03))
    h = histogram_window(a, b, "vllm:time_to_first_token_seconds")
    assert h.count == 2 and h.mean == pytest.approx(0.015)


def test_empty_window_histogram_mean_is_nan():
    a = parse_metrics(body(b2=3, tsum=0.1))
    assert math.isnan(histogram_window(a, a, "vllm:time_to_first_token_seconds").mean)


def test_instance_window_collects_the_controller_signals():
    m = instance_window(parse_metrics(body(prompt=0, gen=0)), parse_metrics(body(prompt=300, gen=20, ext=256)))
    assert (m.prompt_tokens, m.generation_tokens, m.external_kv_tokens) == (300, 20, 256)
    assert m.waiting == 3 and m.kv_usage == 0.25 and not m.restarted
    assert instance_window(parse_metrics(body(gen=99)), parse_metrics(body(gen=1))).restarted


def test_quick_kv_reads_usage_and_capacity_like_the_full_parser():
    from arrow_rl.cluster.live.scraper import quick_kv

    text = body()
    snap = parse_metrics(text)
    assert quick_kv(text) == (snap.value("vllm:kv_cache_usage_perc"), kv_capacity_tokens(snap))
    assert quick_kv("") == (0.0, 0)


def test_window_scrapes_every_instance_at_once_and_a_stalled_one_yields_none():
    # Each /metrics answer waits until both instances are being scraped: scraped one after another,
    # the barrier would break and every window would be None. The third instance never answers.
    import threading

    from arrow_rl.cluster.live.scraper import Scraper

    barrier = threading.Barrier(2, timeout=10)

    class Client:
        def get(self, url):
            if "c:" in url:
                raise TimeoutError("stalled")
            barrier.wait()
            return type("R", (), {"text": body(), "raise_for_status": lambda self: None})()

        def close(self):
            pass

    scraper = Scraper(["http://a:1", "http://b:1", "http://c:1"], client=Client())
    first = scraper.window()
    assert first[0] is not None and first[1] is not None and first[2] is None
    scraper.close()


def test_a_slow_scrape_never_holds_the_window_and_serves_the_next_one():
    """The control loop decides on the last complete data: a window waits at most wait_s, the
    slow instance's scrape finishes in the background and its snapshot is used by a later window;
    its lateness is reported meanwhile."""
    import threading
    import time

    from arrow_rl.cluster.live.scraper import Scraper

    release = threading.Event()
    calls = {"b": 0}

    class Client:
        def get(self, url):
            if "b:" in url:
                calls["b"] += 1
                if calls["b"] == 2:   # the second scrape of b hangs until released
                    release.wait(10)
            return type("R", (), {"text": body(gen=50.0 * calls["b"] + 50), "raise_for_status": lambda self: None})()

        def close(self):
            pass

    scraper = Scraper(["http://a:1", "http://b:1"], client=Client())
    assert all(w is not None for w in scraper.window(wait_s=5))     # baseline
    t0 = time.monotonic()
    w = scraper.window(wait_s=0.2)
    assert time.monotonic() - t0 < 2 and w[0] is not None and w[1] is None
    assert scraper.lateness_s["http://b:1"] > 0 and scraper.lateness_s["http://a:1"] == 0 and scraper.late_windows == 1
    time.sleep(0.1)
    w = scraper.window(wait_s=0.2)     # still hung: not scraped twice, still late
    assert w[1] is None and calls["b"] == 2
    release.set()
    time.sleep(0.2)
    w = scraper.window(wait_s=2)       # the late snapshot is complete now: it serves this window
    assert w[1] is not None and w[1].generation_tokens == 50.0 and scraper.lateness_s["http://b:1"] == 0
    scraper.close()
