"""``mpc``: model-predictive split control on a forecast of the recent past (deployable on the emulator).

The same search as the clairvoyant ``oracle`` (``arrow_rl.controllers.baselines``): every
``decision_interval_s`` the candidate splits (the oracle's ``candidate_splits``, each reached by
Arrow Algorithm 3 flips) are scored by the what-if planner over ``lookahead_s``. The difference is
what a branch sees arrive: not the recorded trace but ``ForecastArrivals`` built by ``RecentPast``
(``arrow_rl.controllers.forecast``) from the last ``history_s`` seconds a controller has observed,
arrival times and prompt lengths at arrival, output lengths only of finished requests. So it knows
no more of the future than a deployed controller would; it still needs the emulator to branch (the
model of the cluster is the emulator itself), which is why it runs on the emulator and not on a live
cluster. Of the present it knows what the emulator holds: requests in flight finish in a branch
after their true output lengths, which a live controller would have to estimate.

A forecast is wrong in its details, and a move costs work in flight, so the controller holds the
current split unless the best candidate beats it by a margin: ``switch_margin`` plus
``switch_margin_rel`` × |the current split's score| (scores count requests served within SLO
minus misses over the lookahead, ``whatif.score_window``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from arrow_rl.cluster.base import ClusterInfo, Flip
from arrow_rl.control import ControlState
from arrow_rl.controllers.baselines import OracleConfig, OracleController
from arrow_rl.controllers.forecast import ForecastArrivals, RecentPast


class MpcConfig(OracleConfig):
    """The oracle's search knobs plus the forecast's window and the hysteresis margin."""

    history_s: float = Field(60.0, gt=0, description="Seconds of observed past the forecast replays (mirrored "
                             "about now) and whose finished requests supply the output lengths.")
    switch_margin: float = Field(1.0, ge=0, description="Move only when the best candidate's score beats the "
                                 "current split's by more than this (score units: requests over the lookahead) ...")
    switch_margin_rel: float = Field(0.05, ge=0, description="... plus this fraction of |current split's score|.")
    min_finished: int = Field(32, ge=1, description="Output lengths come from at least this many latest finishes.")
    prior_output_tokens: int = Field(256, ge=1, description="Output length forecast before any request finished.")


class MpcController(OracleController):
    """Model-predictive control of the P:D(:M) split on a forecast of the recent past (module docstring).

    Requires ``bind_cluster(cluster)`` (the runner calls it, ``Policy.needs_cluster``): the cluster
    must offer ``clone_with_future`` and ``arrived_since`` (the emulator). Cost per decision: one
    branch (a clone plus the forecast's rows) and ``lookahead_s`` of simulation per candidate, as
    for the oracle, plus building the forecast (linear in the requests observed in ``history_s``).
    """

    name = "mpc"

    def __init__(self, config: MpcConfig | None = None) -> None:
        super().__init__(config or MpcConfig())
        self.config: MpcConfig
        self.past = self._new_past()
        self.holds = 0   # decisions where a better-scoring candidate did not clear the margin

    def _new_past(self) -> RecentPast:
        c = self.config
        return RecentPast(c.history_s, c.min_finished, c.prior_output_tokens)

    def bind_cluster(self, cluster: Any) -> None:
        ForecastArrivals.require(cluster, "the mpc controller")
        super().bind_cluster(cluster)
        self.past = self._new_past()

    def reset(self, info: ClusterInfo) -> None:
        super().reset(info)
        self.past.clear()
        self.holds = 0

    def act(self, state: ControlState) -> list[Flip]:
        if self.cluster is None:
            raise RuntimeError("MpcController.act before bind_cluster(cluster): mpc branches the emulator, "
                               "so it cannot run on a live cluster")
        if not self.due(state.now):
            return []
        self.past.observe(self.cluster)
        stream = ForecastArrivals(self.past.forecast(state.now, self.config.lookahead_s))
        current, candidates = self.candidates_now(list(state.instances))
        ranking = self.planner.rank(self.cluster, candidates, stream)
        self.evaluations += len(ranking.scores)
        if ranking.best.key == current:
            return []
        held = ranking.scores[current]
        margin = self.config.switch_margin + self.config.switch_margin_rel * abs(held)
        if ranking.scores[ranking.best.key] <= held + margin:
            self.holds += 1
            return []
        return list(ranking.best.flips)
