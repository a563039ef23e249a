"""A custom policy written as a plain Python function, in the seat a checkpoint takes.

The ``Controller`` protocol (``arrow_rl.control``) is three things: a ``name``, ``reset(info)`` once
per run, ``act(state) -> list[Flip]`` once per control interval. A rule of thumb is usually just the
``act`` part, so ``FunctionController`` wraps a function ``state -> flips`` into a full controller,
and ``policy_for`` pairs it with the router every controller is compared under (Arrow's Algorithm 1
without its own flips), so its results compare with Arrow's and a checkpoint's::

    from arrow_rl.cluster.base import Flip, Role
    from agents.custom import FunctionController, policy_for

    def more_prefill_when_prompts_queue(state):
        w = state.window
        if w.prefill.load > 1.0 and w.decode.load < 0.5 and w.decode.num_instances > 1:
            victim = next(i for i in state.instances if i.role is Role.DECODE)
            return [Flip(victim.instance_id, Role.PREFILL)]
        return []

    policy = policy_for(FunctionController(more_prefill_when_prompts_queue), num_instances=8)
    # arrow_rl.evaluation.runner.run_policy(workload, emulator_config, policy) scores it
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from arrow_rl.cluster.base import ClusterInfo, Flip
from arrow_rl.control import ControlState

ActFunction = Callable[[ControlState], "Iterable[Flip] | None"]


class FunctionController:
    """A ``Controller`` whose decisions are ``fn(state)``: the flips it returns (None: no flip).

    ``info`` holds the cluster's static description (size, preset, SLOs) after ``reset``, for a
    function that needs it (``controller.info.slo.ttft_s``); the function itself stays stateless.
    """

    def __init__(self, fn: ActFunction, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionController needs a function state -> flips, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")
        self.info: ClusterInfo | None = None

    def reset(self, info: ClusterInfo) -> None:
        self.info = info

    def act(self, state: ControlState) -> list[Flip]:
        flips = self.fn(state)
        out = list(flips) if flips is not None else []
        bad = [f for f in out if not isinstance(f, Flip)]
        if bad:
            raise TypeError(f"{self.name} returned {bad[0]!r}; return arrow_rl.cluster.base.Flip(instance_id, role) "
                            "objects (or an empty list)")
        return out


def policy_for(controller, num_instances: int, name: str | None = None):
    """An ``arrow_rl.controllers.registry.Policy`` running ``controller`` (any ``Controller``) behind
    the router a checkpoint gets, starting from the same half/half split, ready for ``run_policy``."""
    from arrow_rl.controllers.registry import make_policy

    base = make_policy("arrow-interval", num_instances)
    return dataclasses.replace(base, name=name or getattr(controller, "name", "custom"), controller=controller)


__all__ = ["FunctionController", "policy_for"]
