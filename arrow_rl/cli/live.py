"""``arrow-rl launch | serve | live-profile | deploy | bench``: the live vLLM cluster.

    arrow-rl launch --config configs/live/cpu.yaml --cluster-file cluster.json
    arrow-rl serve --cluster cluster.json [--routing arrow] [--port 8000] [--token T] [--journal J]
    arrow-rl live-profile --cluster cluster.json --out profiles.json
    arrow-rl deploy --controller arrow|static:P|<checkpoint> --router URL [--interval 1s] [--token T]
    arrow-rl bench --router URL --workload TRACE --rate-scale X [--api chat] [--journal J]

The admin token comes from --token or $ARROW_RL_TOKEN (serve generates and prints one if neither).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import signal
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import typer
from rich.markup import escape
from rich.table import Table

from arrow_rl.cli.output import fail, make_console, warn
from arrow_rl.cli.summary_table import print_summary as print_summary_table

console = make_console()
err = make_console(stderr=True)
TOKEN_ENV = "ARROW_RL_TOKEN"


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


def _message(exc: Exception) -> str:
    """One line for a config error (pydantic's multi-line ``ValidationError`` text included)."""
    from pydantic import ValidationError

    from arrow_rl.config_io import format_validation_error

    return format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)


def parse_duration(text: str) -> float:
    """'1s', '500ms', '2.5', '1m' → seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", text or "")
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 1s, 500ms, 2.5)")
    v = float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if v <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return v


def _token(token: Optional[str], required: bool = True) -> Optional[str]:
    t = token or os.environ.get(TOKEN_ENV)
    if required and not t:
        _fail(f"an admin token is required: pass --token or set ${TOKEN_ENV}")
    return t


def _instances_from(cluster: Optional[Path], instance: list[str]) -> list[dict]:
    out: list[dict] = []
    if cluster is not None:
        try:
            data = json.loads(cluster.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, not UTF-8
            _fail(f"{cluster}: cannot read cluster file: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
            _fail(f"{cluster}: expected an object with an 'instances' list")
        out.extend(data["instances"])
    for spec in instance:
        url, _, role = spec.rpartition("=")
        if not url or role not in ("prefill", "decode", "mixed"):
            _fail(f"--instance {spec!r}: expected URL=prefill, URL=decode or URL=mixed")
        out.append({"url": url, "role": role})
    if not out:
        _fail("no instances: give --cluster FILE (from arrow-rl launch) or --instance URL=ROLE")
    return out


# ---------------------------------------------------------------------------------------------
def launch(
    config: Optional[Path] = typer.Option(None, "--config", help="LaunchConfig YAML (configs/live/cpu.yaml, gpu.yaml)"),
    instances: Optional[int] = typer.Option(None, "--instances", help="number of vLLM instances"),
    engine: Optional[str] = typer.Option(None, "--engine", help="vllm-cpu | vllm | fake (stand-ins, no vLLM)"),
    model: Optional[str] = typer.Option(None, "--model", help="model path/id (default: generated tiny dummy Llama)"),
    vllm_python: Optional[str] = typer.Option(None, "--vllm-python", help="python that has vLLM (default: this one)"),
    base_port: Optional[int] = typer.Option(None, "--base-port", help="HTTP port of instance 0 (default 8100)"),
    mixed_instances: Optional[int] = typer.Option(None, "--mixed-instances",
                                                  help="label the last M instances mixed (default 0)"),
    workdir: Path = typer.Option(Path("live-cluster"), "--workdir", help="model config, logs"),
    cluster_file: Path = typer.Option(Path("cluster.json"), "--cluster-file", help="where to write the instance list"),
) -> None:
    """Start N vLLM instances (kv_both + NIXL), wait until healthy, keep them up until Ctrl-C.

    An instance that exits is restarted with back-off (LaunchConfig.max_restarts, restart_backoff_s);
    the others keep serving meanwhile. Only Ctrl-C or SIGTERM stops the launcher."""
    from arrow_rl.cluster.live.config import load_config_file
    from arrow_rl.cluster.live.launcher import LaunchConfig, LaunchError, Launcher

    try:
        cfg = load_config_file(config, LaunchConfig) if config else LaunchConfig()
        upd = {k: v for k, v in {"num_instances": instances, "engine": engine, "model": model,
                                 "python": vllm_python, "base_port": base_port,
                                 "initial_mixed": mixed_instances}.items() if v is not None}
        cfg = LaunchConfig.model_validate({**cfg.model_dump(), **upd})
    except ValueError as exc:
        _fail(_message(exc))
    workdir.mkdir(parents=True, exist_ok=True)
    launcher = Launcher(cfg, workdir)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        launcher.start()
        console.print(f"starting {cfg.num_instances} × {cfg.engine} instances (ports {cfg.base_port}.."
                      f"{cfg.base_port + cfg.num_instances - 1}; logs in {workdir / cfg.log_dir})"
                      + ("" if cfg.engine == "fake" else "; vLLM takes 30-100 s on a CPU host"))
        with console.status(f"starting {cfg.num_instances} × {cfg.engine} instances…") as status:
            last_line = [0.0]

            def waiting(pending: list[int], t: float) -> None:
                # a spinner on a terminal; one line every 15 s into a file or pipe
                news = escape("; ".join(f"{i}: {launcher.last_log_line(i)[-90:]}" for i in pending))
                status.update(f"{cfg.num_instances - len(pending)}/{cfg.num_instances} healthy after {t:.0f} s — {news}")
                if not console.is_terminal and t - last_line[0] >= 15:
                    last_line[0] = t
                    console.print(f"{t:.0f} s: waiting for instance(s) {pending}", highlight=False)

            waited = launcher.wait_healthy(progress=lambda i, t: console.print(f"instance {i} healthy after {t:.1f} s"),
                                           waiting=waiting)
        cluster_file.write_text(json.dumps(launcher.cluster_file(), indent=2), encoding="utf-8")
        console.print(f"all {cfg.num_instances} instances healthy in {waited:.1f} s; instance list in {cluster_file}")
        console.print(f"next: arrow-rl serve --cluster {cluster_file}   (Ctrl-C here stops the instances)")
        pids = [i.process.pid for i in launcher.instances]
        while True:   # supervise until asked to stop: a dead instance is restarted, the others keep serving
            for line in launcher.supervise():
                console.print(line, highlight=False)
            now_pids = [i.process.pid for i in launcher.instances]
            if now_pids != pids:   # the cluster file names the live processes (its URLs do not change)
                pids = now_pids
                cluster_file.write_text(json.dumps(launcher.cluster_file(), indent=2), encoding="utf-8")
            time.sleep(0.5)
    except LaunchError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("stopping instances…")
    finally:
        launcher.stop()


# ---------------------------------------------------------------------------------------------
def serve(
    cluster: Optional[Path] = typer.Option(None, "--cluster", help="instance list written by arrow-rl launch"),
    instance: list[str] = typer.Option([], "--instance", help="URL=prefill|decode|mixed (repeatable)"),
    config: Optional[Path] = typer.Option(None, "--config", help="RouterConfig YAML; options override it"),
    host: Optional[str] = typer.Option(None, "--host", help="bind address (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", help="port (default 8000)"),
    routing: Optional[str] = typer.Option(None, "--routing", help="arrow | arrow-noflip | least-loaded"),
    mixed_policy: Optional[str] = typer.Option(None, "--mixed-policy", help="how requests split between the P/D "
                                               "path and mixed instances: cost | fraction | prompt-threshold"),
    token: Optional[str] = typer.Option(None, "--token", help=f"admin bearer token (or ${TOKEN_ENV}; generated if absent)"),
    journal: Optional[Path] = typer.Option(None, "--journal", help="JSONL request journal"),
    profiles: Optional[Path] = typer.Option(None, "--profiles", help="profiles JSON from arrow-rl live-profile"),
    slo_ttft: Optional[float] = typer.Option(None, "--slo-ttft", help="TTFT SLO, s"),
    slo_tpot: Optional[float] = typer.Option(None, "--slo-tpot", help="TPOT SLO, s"),
) -> None:
    """Run the P/D router (OpenAI API for clients, two-leg NIXL protocol to instances, admin API)."""
    from arrow_rl.cluster.live.config import load_config_file
    from arrow_rl.cluster.live.profiles import load_profiles
    from arrow_rl.serving.config import RouterConfig
    from arrow_rl.serving.httpserver import serve as serve_router
    from arrow_rl.serving.router import Router

    try:
        base = load_config_file(config, RouterConfig).model_dump() if config else {}
        if cluster is not None or instance:
            base["instances"] = _instances_from(cluster, instance)
        upd = {k: v for k, v in {"host": host, "port": port, "routing": routing,
                                 "journal": str(journal) if journal else None,
                                 "profiles": str(profiles) if profiles else None,
                                 "slo_ttft_s": slo_ttft, "slo_tpot_s": slo_tpot}.items() if v is not None}
        if "instances" not in base:
            _instances_from(None, [])
        if mixed_policy is not None:   # the other MixedConfig fields stay as the --config file has them
            from arrow_rl.arrow.mixed import MixedConfig

            upd["mixed"] = MixedConfig.from_mapping({**base.get("mixed", {}), "mixed_policy": mixed_policy},
                                                    "--mixed-policy").model_dump()
        cfg = RouterConfig.model_validate({**base, **upd})
        profs = load_profiles(cfg.profiles) if cfg.profiles else {}
    except ValueError as exc:
        _fail(_message(exc))
    tok = _token(token, required=False)
    if not tok:
        tok = secrets.token_urlsafe(24)
        console.print(f"admin token (pass to deploy with --token or ${TOKEN_ENV}): [bold]{tok}[/bold]")
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/yellow] binding {cfg.host}: the admin API is reachable beyond this host; "
                  "keep the token secret and prefer a TLS-terminating proxy")
    if cfg.routing == "arrow" and not profs:
        err.print("[yellow]warning:[/yellow] no --profiles: Arrow routing uses ordering-only fallback profiles; "
                  "run arrow-rl live-profile first")
    router = Router(cfg, token=tok, profiles=profs)
    mixed = f", mixed split {cfg.mixed.mixed_policy}" if any(i.role.value == "mixed" for i in cfg.instances) else ""
    console.print(f"router on http://{cfg.host}:{cfg.port} → {len(cfg.instances)} instances "
                  f"({', '.join(i.role.value for i in cfg.instances)}), routing {cfg.routing}{mixed}")
    try:
        serve_router(router, cfg.host, cfg.port)
    except OSError as exc:  # the port is taken, the address is not this host's, ...
        _fail(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}")


# ---------------------------------------------------------------------------------------------
def live_profile(
    cluster: Optional[Path] = typer.Option(None, "--cluster", help="instance list written by arrow-rl launch"),
    instance: list[str] = typer.Option([], "--instance", help="URL=ROLE (repeatable)"),
    model: str = typer.Option("tiny", "--model", help="served model name"),
    vocab_size: int = typer.Option(1000, "--vocab-size", help="prompt ids are drawn below this"),
    out: Path = typer.Option(Path("profiles.json"), "--out", help="profile cache to write"),
    lengths: str = typer.Option("64,128,256,512,768", "--lengths", help="prefill prompt lengths"),
    batches: str = typer.Option("1,2,4,8", "--batches", help="decode batch sizes"),
    repeats: int = typer.Option(5, "--repeats", help="timed requests per prompt length (the fit uses their median)"),
) -> None:
    """Measure Arrow §5.2 profiles (T(n), decode interval) on every live instance; cache as JSON."""
    from arrow_rl.cluster.live.profiles import ProfileError, measure_cluster, save_profiles

    insts = _instances_from(cluster, instance)
    try:
        lens = tuple(int(x) for x in lengths.split(","))
        bs = tuple(int(x) for x in batches.split(","))
    except ValueError:
        _fail("--lengths/--batches must be comma-separated integers")
    if len(set(lens)) < 3 or min(lens) < 1:
        _fail(f"--lengths needs at least 3 distinct positive prompt lengths to fit T(n), got {lengths!r}")
    if min(bs) < 1 or max(bs) > 256:
        _fail(f"--batches must be decode batch sizes in 1..256, got {batches!r}")
    if not 10 < vocab_size <= 10_000_000:
        _fail(f"--vocab-size must be in 11..10,000,000, got {vocab_size}")
    if repeats < 1 or repeats > 100:
        _fail(f"--repeats must be in 1..100, got {repeats}")
    t0 = time.time()
    try:
        with console.status("profiling instances (one at a time)…"):
            profs, meta = measure_cluster([i["url"] for i in insts], model, vocab=vocab_size,
                                          prefill_lengths=lens, decode_batches=bs, repeats=repeats)
    except ProfileError as exc:
        _fail(str(exc))
    for w in meta.get("warnings", []):
        warn(w)
    try:
        save_profiles(out, profs, meta)
    except OSError as exc:
        _fail(f"--out: cannot write {out}: {exc.strerror or exc}")
    table = Table(title=f"instance profiles ({time.time() - t0:.1f} s)")
    for col in ("instance", "T(n)=a·n²+b·n+c", "prefill fit", "decode interval = slope·N + intercept"):
        table.add_column(col)
    for i, p in profs.items():
        credible = meta["points"][str(i)]["prefill_credible"]
        table.add_row(str(i), f"a={p.prefill_a:.3g} b={p.prefill_b:.3g} c={p.prefill_c:.3g}",
                      "credible" if credible else "[yellow]not credible[/yellow]",
                      f"slope={p.decode_slope:.3g} intercept={p.decode_intercept * 1000:.2f} ms")
    console.print(table)
    console.print(f"written to {out}")


# ---------------------------------------------------------------------------------------------
def deploy(
    controller: str = typer.Option(..., "--controller", help="arrow | arrow-interval | static:P | dynamo | <checkpoint path>"),
    router: str = typer.Option(..., "--router", help="router URL, e.g. http://127.0.0.1:8000"),
    interval: str = typer.Option("1s", "--interval", help="control interval (1s, 500ms, …)"),
    token: Optional[str] = typer.Option(None, "--token", help=f"admin token (or ${TOKEN_ENV})"),
    steps: Optional[int] = typer.Option(None, "--steps", help="stop after this many intervals (default: until Ctrl-C)"),
    log_file: Optional[Path] = typer.Option(None, "--log", help="also write decisions as JSONL here"),
    act_timeout: Optional[str] = typer.Option(None, "--act-timeout", help="controller time budget (default: the interval)"),
    set_routing: bool = typer.Option(True, "--set-routing/--keep-routing",
                                     help="switch the router to the policy's routing (arrow: Alg. 1 with flips)"),
) -> None:
    """Run a controller against a live cluster; log every decision with its observation."""
    from arrow_rl.cluster.live.cluster import LiveCluster, RouterAPIError
    from arrow_rl.serving.deploy import ClusterUnreachable, run_control_loop
    from arrow_rl.controllers.registry import check_spec, make_policy

    try:
        dt = parse_duration(interval)
        budget = parse_duration(act_timeout) if act_timeout else None
    except ValueError as exc:
        _fail(str(exc))
    try:   # the controller first: a bad checkpoint path fails before the token and the router are needed
        check_spec(controller)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    tok = _token(token)
    try:
        cluster = LiveCluster(router, tok)
    except RouterAPIError as exc:
        _fail(f"{router}: {exc.reason}")
    except Exception as exc:  # noqa: BLE001 - connection problems get one clear line
        _fail(f"cannot reach the router at {router}: {exc}")
    n = cluster.info.num_instances
    try:
        policy = make_policy(controller, n)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if policy.controller is None:
        _fail(f"{controller!r} has no controller to deploy")
    if policy.needs_cluster:   # oracle, mpc: they plan on branches of the emulator, which a live cluster has not
        _fail(f"{controller!r} plans on branches of the emulator (clone): it runs in arrow-rl evaluate, "
              "not on a live cluster")
    for line in _deploy_warnings(controller, cluster.info, policy):
        warn(line)
    _prepare_cluster(cluster, policy, controller, router, set_routing)
    console.print(f"deploying {policy.name} on {n} instances via {router}, every {dt:g} s (Ctrl-C stops)")
    fh = open(log_file, "a", encoding="utf-8", buffering=1) if log_file else None
    log = _decision_printer(fh)
    try:
        stats = run_control_loop(cluster, policy.controller, dt, log=log, steps=steps, act_timeout_s=budget)
        console.print(f"done: {stats.steps} intervals, {stats.flips_applied} flips applied")
    except KeyboardInterrupt:
        console.print("stopped (Ctrl-C); the split stays as it is")
    except ClusterUnreachable as exc:
        _fail(f"router {router}: {exc}")
    finally:
        cluster.close()
        if fh:
            fh.close()


def _prepare_cluster(cluster: Any, policy: Any, controller: str, router: str, set_routing: bool) -> None:
    """Before the first decision: the router gets the policy's routing and a static controller its
    split. A router that fails a setup call gets one clear line, not a traceback."""
    from arrow_rl.cluster.base import Role
    from arrow_rl.cluster.live.cluster import RouterAPIError
    from arrow_rl.cluster.live.splits import flips_to_roles, flips_to_split

    step = "set the routing policy"
    try:
        if set_routing:
            # the live router has its own MixedDispatcher (RouterConfig.mixed): name what this one wraps
            rname = getattr(policy.router, "inner_name", None) or getattr(policy.router, "name", "arrow-noflip")
            if rname in ("arrow", "arrow-noflip", "least-loaded"):
                cluster.admin.set_routing(rname)
        if policy.initial_prefill is not None and controller.startswith("static:"):
            m = policy.initial_mixed
            step = f"apply the initial {policy.initial_prefill}P" + (f":{m}M" if m else "") + " split"
            roles = list(cluster.roles())
            flips = flips_to_roles(roles, policy.initial_prefill, m) if m or Role.MIXED in roles else \
                flips_to_split(roles, policy.initial_prefill)
            if flips:
                cluster.flip_many(flips, source=policy.name)
    except RouterAPIError as exc:
        cluster.close()
        _fail(f"{router}: could not {step}: {exc.reason}")
    except Exception as exc:  # noqa: BLE001 - timeouts and connection errors
        cluster.close()
        _fail(f"{router}: could not {step} ({type(exc).__name__}: {exc}); the control loop did not start")


def _decision_printer(fh: Any) -> Callable[[dict], None]:
    """One console line per decision (roles, load, flips, errors), and the JSONL entry to ``fh``."""

    def log(entry: dict) -> None:
        o = entry["obs"]
        if o is None:
            err.print(f"[{entry['step']:>4}] [red]{entry['error']}[/red]", highlight=False)
            if fh:
                fh.write(json.dumps(entry) + "\n")
            return
        flips = ", ".join(f"{f['id']}→{f['role']}" for f in entry["flips"]) or "-"
        console.print(f"[{entry['step']:>4}] t={entry['t']:8.1f}s roles={''.join(r[0].upper() for r in o['roles'])} "
                      f"arr={o['arrivals']:<4} fin={o['finished']:<4} LP={o['LP'] or 0:.2f} LD={o['LD'] or 0:.2f} "
                      f"flips={flips}" + (f" [red]{entry['error']}[/red]" if entry["error"] else ""), highlight=False)
        if fh:
            fh.write(json.dumps(entry) + "\n")

    return log


def _deploy_warnings(controller: str, info: Any, policy: Any) -> list[str]:
    """Said before the control loop starts: a checkpoint outside its training distribution, and a
    cluster so small that no flip is legal (then no controller can change anything)."""
    out = []
    ckpt = Path(controller)
    min_pool = 1
    if (ckpt / "metadata.json").is_file():
        from arrow_rl.controllers.registry import checkpoint_warnings

        lines = checkpoint_warnings(str(ckpt), num_instances=info.num_instances, slo_ttft_s=info.slo.ttft_s,
                                    slo_tpot_s=info.slo.tpot_s, live=True)
        for line in lines:
            if line.startswith("min_pool_size="):   # the inspector's note of the action encoding
                min_pool = int(line.split("=", 1)[1])
            else:
                out.append(line)
    if info.num_instances < 2 * min_pool + 1:
        out.append(f"with {info.num_instances} instances and a minimum pool size of {min_pool}, no flip is legal "
                   "(it would empty a pool): the controller can only observe; use at least "
                   f"{2 * min_pool + 1} instances to see it act")
    return out


# ---------------------------------------------------------------------------------------------
def print_summary(s: dict[str, Any], title: str) -> None:
    """The same table layout as ``arrow-rl simulate``, so live and emulated runs compare line by line."""
    print_summary_table(console, s, title, ended_label="failed")


def bench(
    router: str = typer.Option(..., "--router", help="router URL"),
    workload: str = typer.Option(..., "--workload", help="trace file or bundled name (azure-conv, …)"),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="multiply the request rate by X (Arrow §6.1)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="only the first N requests"),
    duration: Optional[float] = typer.Option(None, "--duration", help="only requests arriving in the first S seconds (after scaling)"),
    model: str = typer.Option("tiny", "--model", help="served model name"),
    vocab_size: int = typer.Option(1000, "--vocab-size", help="prompt token ids are drawn below this"),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", help="clamp input+output to fit the model"),
    slo_ttft: float = typer.Option(2.0, "--slo-ttft", help="TTFT SLO, s"),
    slo_tpot: float = typer.Option(0.1, "--slo-tpot", help="TPOT SLO, s"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="seed of the prompt token ids"),
    journal: Optional[Path] = typer.Option(None, "--journal", help="JSONL journal of client-side records"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the summary as JSON"),
    api: str = typer.Option("completions", "--api", help="completions (token-id prompts) | chat (word messages)"),
) -> None:
    """Replay a trace against the router and print the same summary table as simulate."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from arrow_rl.cluster.base import SLO
    from arrow_rl.cluster.live.bench import BenchOptions, replay, shape_requests
    from arrow_rl.metrics.summary import summarize
    from arrow_rl.workload.loaders import load_workload

    if not rate_scale > 0 or not math.isfinite(rate_scale):
        _fail(f"--rate-scale must be a positive number, got {rate_scale}")
    try:
        wl = load_workload(workload).scaled(rate_scale)
        slo = SLO(slo_ttft, slo_tpot)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    if duration is not None:
        wl = wl.window(float(wl.arrival_s[0]) if len(wl) else 0.0, float(wl.arrival_s[0]) + duration if len(wl) else duration)
    if limit is not None:
        wl = wl.head(limit)
    if len(wl) == 0:
        _fail("the workload has no requests (check --limit/--duration)")
    if api not in ("completions", "chat"):
        _fail(f"--api must be completions or chat, got {api!r}")
    for name, val in (("--slo-ttft", slo_ttft), ("--slo-tpot", slo_tpot)):
        if not (val > 0 and math.isfinite(val)):
            _fail(f"{name} must be a positive number of seconds, got {val}")
    _check_router_health(router)
    opts = BenchOptions(model=model, vocab_size=vocab_size, max_model_len=max_model_len, seed=seed, api=api)
    _, _, clamped = shape_requests(wl, opts)
    if clamped:
        err.print(f"note: {clamped} of {len(wl)} requests clamped to max_model_len={max_model_len}")
    t0 = time.time()
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as prog:
        task = prog.add_task(f"replaying {wl.name}", total=len(wl))
        try:
            records = asyncio.run(replay(router, wl, opts, journal=journal, progress=lambda k: prog.advance(task, k)))
        except KeyboardInterrupt:
            _fail("interrupted")
    s = summarize(records, slo=slo, num_offered=len(wl))
    s["wall_seconds"] = time.time() - t0
    print_summary(s, f"{wl.name} on live cluster {router}")
    if json_out:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}
        json_out.write_text(json.dumps(clean, indent=2), encoding="utf-8")
        console.print(f"summary written to {json_out}")
    failed = [r for r in records if r.rejected]
    if records and len(failed) == len(records):
        # a run where nothing was served measured nothing: say why and fail, so scripts notice
        _fail(f"all {len(records)} requests failed (first error: {failed[0].reject_reason})", code=1)


def _check_router_health(router: str) -> None:
    """Fail with one line before replaying anything when the router does not answer ``/health``."""
    import httpx

    if not re.match(r"^https?://", router):
        _fail(f"--router must be an http(s) URL, got {router!r}")
    try:
        r = httpx.get(router.rstrip("/") + "/health", timeout=5.0)
    except (httpx.HTTPError, ValueError) as exc:
        _fail(f"cannot reach the router at {router} ({type(exc).__name__}: {exc})")
    if r.status_code != 200:
        _fail(f"router at {router}: /health answered HTTP {r.status_code}; is it an arrow-rl router with live instances?")


def register(app: typer.Typer) -> None:
    app.command("launch")(launch)
    app.command("serve")(serve)
    app.command("live-profile")(live_profile)
    app.command("deploy")(deploy)
    app.command("bench")(bench)
