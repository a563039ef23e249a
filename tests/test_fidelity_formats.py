"""``arrow-rl fidelity`` on every run format: per-request runs, vllm bench serve results, disaggregated
deployments, closed-loop clients, and clear errors for malformed input.

The per-request replays shipped with the package (MIT) are used as they are; the formats whose
sources state no licence are written here as small synthetic runs of the same layout.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from arrow_rl.cli import app
from arrow_rl.fidelity.bench_serve import load_bench_result, topology_from_names
from arrow_rl.fidelity.report import compare_runs
from arrow_rl.fidelity.request_runs import load_per_request_run
from arrow_rl.fidelity.runs import RunFormatError, preset_for
from arrow_rl.fidelity.sources import load_runs
from arrow_rl.fidelity.trace_replay import closed_loop_sends, replay_trace
from arrow_rl.fidelity.trace_run import UnsupportedRun

REPLAYS = Path(str(resources.files("arrow_rl.fidelity").joinpath("data", "llmservingsim_replays")))
runner = CliRunner()


def _requests_csv(root: Path, n: int = 60, rate: float = 2.0, legacy: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    starts = 1.7e9 + np.cumsum(rng.exponential(1 / rate, n))
    head = "tenant_id,request_idx,ttft_ms,mean_itl_ms,e2e_ms,num_output_tokens,start_time" if legacy else \
        "tenant_id,request_idx,ttft_ms,tpot_ms,mean_itl_ms,e2e_ms,num_input_tokens,num_output_tokens,start_time"
    lines = [head]
    for i, t in enumerate(starts):
        ttft, tpot = 70.0, 15.0
        e2e = ttft + tpot * 127
        lines.append(f"A,{i},{ttft},14.9,{e2e},128,{t:.3f}" if legacy else
                     f"A,{i},{ttft},{tpot},14.9,{e2e},1024,128,{t:.3f}")
    (root / "requests.csv").write_text("\n".join(lines) + "\n")
    if legacy:
        (root / "summary.json").write_text(json.dumps({"config": {"prompt_tokens": 1024, "model": "Qwen/Qwen3-14B"}}))
    return root


def _server_config(root: Path) -> None:
    (root / "server_config.json").write_text(json.dumps({
        "model": "Qwen/Qwen3-14B", "tensor_parallel_size": 1, "max_num_batched_tokens": 8192,
        "num_gpu_blocks": 18038}))


def _blis_trace(root: Path, n: int = 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "trace.yaml").write_text("trace_version: 3\ntime_unit: us\nmode: real\nserver:\n  type: vllm\n"
                                     "  model: Qwen/Qwen3-14B\n")
    lines = ["request_id,input_tokens,output_tokens,server_input_tokens,arrival_time_us,send_time_us,"
             "first_chunk_time_us,last_chunk_time_us,status"]
    for i in range(n):
        send = 1_000_000 + i * 500_000
        lines.append(f"{i},1024,128,996,{i * 500_000},{send},{send + 80_000},{send + 80_000 + 127 * 15_000},ok")
    (root / "trace.csv").write_text("\n".join(lines) + "\n")
    return root


def _bench(path: Path, **over) -> Path:
    doc = {"model_id": "openai/gpt-oss-120b", "num_prompts": 20, "completed": 20, "request_rate": "inf",
           "burstiness": 1.0, "max_concurrency": 4, "duration": 10.0, "total_input_tokens": 20 * 5000,
           "total_output_tokens": 20 * 250, "request_throughput": 2.0, "mean_ttft_ms": 220.0,
           "mean_tpot_ms": 6.0, "max_concurrent_requests": 4}
    doc.update(over)
    doc = {k: v for k, v in doc.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


# ---- per-request runs ------------------------------------------------------------------------

def test_shipped_replay_is_one_stage_with_the_servers_knobs_and_capacity():
    run = load_runs(REPLAYS / "RTX4090" / "Llama-3.1-8B")[0]
    assert run.kind == "requests-jsonl" and len(run.stages) == 1
    assert (run.max_num_batched_tokens, run.max_num_seqs, run.num_gpu_blocks) == (2048, 256, 2588)
    assert run.input_tokens.size == 300 and not run.api_server
    assert preset_for(run) == "rtx4090-llama3.1-8b-tp1"
    # 300 requests in 30 s on a card that serves ~1.6 req/s: the queue grows through the run
    assert run.stage.saturated
    assert run.arrivals[0] == 0.0 and np.all(np.diff(run.arrivals) >= 0)


def test_replay_uses_the_reported_kv_capacity_and_no_api_server():
    from arrow_rl.fidelity.trace_replay import replay_preset

    run = load_runs(REPLAYS / "RTX4090" / "Llama-3.1-8B")[0]
    p = replay_preset(run, "rtx4090-llama3.1-8b-tp1")
    assert p.kv_capacity_tokens == 2588 * 16
    assert p.latency.frontend_s == 0.0


def test_requests_csv_and_blis_trace_read_with_server_config_from_a_parent(tmp_path):
    _server_config(tmp_path)
    run = load_per_request_run(_requests_csv(tmp_path / "agg_2rps" / "vanilla"))
    assert run.kind == "requests-csv" and run.name == "agg_2rps/vanilla"
    assert (run.model, run.max_num_batched_tokens, run.num_gpu_blocks) == ("Qwen/Qwen3-14B", 8192, 18038)
    assert run.stage.ttft_mean == pytest.approx(0.070) and run.stage.tpot_mean == pytest.approx(0.015)
    assert not run.stage.saturated
    legacy = load_per_request_run(_requests_csv(tmp_path / "agg_5rps" / "vanilla", legacy=True))
    assert np.all(legacy.input_tokens == 1024)
    trace = load_per_request_run(_blis_trace(tmp_path / "w5" / "agg6"))
    assert trace.kind == "blis-trace" and np.all(trace.input_tokens == 996)   # the server's tokenization
    assert trace.stage.ttft_mean == pytest.approx(0.080)
    assert trace.stage.e2e_mean == pytest.approx(0.080 + 127 * 0.015)


def test_per_request_replay_compares_one_stage(tmp_path):
    _server_config(tmp_path)
    run = load_per_request_run(_requests_csv(tmp_path / "r", n=40))
    rep = compare_runs([run], duration_s=10)
    assert len(rep.stages) == 1
    s = rep.stages[0]
    assert s.preset == "h100-qwen3-14b-tp1" and s.sim.finished == s.sim.sent > 0
    # one H100 serves 2 req/s of 1k/128 requests in 1.5-2.5 s each, the first token in < 0.2 s
    assert 1.5 < s.sim.e2e_mean < 2.5 and s.sim.ttft_mean < 0.2 and np.isfinite(s.ape["e2e"])


@pytest.mark.parametrize("write,message", [
    (lambda r: (r / "requests.csv").write_text("tenant_id,ttft_ms\nA,1\n"), r"requests.csv: missing field 'start_time'"),
    (lambda r: (r / "requests.csv").write_text(
        "ttft_ms,e2e_ms,num_input_tokens,num_output_tokens,start_time\n70,abc,1024,128,1.0\n"),
     r"requests.csv line 2: field 'e2e_ms' must be a number, got 'abc'"),
    (lambda r: (r / "requests.csv").write_text(
        "ttft_ms,e2e_ms,num_input_tokens,num_output_tokens,start_time\n70,50,1024,128,1.0\n"),
     r"requests.csv line 2: fields 'ttft_ms' and 'e2e_ms' must satisfy"),
    (lambda r: (r / "requests.csv").write_text("ttft_ms,e2e_ms,num_output_tokens,start_time\n70,900,128,1.0\n"),
     r"requests.csv: missing field 'num_input_tokens'"),
    (lambda r: ((r / "trace.csv").write_text("send_time_us\n1\n"), (r / "trace.yaml").write_text("time_unit: us\n")),
     r"trace.yaml: missing field 'server.model'"),
    (lambda r: ((r / "trace.csv").write_text("send_time_us\n1\n"),
                (r / "trace.yaml").write_text("time_unit: us\nserver: {model: m}\n")),
     r"trace.csv: missing field 'first_chunk_time_us'"),
    (lambda r: (r / "requests.jsonl").write_text('{"input_toks": 1}\n'), r"meta.json: missing"),
])
def test_malformed_per_request_runs_name_the_file_and_field(tmp_path, write, message):
    root = tmp_path / "run"
    root.mkdir()
    _server_config(tmp_path)
    write(root)
    with pytest.raises(RunFormatError, match=message):
        load_runs(root)


def test_malformed_jsonl_record_names_the_line(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    (root / "meta.json").write_text(json.dumps({"engine_kwargs": {"model": "m", "tensor_parallel_size": 1}}))
    (root / "requests.jsonl").write_text('{"input_toks": 5, "output_toks": 3, "queued_ts": 1.0, '
                                         '"first_token_ts": 1.1, "last_token_ts": 1.3}\n{"input_toks": 5}\n')
    with pytest.raises(RunFormatError, match=r"requests.jsonl line 2: missing field 'output_toks'"):
        load_runs(root)


def test_data_and_expert_parallel_replays_are_unsupported(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    (root / "meta.json").write_text(json.dumps({"engine_kwargs": {"model": "Qwen/Qwen3-30B-A3B",
                                                                  "data_parallel_size": 2,
                                                                  "enable_expert_parallel": True}}))
    (root / "requests.jsonl").write_text("")
    with pytest.raises(UnsupportedRun, match="data_parallel_size 2"):
        load_runs(root)


# ---- vllm bench serve ------------------------------------------------------------------------

@pytest.mark.parametrize("name,label", [
    ("gptoss_itl5000_otl250_mixed_pd_p1xtp2-d2xtp2/conc4.json", "1P(TP2)+2D(TP2) nixl"),
    ("gptoss_itl5000_otl250_3ptp2-1dtp2-packed-ucx/rr2.json", "3P(TP2)+1D(TP2) nixl"),
    ("gptoss_itl5000_otl250_mixed_spread_srd_1xtp4-1xtp4/conc8.json", "1P(TP4)+1D(TP4) nixl"),
    ("gptoss_itl5000_otl250_mixed_baseline_4xtp2/conc4.json", "4x colocated TP2"),
    ("ratio_characterization/1p3d_1024x64_rate10_conc32.json", "1P(TP1)+3D(TP1) nixl"),
    ("ratio_characterization/colocated_256x256_rate2_conc32.json", "1x colocated TP1"),
])
def test_topology_from_the_studies_names(tmp_path, name, label):
    assert topology_from_names(tmp_path / name).label() == label


def test_topology_yaml_beside_the_results_wins(tmp_path):
    path = tmp_path / "whatever_4xtp2" / "conc4.json"
    path.parent.mkdir()
    (path.parent / "topology.yaml").write_text("prefill: 2\ndecode: 1\ntp_prefill: 4\n")
    assert topology_from_names(path).label() == "2P(TP4)+1D(TP4) nixl"
    (path.parent / "topology.yaml").write_text("prefill: 2\n")
    with pytest.raises(RunFormatError, match="topology.yaml: give both 'prefill' and 'decode'"):
        topology_from_names(path)


def test_bench_result_closed_loop_and_rate(tmp_path):
    run = load_bench_result(_bench(tmp_path / "gptoss_itl5000_otl250_mixed_baseline_1xtp2" / "conc4.json"))
    assert run.concurrency == 4 and run.rate == float("inf") and run.arrivals is None
    assert np.all(run.input_tokens == 5000) and np.all(run.output_tokens == 250)
    assert run.stage.e2e_mean == pytest.approx(0.220 + 0.006 * 249)
    assert preset_for(run) == "h100-gpt-oss-120b-tp2" and not run.stage.saturated
    rr = load_bench_result(_bench(tmp_path / "x_1xtp2" / "rr2.json", request_rate=2.0, max_concurrency=None,
                                  mean_e2el_ms=1800.0, mean_ttft_ms=9000.0))
    assert rr.rate == 2.0 and rr.concurrency is None and rr.stage.e2e_mean == pytest.approx(1.8)
    assert rr.stage.saturated   # queued for its first token far longer than a prefill takes


def test_bench_result_with_per_request_arrays_replays_the_sends(tmp_path):
    n = 10
    path = _bench(tmp_path / "prefill_stress" / "colocated_4096x256.json", num_prompts=n, completed=n,
                  request_rate=20.0, max_concurrency=16, input_lens=[4096] * n, output_lens=[256] * n,
                  ttfts=[0.5] * n, itls=[[0.02] * 255] * n, start_times=list(100.0 + 0.05 * np.arange(n)),
                  errors=[""] * n)
    run = load_bench_result(path)
    assert run.arrivals is not None and run.arrivals[-1] == pytest.approx(0.45)
    assert run.stage.e2e_mean == pytest.approx(0.5 + 255 * 0.02)


@pytest.mark.parametrize("over,message", [
    (dict(num_prompts=None), r"missing field 'num_prompts'"),
    (dict(mean_ttft_ms="fast"), r"field 'mean_ttft_ms' must be a number, got 'fast'"),
    (dict(completed=30), r"fields 'num_prompts' \(20\) and 'completed' \(30\) disagree"),
    (dict(max_concurrency=None), r"an unlimited request_rate needs field 'max_concurrency'"),
    (dict(model_id=None), r"missing field 'model_id'"),
])
def test_malformed_bench_results_name_the_file_and_field(tmp_path, over, message):
    path = _bench(tmp_path / "a_1xtp2" / "conc4.json", **over)
    with pytest.raises(RunFormatError, match=r"conc4.json: " + message):
        load_bench_result(path)


def test_lmcache_runs_are_unsupported(tmp_path):
    with pytest.raises(UnsupportedRun, match="LMCache"):
        load_bench_result(_bench(tmp_path / "gptoss_itl8000_mixed_gptoss-1p1d-nixl-lmcache" / "conc4.json"))


# ---- closed loop and disaggregation ------------------------------------------------------------

def test_closed_loop_sends_follow_the_earliest_finishes():
    gate = np.zeros(5)
    finish = np.array([3.0, 1.0, 2.0, 10.0, 10.0])
    # two in flight: request 2 goes when the first of 0, 1 ends (1.0); request 3 when the second of
    # 0..2 ends (2.0); request 4 when the third of 0..3 ends (3.0)
    assert list(closed_loop_sends(gate, finish, 2)) == [0.0, 0.0, 1.0, 2.0, 3.0]
    assert list(closed_loop_sends(np.array([0, 0, 5.0, 5.0, 5.0]), finish, 2)) == [0, 0, 5.0, 5.0, 5.0]


def test_closed_loop_replay_never_has_more_than_n_in_flight(tmp_path):
    from arrow_rl.fidelity import trace_replay

    run = load_bench_result(_bench(tmp_path / "q_1xtp2" / "conc4.json", total_input_tokens=20 * 2000))
    seen = {}
    original = trace_replay._simulate

    def spy(run_, preset, name, wl, seed):
        records = original(run_, preset, name, wl, seed)
        seen["records"] = records
        return records

    trace_replay._simulate = spy
    try:
        sim = replay_trace(run, "h100-gpt-oss-120b-tp2")
    finally:
        trace_replay._simulate = original
    recs = seen["records"]
    assert sim.finished == 20
    for r in recs:   # at every send, at most 3 others are still running
        running = sum(1 for o in recs if o.arrival_s <= r.arrival_s < o.finish_s and o is not r)
        assert running <= 3
    assert sum(1 for r in recs if r.arrival_s == 0.0) == 4


def test_disaggregated_bench_run_replays_with_p_and_d_instances(tmp_path):
    co = load_bench_result(_bench(tmp_path / "gptoss_itl5000_otl250_mixed_baseline_1xtp2" / "conc4.json"))
    pd = load_bench_result(_bench(tmp_path / "gptoss_itl5000_otl250_mixed_pd_p1xtp2-d1xtp2" / "conc4.json"))
    rep = compare_runs([co, pd])
    assert [s.topology for s in rep.stages] == ["1x colocated TP2", "1P(TP2)+1D(TP2) nixl"]
    a, b = rep.stages
    # the decode leg runs alone on its instance: its TPOT is no worse than colocated with prefills
    assert b.sim.tpot_mean <= a.sim.tpot_mean


def test_mixed_tp_per_role_is_unsupported_and_skippable(tmp_path):
    run = load_bench_result(_bench(tmp_path / "gptoss_itl5000_otl250_mixed_1xtp1-1xtp2" / "conc4.json"))
    with pytest.raises(UnsupportedRun, match="TP1 and decode at TP2"):
        compare_runs([run], preset="h100-gpt-oss-120b-tp2")
    rep = compare_runs([run], preset="h100-gpt-oss-120b-tp2", skip_unsupported=True)
    assert not rep.stages and "TP1 and decode at TP2" in rep.skipped[0]


# ---- the CLI -------------------------------------------------------------------------------------

def test_cli_reads_every_format_and_keeps_the_json_shape(tmp_path):
    _server_config(tmp_path)
    csv_run = _requests_csv(tmp_path / "r", n=30)
    bench = _bench(tmp_path / "gptoss_itl5000_otl250_mixed_baseline_1xtp2" / "conc4.json")
    out = tmp_path / "f.json"
    res = runner.invoke(app, ["fidelity", str(REPLAYS / "RTXPRO6000" / "Llama-3.1-8B"), str(csv_run),
                              str(bench.parent), "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert [s["format"] for s in doc["stages"]] == ["requests-jsonl", "requests-csv", "bench-serve"]
    for st in doc["stages"]:
        assert set(st) >= {"run", "stage", "preset", "saturated", "real", "sim", "ape"}
        assert set(st["real"]) == set(st["sim"]) == {"ttft_mean", "tpot_mean", "e2e_mean", "throughput_rps"}
    assert set(doc["median_ape"]) == {"ttft", "tpot", "e2e"}


def test_cli_preset_from_a_yaml_file(tmp_path):
    _server_config(tmp_path)
    run = _requests_csv(tmp_path / "r", n=20)
    preset = tmp_path / "mine.yaml"
    preset.write_text("name: my-qwen\ngpu: H100-80GB-SXM\ntp: 1\nmodel:\n  layers: 40\n  hidden: 5120\n"
                      "  heads: 40\n  kv_heads: 8\n  intermediate: 17408\n  vocab: 151936\n")
    out = tmp_path / "f.json"
    res = runner.invoke(app, ["fidelity", str(run), "--preset", str(preset), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["stages"][0]["preset"] == "my-qwen"
    preset.write_text("name: bad\ngpu: H100-80GB-SXM\ntp: 1\nmodel:\n  layers: 40\n")
    res = runner.invoke(app, ["fidelity", str(run), "--preset", str(preset)])
    assert res.exit_code == 2 and "mine.yaml: model: missing field 'hidden'" in res.output


def test_cli_errors_name_the_file(tmp_path):
    bad = tmp_path / "nothing"
    bad.mkdir()
    res = runner.invoke(app, ["fidelity", str(bad)])
    assert res.exit_code == 2 and "not a run folder" in res.output
    res = runner.invoke(app, ["fidelity", str(_bench(tmp_path / "z_1xtp2" / "c.json", mean_tpot_ms=None))])
    assert res.exit_code == 2 and "c.json: missing field 'mean_tpot_ms'" in res.output
    res = runner.invoke(app, ["fidelity", str(bad), "--preset", "h100-nope"])
    assert res.exit_code == 2 and "unknown preset 'h100-nope'" in res.output


def test_failed_requests_in_requests_csv_count_as_sent_not_finished(tmp_path):
    _server_config(tmp_path)
    root = _requests_csv(tmp_path / "r", n=30)
    lines = (root / "requests.csv").read_text().splitlines()
    lines[5] = "A,4,-1.0,0.0,0.0,-1.0,1024,0,1700000003.000"
    (root / "requests.csv").write_text("\n".join(lines) + "\n")
    run = load_per_request_run(root)
    assert (run.stage.sent, run.stage.finished) == (30, 29) and run.stage.saturated
    assert run.output_tokens.min() == 128   # replayed with the run's usual output length


def test_kv_over_tcp_is_unsupported(tmp_path):
    with pytest.raises(UnsupportedRun, match="TCP"):
        load_bench_result(_bench(tmp_path / "gptoss_itl5000_otl250_mixed_spread_tcp_p1xtp4-d1xtp4" / "conc4.json"))


def test_one_token_outputs_leave_tpot_out_of_the_median(tmp_path):
    a = load_bench_result(_bench(tmp_path / "a_1xtp2" / "conc4.json"))
    b = load_bench_result(_bench(tmp_path / "b_1xtp2" / "conc4.json", total_output_tokens=20, mean_tpot_ms=0.0))
    rep = compare_runs([a, b])
    assert np.isfinite(rep.median_ape()["tpot"]) and rep.median_ape()["tpot"] == pytest.approx(rep.stages[0].ape["tpot"])


SILICON_HEAD = ("id,silicon_data_source,backend,backend_version,model_path,system,precision,mode,isl,osl,"
                "gemm_quant_mode,moe_quant_mode,batch_size,tp_size,pp_size,prefill_num_workers,prefill_tp_size,"
                "decode_batch_size,decode_num_workers,decode_tp_size,silicon_ttft_ms,silicon_tpot_ms")


def test_aiconfigurator_rows_are_closed_loop_points(tmp_path):
    from arrow_rl.fidelity.silicon_points import PROMPTS_PER_SLOT

    path = tmp_path / "silicon.csv"
    path.write_text("\n".join([
        SILICON_HEAD,
        "q,src; silicon_concurrency=8,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,,agg,1024,128,,,8,2,1,,,,,,154.2,18.0",
        "l,src,vllm,0.12.0,meta-llama/Llama-3.1-70B,h100_sxm,fp8,agg,1024,1024,fp8,,4,4,1,,,,,,100,20",
        "d,src,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,,disagg,4000,1000,,,,,,1,2,24,3,2,900,11",
        "t,src,trtllm,1.0,Qwen/Qwen3-32B,h100_sxm,,agg,1024,128,,,8,2,1,,,,,,100,10",
    ]) + "\n")
    runs = load_runs(path)
    assert len(runs) == 3                      # vLLM rows only
    q, llama, d = runs
    assert (q.concurrency, q.input_tokens.size, q.tensor_parallelism) == (8, 8 * PROMPTS_PER_SLOT, 2)
    assert q.stage.e2e_mean == pytest.approx(0.1542 + 0.018 * 127)
    assert preset_for(q) == "h100-qwen3-32b-tp2"
    assert llama.model.endswith("[fp8]") and preset_for(llama) is None   # no bf16 preset stands in
    assert d.topology.label() == "1P(TP2)+3D(TP2) nixl" and d.concurrency == 72
    path.write_text(SILICON_HEAD.replace(",silicon_tpot_ms", "") + "\n")
    with pytest.raises(RunFormatError, match="silicon.csv: missing field 'silicon_tpot_ms'"):
        load_runs(path)


def test_a_client_behind_its_schedule_marks_a_trace_saturated(tmp_path):
    root = _blis_trace(tmp_path / "w5" / "agg24", n=40)
    lines = (root / "trace.csv").read_text().splitlines()
    rows = [lines[0]]
    for i, line in enumerate(lines[1:]):   # planned every 0.25 s, sent every 0.5 s: 5 s behind by the end
        f = line.split(",")
        f[4] = str(i * 250_000)
        rows.append(",".join(f))
    (root / "trace.csv").write_text("\n".join(rows) + "\n")
    assert load_per_request_run(root).stage.saturated
    assert not load_per_request_run(_blis_trace(tmp_path / "w5" / "agg6", n=40)).stage.saturated


def test_cli_replays_with_candidate_engine_constants(tmp_path):
    from arrow_rl.perf.engine import engine_constants

    doc = {"constants": {k: v for k, v in vars(engine_constants()).items() if k != "source"}}
    doc["constants"]["frontend_s"] = 0.5
    cand = tmp_path / "cand.json"
    cand.write_text(json.dumps(doc))
    run = str(REPLAYS / "RTXPRO6000" / "Llama-3.1-8B")
    outs = []
    for extra in ([], ["--engine-constants", str(cand)]):
        out = tmp_path / f"f{len(outs)}.json"
        res = runner.invoke(app, ["fidelity", run, "--json", str(out), *extra])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(out.read_text())["stages"][0]["sim"])
    assert outs[0] == outs[1]   # an in-process run has no API server: the frontend constant does not act
    doc["constants"]["bw_efficiency"] = 0.4
    cand.write_text(json.dumps(doc))
    res = runner.invoke(app, ["fidelity", run, "--json", str(tmp_path / "g.json"), "--engine-constants", str(cand)])
    assert json.loads((tmp_path / "g.json").read_text())["stages"][0]["sim"]["tpot_mean"] > outs[0]["tpot_mean"]
    del doc["constants"]["smooth_p"]
    cand.write_text(json.dumps(doc))
    res = runner.invoke(app, ["fidelity", run, "--engine-constants", str(cand)])
    assert res.exit_code == 2 and "missing field 'constants.smooth_p'" in res.output
