"""``arrow-rl perf-report``: fit error of a preset's latency model, its anchors and Arrow profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from arrow_rl.cli.output import fail, make_console
from arrow_rl.perf.fit_report import FitReport, fit_report, plot_fit
from arrow_rl.perf.presets import list_presets

console = make_console()


def _fmt(x: float | None, nd: int = 2) -> str:
    return "" if x is None else f"{x:.{nd}f}"


def render(rep: FitReport, con: Console) -> None:
    """Print one preset's report as rich tables."""
    f = rep.facts
    con.rule(f"[bold]{rep.preset}[/bold]  {f['gpu']} · {f['model']} · TP{f['tp']}")
    con.print(f"KV {f['kv_bytes_per_token'] // 1024} KiB/token · capacity {f['kv_capacity_tokens']:,} tokens "
              f"(gpu_memory_utilization 0.9) · max_model_len {f['max_model_len']:,} · KV transfer "
              f"{f['kv_transfer_bandwidth_GBps']:.1f} GB/s + {f['kv_transfer_latency_ms']:.2f} ms", highlight=False)
    if rep.e2e is not None:
        m = rep.e2e["median_ape_pct"]
        sat = rep.e2e["saturated_throughput_ape_pct"]
        con.print(f"[bold]End to end vs real vLLM (in-sample: the engine constants are fitted on these runs)[/bold]: "
                  f"median error of the means over {rep.e2e['unsaturated_stages']} unsaturated stages "
                  f"TTFT {m['ttft']:.1f}%, TPOT {m['tpot']:.1f}%, e2e {m['e2e']:.1f}%"
                  + (f"; saturated throughput {', '.join(f'{x:.1f}%' for x in sat)}" if sat else ""),
                  highlight=False)
    else:
        con.print("End to end vs real vLLM: no shipped run of this preset (its figures are predictions "
                  "of the engine model fitted on other models; check them with `arrow-rl fidelity`)",
                  highlight=False)
    if not rep.components:
        con.print("Kernel rows: none shipped for this preset (built from the model's shape alone)", highlight=False)
    t = Table(title="Out-of-sample: model vs public kernel profile rows, not fitted on "
                    "(|model − measured| / measured; eager kernels)")
    for col in ("component", "rows", "median %", "p90 %", "source"):
        t.add_column(col, justify="right" if col in ("rows", "median %", "p90 %") else "left")
    for c in rep.components:
        t.add_row(c.component + (" (not fitted)" if c.component.startswith("xcheck") else ""), str(c.rows),
                  _fmt(c.median_pct), _fmt(c.p90_pct), c.source)
    t.add_row("[bold]all rows[/bold]", str(rep.overall_rows), f"[bold]{rep.overall_median_pct:.2f}[/bold]",
              _fmt(rep.overall_p90_pct), "")
    if rep.components:
        con.print(t)
    if rep.anchors:
        a = Table(title="Published anchors (ms unless a ratio)")
        for col in ("anchor", "tag", "reference", "range", "model", "error %", "note"):
            a.add_column(col, justify="right" if col in ("reference", "model", "error %") else "left")
        for r in rep.anchors:
            rng = f"{r['low']:g}–{r['high']:g}" + (" ✓" if r["in_range"] else " ✗") if r["low"] is not None else ""
            a.add_row(r["id"], r["tag"] + ("" if r["target"] else " (context)"), _fmt(r["reference"]), rng,
                      _fmt(r["model"]), f"{r['error_pct']:+.1f}", r["description"])
        con.print(a)
    p = rep.profile
    pt = Table(title="Arrow §5.2 profile: T(n)=a·n²+b·n+c (s), interval(N)=slope·N+intercept (s), MT (§5.3)")
    for col in ("a", "b", "c", "slope", "intercept", *[f"MT @ TPOT {s * 1e3:g} ms" for s in rep.max_tokens]):
        pt.add_column(col, justify="right")
    pt.add_row(f"{p.prefill_a:.3e}", f"{p.prefill_b:.3e}", f"{p.prefill_c:.3e}", f"{p.decode_slope:.3e}",
               f"{p.decode_intercept:.3e}", *[f"{v:,.0f}" for v in rep.max_tokens.values()])
    con.print(pt)


def register(app: typer.Typer) -> None:
    @app.command("perf-report")
    def perf_report(
        preset: Optional[str] = typer.Option(None, "--preset", help=f"one of {', '.join(list_presets())}"),
        all_presets: bool = typer.Option(False, "--all", help="report every preset"),
        json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report(s) as JSON"),
        plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG per preset (with --all: "
                                                                   "PLOT's stem + preset name)"),
    ) -> None:
        """Error of the engine latency model: end to end on shipped real runs (in-sample) and per kernel (out-of-sample)."""
        if all_presets:
            names = list_presets()
        elif preset is not None:
            names = [preset]
        else:
            fail("give --preset NAME or --all")
        from arrow_rl.fidelity.calibration import end_to_end_in_sample

        reports = []
        for name in names:
            try:
                rep = fit_report(name, e2e=end_to_end_in_sample(name))
            except ValueError as exc:
                fail(str(exc))
            render(rep, console)
            reports.append(rep.to_dict())
            if plot is not None:
                target = plot if len(names) == 1 else plot.with_name(f"{plot.stem}-{name}{plot.suffix or '.png'}")
                plot_fit(name, str(target))
                console.print(f"wrote {target}")
        if json_out is not None:
            payload = reports[0] if len(reports) == 1 and not all_presets else {r["preset"]: r for r in reports}
            json_out.write_text(json.dumps(payload, indent=1) + "\n")
            console.print(f"wrote {json_out}")
