"""The latency/SLO summary table shared by ``arrow-rl simulate`` and ``arrow-rl bench``.

One layout for both, so an emulated run and a live run of the same trace compare line by line.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table


def format_seconds(x: float | None) -> str:
    """Milliseconds below one second, seconds above; '-' where there is no value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.3f} s"


def print_summary(console: Console, s: dict[str, Any], title: str, *, ended_label: str = "rejected",
                  extra_rows: Iterable[tuple[str, str]] = ()) -> None:
    """Print TTFT/TPOT/e2e percentiles, then request counts, SLO attainment, throughput and ``extra_rows``.

    ``s`` is a dict from ``arrow_rl.metrics.summarize``.
    """
    table = Table(title=title)
    table.add_column("metric", style="bold")
    for col in ("mean", "p50", "p90", "p99"):
        table.add_column(col, justify="right")
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "end-to-end")):
        table.add_row(label, *(format_seconds(s[f"{key}_{c}"]) for c in ("mean", "p50", "p90", "p99")))
    console.print(table)
    facts = Table(show_header=False)
    facts.add_column("", style="bold")
    facts.add_column("")
    facts.add_row("requests", f"{s['num_finished']:,} finished / {s['num_requests']:,} offered"
                              + (f", {s['num_rejected']:,} {ended_label}" if s["num_rejected"] else ""))
    for reason, count in sorted(s.get("reject_reasons", {}).items(), key=lambda kv: -kv[1]):
        facts.add_row(ended_label, f"{count:,} ({reason})")
    if "slo_attainment" in s:
        facts.add_row("SLO attainment", f"{s['slo_attainment'] * 100:.2f}% (TTFT ≤ {s['slo_ttft_s']:g} s and "
                                        f"TPOT ≤ {s['slo_tpot_s']:g} s; TTFT alone {s['slo_ttft_attainment'] * 100:.1f}%, "
                                        f"TPOT alone {s['slo_tpot_attainment'] * 100:.1f}%)")
    facts.add_row("throughput", f"{s['throughput_rps']:.2f} req/s, {s['output_tokens_per_s']:,.0f} output tokens/s")
    for label, value in extra_rows:
        facts.add_row(label, value)
    console.print(facts)
