"""``arrow-rl suite run``: rank controllers across a scenario suite with seeds and intervals.

    arrow-rl suite run --suite standard|PATH.yaml --controllers arrow,static-tuned,colocated,...
        [--quick] [--jobs N | --backend ray [--ray-address ADDR]] --json OUT [--plots DIR]
        [--markdown docs/leaderboard.md]
    arrow-rl suite report --json A.json [--json B.json ...] [--markdown ...] [--update-readme README.md]
    arrow-rl suite compare --json NEW.json --json docs/leaderboard.json --reference agents/checkpoints/default
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from arrow_rl.cli.backend import address_option, backend_option, check_backend
from arrow_rl.cli.output import fail, make_console

console = make_console()
suite_app = typer.Typer(help="Scenario suites: rank controllers with seeds and 95% intervals.", no_args_is_help=True)
QUICK_CONTROLLERS = "arrow,static-tuned,colocated"
FULL_CONTROLLERS = "arrow,static-tuned,static-oracle,colocated,dynamo"


def _fail(message: str) -> NoReturn:
    fail(message)


def register(app: typer.Typer) -> None:
    app.add_typer(suite_app, name="suite")


@suite_app.command("run")
def run_command(
    suite: str = typer.Option("standard", "--suite", help="a shipped suite name (standard) or a suite YAML path"),
    controllers: Optional[str] = typer.Option(
        None, "--controllers",
        help="comma list: arrow, arrow-interval, colocated, static:P, static:P:D:M, static-tuned (the split a "
             "deployer would fix, cross-fitted on other seeds), static-oracle (per-seed hindsight best split: not "
             "deployable), dynamo, oracle (clairvoyant: not deployable), mpc (the oracle's search on a "
             "forecast of the recent past: deployable), or checkpoint "
             f"paths (default: {FULL_CONTROLLERS}; with --quick: {QUICK_CONTROLLERS})"),
    quick: bool = typer.Option(False, "--quick", help="the suite's quick protocol (shorter spans, coarser search)"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="parallel worker processes (one (scenario, controller) each)"),
    json_out: Path = typer.Option(..., "--json", help="write results as JSON"),
    plots: Optional[Path] = typer.Option(None, "--plots", help="directory for suite_serving_rate.png"),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="write the leaderboard Markdown here"),
    only: Optional[str] = typer.Option(None, "--scenarios", help="comma list: run only these scenarios"),
    rate_mode: Optional[str] = typer.Option(None, "--rate-mode", help="override the suite's rate mode: scale or superpose"),
    warmup: Optional[float] = typer.Option(None, "--warmup", min=0.0,
                                           help="override the suite's warm-up (s, served not counted; default 120)"),
    update_readme: Optional[Path] = typer.Option(
        None, "--update-readme", help="rewrite the leaderboard block (between its markers) of this Markdown file"),
    backend: str = backend_option(),
    ray_address: Optional[str] = address_option(),
) -> None:
    """Measure each controller's serving rate on every scenario (independent seeds, common loads) and compare
    them in pairs (per-seed ratios, 95% CI, Holm-corrected verdicts)."""
    check_backend(backend, ray_address)
    if update_readme is not None and "leaderboard:summary:start" not in _read(update_readme):
        _fail(f"--update-readme {update_readme}: the file has no <!-- leaderboard:summary:start --> block")
    s = _selected_suite(suite, quick, rate_mode, warmup, only)
    names = [c.strip() for c in (controllers or (QUICK_CONTROLLERS if quick else FULL_CONTROLLERS))
             .split(",") if c.strip()]
    console.print(f"[bold]suite {s.name}[/bold]{' (quick)' if quick else ''}: {len(s.scenarios)} scenarios x "
                  f"{len(names)} controllers, seeds {list(s.protocol.seeds)}, rate mode {s.protocol.rate_mode}, "
                  f"warm-up {s.protocol.warmup_s:g} s, tolerance {100 * s.protocol.rel_tol:g}%; "
                  + (f"Ray ({ray_address or 'local'})" if backend == "ray" else f"{jobs} process(es)"))
    result = run_with_progress(s, names, jobs=jobs, quick=quick, backend=backend, ray_address=ray_address)
    result.settings.update(scenarios=[sc.name for sc in s.scenarios] if only else None,
                           rate_mode=rate_mode, warmup_s=warmup)
    publish(result, names, json_out, plots, markdown, update_readme)


def _selected_suite(suite: str, quick: bool, rate_mode: Optional[str], warmup: Optional[float],
                    only: Optional[str]):  # noqa: ANN202 - Suite (lazy import)
    """The suite to run: loaded, its protocol overridden by ``--rate-mode`` / ``--warmup``, cut to
    ``--scenarios``; any mistake is one error line."""
    from arrow_rl.evaluation.suite_spec import SuiteError, load_suite

    try:
        s = load_suite(suite, quick=quick)
    except SuiteError as exc:
        _fail(str(exc))
    if rate_mode is not None or warmup is not None:
        if rate_mode not in (None, "scale", "superpose"):
            _fail(f"--rate-mode must be scale or superpose, got {rate_mode!r}")
        s = _override(s, rate_mode, warmup)
    if only:
        wanted = [x.strip() for x in only.split(",") if x.strip()]
        unknown = sorted(set(wanted) - {sc.name for sc in s.scenarios})
        if unknown:
            _fail(f"--scenarios: unknown scenario(s) {', '.join(unknown)}; suite {s.name} has "
                  + ", ".join(sc.name for sc in s.scenarios))
        s = type(s)(s.name, s.path, s.description, [sc for sc in s.scenarios if sc.name in wanted], s.protocol)
    return s


def run_with_progress(s: Any, names: list[str], *, jobs: int, backend: str, ray_address: Optional[str],
                      quick: bool = False, arrow_config: Any = None, name_scenarios: bool = True) -> Any:
    """``run_suite`` under a progress bar that advances once per (scenario, controller) job and names
    the simulation running now (and its scenario, with ``name_scenarios``); without a terminal (logs,
    CI) one line per finished job. A run refused before any job (an unknown controller, a renamed
    one) fails with its one line."""
    from arrow_rl.evaluation.seeded_search import STATIC_FAMILY
    from arrow_rl.evaluation.suite import run_suite

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        jobs_per_scenario = len(set(n for n in names if n not in STATIC_FAMILY)) + any(n in STATIC_FAMILY for n in names)
        task = bar.add_task("jobs", total=len(s.scenarios) * jobs_per_scenario)

        def on_run(scenario: str, spec: str, rate: float, att: float) -> None:
            where = f"{scenario} " if name_scenarios else ""
            bar.update(task, description=f"{where}{spec} @ {rate:.3g} req/s: {100 * att:.0f}%")

        def on_job_done(scenario: str, controller: str, wall: float) -> None:
            bar.update(task, advance=1)
            if not console.is_terminal:  # logs and CI: one line per finished job, the bar shows only at the end
                console.print(f"done {f'{scenario} / ' if name_scenarios else ''}{controller} in {wall:.0f} s")
                console.file.flush()  # a redirected stdout is block-buffered: a long run's log would stay empty

        error = None
        try:
            result = run_suite(s, names, jobs=jobs, quick=quick, on_job_done=on_job_done, on_run=on_run,
                               backend=backend, ray_address=ray_address, arrow_config=arrow_config)
            bar.update(task, description="done")
        except ValueError as exc:  # refused before any job ran: no empty progress line under the error
            bar.remove_task(task)
            error = str(exc)
    if error is not None:
        _fail(error)
    return result


@suite_app.command("report")
def report_command(
    json_in: list[Path] = typer.Option(..., "--json", help="a suite result written by `arrow-rl suite run --json`; "
                                       "repeat it to merge results of other controllers on the same suite and protocol"),
    suite: Optional[str] = typer.Option(None, "--suite", help="the suite it ran (default: the name recorded in the JSON)"),
    plots: Optional[Path] = typer.Option(None, "--plots", help="directory for suite_serving_rate.png"),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="write the leaderboard Markdown here"),
    update_readme: Optional[Path] = typer.Option(
        None, "--update-readme", help="rewrite the leaderboard block (between its markers) of this Markdown file"),
    json_out: Optional[Path] = typer.Option(None, "--out", help="write the (merged) result as JSON here"),
    replace: bool = typer.Option(False, "--replace", help="when merging, a later file's (scenario, controller) "
                                 "cell replaces an earlier one's (a checkpoint re-run at the same path)"),
) -> None:
    """Render a saved suite result again (tables, plot, Markdown, README block) without re-running it."""
    if update_readme is not None and "leaderboard:summary:start" not in _read(update_readme):
        _fail(f"--update-readme {update_readme}: the file has no <!-- leaderboard:summary:start --> block")
    result = _load_result(json_in, suite, replace)
    publish(result, result.controllers, json_out, plots, markdown, update_readme)


@suite_app.command("compare")
def compare_command(
    json_in: list[Path] = typer.Option(..., "--json", help="suite results (`suite run --json`); repeat it to merge, "
                                       "e.g. a new run of candidates with docs/leaderboard.json"),
    reference: str = typer.Option(..., "--reference", help="the controller to beat, e.g. agents/checkpoints/default"),
    candidates: Optional[str] = typer.Option(
        None, "--candidates", help="comma list of controllers to judge (default: every one but the reference and arrow)"),
    pool: bool = typer.Option(False, "--pool", help="the candidates are one recipe's checkpoints (one per training "
                              "seed, at least 3): judge their pooled rates (geometric mean per scenario and seed)"),
    split: str = typer.Option("train", "--split", help="the scenarios to judge on: train, test or all. Choosing a "
                              "checkpoint by the test split makes its test figures in-sample"),
    suite: Optional[str] = typer.Option(None, "--suite", help="the suite it ran (default: the name recorded in the JSON)"),
    replace: bool = typer.Option(False, "--replace", help="when merging, a later file's cell replaces an earlier one's"),
) -> None:
    """Judge candidates against a reference by the model-selection rule (non-inferiority): on every scenario
    of the split the paired ratio's 95% lower bound is above 0.97, the geomean ratio's interval lies above 1.0,
    and a recipe is judged over at least 3 training seeds (--pool)."""
    from arrow_rl.evaluation.compare import MARGIN, compare

    if split not in ("train", "test", "all"):
        _fail(f"--split must be train, test or all, got {split!r}")
    result = _load_result(json_in, suite, replace)
    names = ([c.strip() for c in candidates.split(",") if c.strip()] if candidates
             else [c for c in result.controllers if c not in (reference, "arrow")])
    if not names:
        _fail("no candidates: the result holds only the reference and arrow; name them with --candidates")
    try:
        groups = [names] if pool else [[c] for c in names]
        comparisons = [compare(result, g if pool else g[0], reference, None if split == "all" else split)
                       for g in groups]
    except ValueError as exc:
        _fail(str(exc))
        return
    for cmp in comparisons:
        table = Table(title=f"{cmp.candidate} vs {cmp.reference} ({split} scenarios; req/s mean [95% CI]; "
                            f"paired ratio [95% CI], non-inferior if its lower bound > {MARGIN:g})")
        for col in ("scenario", "candidate", "reference", "paired ratio", "verdict", "flips/min"):
            table.add_column(col, justify="left" if col in ("scenario", "verdict") else "right")
        for cell in cmp.cells:
            p = cell.paired
            table.add_row(cell.scenario, _iv(cell.candidate), _iv(cell.reference),
                          f"{p.ratio:.3f} [{p.lo:.3f}, {p.hi:.3f}]", cell.verdict, f"{cell.flips_per_min:.1f}")
        console.print(table)
        g, lo, hi = cmp.geomean
        console.print(f"geomean ratio to the reference: {g:.3f}x [{lo:.3f}, {hi:.3f}] over {len(cmp.cells)} scenario(s), "
                      f"{cmp.training_seeds} training seed(s): "
                      + ("[bold]meets the rule[/bold]" if cmp.meets_rule else
                         "does not meet the rule (" + "; ".join(cmp.failures) + ")"))


def _iv(iv) -> str:  # noqa: ANN001 - Interval
    hi = f"{iv.hi:.3g}" if math.isfinite(iv.hi) else "inf"
    return f"{iv.mean:.3g} [{iv.lo:.3g}, {hi}]"


def _load_result(json_in: list[Path], suite: Optional[str], replace: bool):  # noqa: ANN202 - SuiteResult (lazy import)
    """Read (and merge) saved suite results and rebuild them against the suite's scenarios."""
    from arrow_rl.evaluation.suite import result_from_json
    from arrow_rl.evaluation.suite_spec import SuiteError, load_suite

    payloads = []
    for path in json_in:
        try:
            payload = json.loads(_read(path, "--json"))
        except json.JSONDecodeError as exc:
            _fail(f"--json {path}: not JSON ({exc})")
        if not isinstance(payload, dict):
            _fail(f"--json {path}: not an arrow-rl suite result (top level is not an object)")
        payloads.append((payload, f"--json {path}"))
    source = payloads[0][1]
    if len(payloads) > 1:
        from arrow_rl.evaluation.suite import merge_result_payloads

        try:
            payload = merge_result_payloads(payloads, replace=replace)
        except ValueError as exc:
            _fail(str(exc))
        source = "the merged --json files"
    try:
        s = load_suite(suite or str(payload.get("suite", "standard")), quick=bool(payload.get("quick", False)))
        recorded = payload.get("settings") or {}
        if recorded.get("rate_mode") is not None or recorded.get("warmup_s") is not None:
            s = _override(s, recorded.get("rate_mode"), recorded.get("warmup_s"))
        result = result_from_json(payload, s, source=source)
    except (SuiteError, ValueError, KeyError, TypeError) as exc:
        _fail(str(exc) if not isinstance(exc, (KeyError, TypeError)) else
              f"{source}: not an arrow-rl suite result ({type(exc).__name__}: {exc})")
    return result


def publish(result, names: list[str], json_out: Optional[Path], plots: Optional[Path],  # noqa: ANN001 - SuiteResult (lazy import)
            markdown: Optional[Path], update_readme: Optional[Path]) -> None:
    """Print the tables and write whichever outputs were asked for."""
    from arrow_rl.evaluation.leaderboard import plot_suite, update_marked_block, write_markdown

    _print_rates(result, names)
    _print_paired(result, names)
    _print_summary(result)
    payload = result.to_json()
    if plots is not None and "arrow" in result.controllers and len(result.controllers) > 1:
        payload["plots"] = [str(plot_suite(result, plots / "suite_serving_rate.png"))]
        console.print("plot: " + payload["plots"][0])
    if markdown is not None:
        console.print(f"wrote {write_markdown(result, markdown)}")
    if update_readme is not None:
        console.print(f"updated {update_marked_block(update_readme, result, str(markdown) if markdown else None)}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2, default=_json_default), encoding="utf-8")
        console.print(f"wrote {json_out}")


def _print_rates(result, names: list[str]) -> None:  # noqa: ANN001 - SuiteResult (lazy import)
    from arrow_rl.evaluation.leaderboard import controller_label, outcome_cell

    s = result.suite
    table = Table(title=f"Serving rate (req/s, mean ± 95% CI over {len(s.protocol.seeds)} seeds) — suite {s.name}")
    table.add_column("scenario")
    table.add_column("split")
    for c in names:
        table.add_column(controller_label(c), justify="right")
    table.add_column("winner")
    for name, sc in result.scenarios.items():
        table.add_row(name + (" †" if sc.short_span else ""), sc.scenario.split,
                      *[outcome_cell(sc, c, with_split=False) for c in names], sc.verdict)
    console.print(table)


def _print_paired(result, names: list[str]) -> None:  # noqa: ANN001 - SuiteResult (lazy import)
    from arrow_rl.evaluation.leaderboard import controller_label, paired_cell

    others = [c for c in names if c != "arrow"]
    if "arrow" not in names or not others:
        return
    paired = Table(title="Paired ratio to Arrow (same seeds and loads): ratio [95% CI], ▲ win ▼ loss = tie "
                         "(Holm-corrected within each split)")
    paired.add_column("scenario")
    for c in others:
        paired.add_column(controller_label(c), justify="right")
    for name, sc in result.scenarios.items():
        paired.add_row(name, *[paired_cell(sc.paired.get(c, {}).get("arrow")) for c in others])
    console.print(paired)


def _print_summary(result) -> None:  # noqa: ANN001 - SuiteResult (lazy import)
    from arrow_rl.evaluation.leaderboard import controller_label, summary_ratio_cell

    summary = Table(title="Summary (W/T/L: paired verdicts against the best deployable rival; vs Arrow)")
    for col in ("split", "controller", "geomean ratio to arrow [95% CI]", "W/T/L", "vs arrow W/T/L", "n/a"):
        summary.add_column(col, justify="left" if col in ("split", "controller") else "right")
    for split in [*result.splits(), None]:
        for c, row in result.summary(split).items():
            va = row["vs_arrow"]
            summary.add_row(split or "all", controller_label(c), summary_ratio_cell(row),
                            f"{row['wins']}/{row['ties']}/{row['losses']}",
                            "-" if c == "arrow" or "arrow" not in result.controllers
                            else f"{va['wins']}/{va['ties']}/{va['losses']}",
                            str(row.get("not_applicable", 0)))
    console.print(summary)
    console.print(f"{result.simulations:,} simulations in {result.wall_s:.0f} s wall, {result.cpu_s:.0f} CPU-s"
                  + ("; † counted span under 10 simulated minutes" if any(sc.short_span for sc in result.scenarios.values()) else ""))


def _override(s, rate_mode: str | None, warmup: float | None):  # noqa: ANN001, ANN202 - Suite (lazy import)
    """The suite with ``--rate-mode`` / ``--warmup`` applied to its protocol and every scenario's."""
    from dataclasses import replace

    upd = {k: v for k, v in (("rate_mode", rate_mode), ("warmup_s", warmup)) if v is not None}
    return replace(s, protocol=replace(s.protocol, **upd),
                   scenarios=[replace(sc, protocol=replace(sc.protocol, **upd)) for sc in s.scenarios])


def _read(path: Path, flag: str = "--update-readme") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{flag} {path}: cannot read ({getattr(exc, 'strerror', None) or exc})")
        return ""


def _json_default(o: object) -> object:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


@suite_app.command("power")
def power_command(
    suite: str = typer.Option(..., "--suite", help="the suite to check (e.g. tests/data/power_suite.yaml)"),
    controller: str = typer.Option("arrow", "--controller", help="the controller run against its faster copy"),
    speedup: float = typer.Option(1.05, "--speedup", min=1.0, help="how much faster the copy's instances are"),
    quick: bool = typer.Option(False, "--quick", help="the suite's quick protocol"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="parallel worker processes"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the verdicts as JSON"),
) -> None:
    """The protocol's power: the same controller on instances --speedup times faster must be called a
    win, and an identical copy a tie, on every scenario."""
    from arrow_rl.evaluation.power import power_check
    from arrow_rl.evaluation.suite_spec import SuiteError, load_suite

    try:
        s = load_suite(suite, quick=quick)
    except SuiteError as exc:
        _fail(str(exc))
        return
    try:
        res = power_check(s, controller, speedup, jobs=jobs,
                          on_job_done=lambda sc, c, wall: console.print(f"done {sc} / {c} in {wall:.0f} s"))
    except ValueError as exc:
        _fail(str(exc))
        return
    table = Table(title=f"Power check: {controller} on {speedup:g}x faster instances vs itself "
                        f"({len(s.protocol.seeds)} seeds, Holm across {len(res.faster)} scenarios)")
    for col in ("scenario", "faster copy: paired ratio [95% CI]", "verdict", "identical copy", "verdict"):
        table.add_column(col)
    for name, p in res.faster.items():
        q = res.identical[name]
        table.add_row(name, f"{p.ratio:.3f} [{p.lo:.3f}, {p.hi:.3f}]", p.verdict,
                      f"{q.ratio:.3f} [{q.lo:.3f}, {q.hi:.3f}]", q.verdict)
    console.print(table)
    console.print(f"power: {100 * res.power:.0f}% of scenarios call the {speedup:g}x copy a win; "
                  f"{res.false_calls} false call(s) for the identical copy; "
                  f"{res.result.simulations:,} simulations, {res.result.wall_s:.0f} s wall")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({
            "controller": controller, "speedup": speedup, "power": res.power, "false_calls": res.false_calls,
            "faster": {n: p.to_json() for n, p in res.faster.items()},
            "identical": {n: p.to_json() for n, p in res.identical.items()},
            "protocol": s.protocol.describe(), "wall_s": res.result.wall_s, "cpu_s": res.result.cpu_s,
            "simulations": res.result.simulations}, indent=2, default=_json_default), encoding="utf-8")
        console.print(f"wrote {json_out}")
