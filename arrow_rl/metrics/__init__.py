"""Request-level metrics: latency summaries and SLO attainment (Arrow §6.1)."""

from arrow_rl.metrics.summary import slo_attainment, summarize

__all__ = ["slo_attainment", "summarize"]
