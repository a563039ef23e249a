"""Hypothesis settings shared by the property tests.

The default suite's search is derandomised, so CI runs the same examples every time and a test
cannot flake on a new random draw; ``ARROW_RL_FUZZ_EXAMPLES=500`` turns on a deeper, randomised
search (with hypothesis' example database) for a hunt by hand.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

DEEP = "ARROW_RL_FUZZ_EXAMPLES" in os.environ


def fuzz(examples: int = 25) -> settings:
    """Settings for a property test: ``examples`` derandomised examples, or the deep search."""
    return settings(max_examples=int(os.environ.get("ARROW_RL_FUZZ_EXAMPLES", examples)), deadline=None,
                    derandomize=not DEEP, database=None if not DEEP else settings.default.database,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
