"""Shared helpers for the live-cluster tests: fake vLLM instances plus a router, all on 127.0.0.1."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import httpx

from arrow_rl.cluster.base import Role
from arrow_rl.cluster.live.fake_vllm import FakeConfig, FakeVllm, ServerThread
from arrow_rl.perf.profile import InstanceProfile
from arrow_rl.serving.config import InstanceSpec, RouterConfig
from arrow_rl.serving.httpserver import RouterServer
from arrow_rl.serving.router import Router

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROFILE = InstanceProfile(prefill_a=0.0, prefill_b=1e-5, prefill_c=0.001, decode_slope=1e-6, decode_intercept=0.002)


@dataclass
class LiveRig:
    fakes: list[FakeVllm]
    servers: list[ServerThread]
    router: Router
    router_server: RouterServer

    @property
    def url(self) -> str:
        return self.router_server.url

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)


@contextlib.contextmanager
def live_rig(roles: list[str] = ("prefill", "decode"), routing: str = "least-loaded",
             configs: list[FakeConfig] | None = None, journal: str | None = None,
             health_interval_s: float = 0.2, **router_kw) -> Iterator[LiveRig]:
    fakes = [FakeVllm(name=f"fake{i}", config=(configs[i] if configs else FakeConfig()), nixl_port=5600 + i)
             for i in range(len(roles))]
    servers = [ServerThread(f.app).start() for f in fakes]
    cfg = RouterConfig(instances=[InstanceSpec(url=s.url, role=Role(r)) for s, r in zip(servers, roles)],
                       routing=routing, journal=journal, health_interval_s=health_interval_s,
                       **{"unhealthy_after_failures": 1, **router_kw})
    router = Router(cfg, token=TOKEN, profiles={i: PROFILE for i in range(len(roles))})
    rs = RouterServer(router).start()
    try:
        yield LiveRig(fakes, servers, router, rs)
    finally:
        rs.stop()
        for s in servers:
            s.stop()


def completion(prompt_len: int = 200, max_tokens: int = 8, stream: bool = True, seed: int = 1) -> dict:
    prompt = [(seed * 131 + 17 * k) % 997 + 1 for k in range(prompt_len)]
    return {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": stream,
            "return_token_ids": True}


def read_stream(r: httpx.Response) -> tuple[list[int], list[dict]]:
    """Token ids and parsed events of an SSE completion stream."""
    tokens, events = [], []
    for line in r.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        import json

        obj = json.loads(line[6:])
        events.append(obj)
        for ch in obj.get("choices") or []:
            tokens.extend(ch.get("token_ids") or [])
    return tokens, events


def build_moves_checkpoint(directory, prefer: dict[int, float]):
    """A tiny checkpoint with the three-role ``moves`` action space (envs/moves.py) whose masked-greedy
    choice is fixed: the action net ignores the observation and its logits are ``prefer`` (action
    index -> logit, 0 elsewhere), so the highest-preferred *valid* move is taken every step.
    Built from the generalist's training config (configs/train/generalist.yaml), untrained: ~2 s."""
    from pathlib import Path

    import torch
    from sb3_contrib import MaskablePPO

    from agents.checkpoint import save_checkpoint
    from agents.config import load_config
    from agents.train import checkpoint_metadata
    from envs import PDClusterEnv

    root = Path(__file__).resolve().parents[1]
    meta = checkpoint_metadata(load_config(root / "configs" / "train" / "generalist.yaml"))
    # it decides every control step (the generalist plans every 5th), so a test sees a move per step
    action = {**meta["env_config"]["action"], "decision_every": 1}
    meta["env_config"] = {**meta["env_config"], "action": action, "teacher": None}
    env = PDClusterEnv({**meta["env_config"], "teacher": None, "episode": {"duration_s": 5, "drain_s": 1}})
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs={"net_arch": [8]})
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.zero_()
        for action, logit in prefer.items():
            model.policy.action_net.bias[action] = logit
    return save_checkpoint(Path(directory), model, meta)


# MoveCodec action indices (envs/moves.py: 1 + pair·F + fraction, F = 3 default fractions; the
# pairs P->D, D->P, P->M, M->P, D->M, M->D)
MOVE_P_TO_M = 1 + 2 * 3
MOVE_M_TO_P = 1 + 3 * 3
MOVE_D_TO_M = 1 + 4 * 3
MOVE_M_TO_D = 1 + 5 * 3


@dataclass
class FlipScenario:
    checkpoint_flips: list[tuple[Role, Role]]
    arrow_flips: list[tuple[Role, Role]]
    checkpoint_log: list[dict]
    arrow_log: list[dict]


def checkpoint_then_arrow(router: Router, url: str, token: str, ckpt_dir, interval_s: float,
                          arrow_interval_s: float, timeout_s: float = 15.0) -> FlipScenario:
    """Issue 12 item 4's scenario on a router whose cluster starts prefill, decode, mixed (the
    caller keeps load on it and a 1-ms-scale TPOT SLO, so decode is "heavy"):

    1. a moves checkpoint deployed with ``run_control_loop`` whose masked-greedy move is M->P while a
       MIXED instance exists, else P->M: it flips M->P, P->M, M->P and is stopped there (2P1D);
    2. Arrow (Algorithm 2 under the same loop) sees the decode-heavy load and flips P->D.

    Returns the flips each made (from the router's flip log, by source) and their decision logs."""
    from arrow_rl.arrow import ArrowConfig
    from arrow_rl.cluster.live.cluster import LiveCluster
    from arrow_rl.controllers.registry import make_policy
    from arrow_rl.serving.deploy import run_control_loop

    n = len(router.state.instances)
    ckpt = make_policy(str(build_moves_checkpoint(ckpt_dir, {MOVE_M_TO_P: 10.0, MOVE_P_TO_M: 9.0})), n).controller
    arrow = make_policy("arrow", n, arrow_config=ArrowConfig(update_interval_s=arrow_interval_s,
                                                             sustain_count=2)).controller

    def by(source: str) -> list[tuple[Role, Role]]:
        return [(f.old, f.new) for f in router.state.flips if f.source == source]

    cl = LiveCluster(url, token, timeout_s=timeout_s)
    ckpt_log: list[dict] = []
    arrow_log: list[dict] = []
    try:
        run_control_loop(cl, ckpt, interval_s, steps=8, log=ckpt_log.append, act_timeout_s=20,
                         should_stop=lambda: len(by(ckpt.name)) >= 3)
        run_control_loop(cl, arrow, interval_s, steps=12, log=arrow_log.append, act_timeout_s=10,
                         should_stop=lambda: bool(by(arrow.name)))
    finally:
        cl.close()
    return FlipScenario(by(ckpt.name), by(arrow.name), ckpt_log, arrow_log)
