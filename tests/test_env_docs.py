"""docs/environment.md states each registered id's rate-scale range: it must be the code's."""

from __future__ import annotations

import re
from pathlib import Path

import envs

DOC = Path(__file__).resolve().parents[1] / "docs" / "environment.md"


def test_the_documented_rate_scales_are_the_registered_ones():
    rows = re.findall(r"^\| `(arrow_rl/PDCluster[\w-]*)` \|[^\n]*\| U\(([\d.]+), ([\d.]+)\) \|$", DOC.read_text(),
                      flags=re.MULTILINE)
    documented = {env_id: (float(lo), float(hi)) for env_id, lo, hi in rows}
    assert set(documented) == set(envs.VARIANTS)
    for env_id, cfg in envs.VARIANTS.items():
        assert documented[env_id] == tuple(cfg["episode"]["rate_scale"]), env_id
