"""Does the env's episode return rank controllers as the suite's serving rate does?

For each train scenario of the standard suite, the env is configured like the scenario (workload,
preset, N, SLO) with the suite-episodes options (``configs/env/suite-episodes.yaml``: 120 s warm-up,
superposed load around the knee estimate, truncated ends), and every controller the env can run
drives K episodes with common reset seeds (the same loads for every controller). A controller
drives the env through the teacher mechanism: the env's ``teacher`` is the controller (its router
serves, as in the suite), the agent plays ``info["teacher_action"]``, and the warm-up runs under
the same controller, because the suite's warm-up is served by the controller under test.

Controllers and what stands for the leaderboard's entries:

- ``arrow``: ``arrow-interval``, the env's own teacher; the leaderboard's ``arrow`` is the
  event-driven variant, whose router flips outside the env's action (``--arrow-spec arrow`` runs it:
  the env's action then carries only its monitor's flips).
- ``static-tuned``: ``static:<the split the suite's tuning picked>`` (``best_split`` in
  leaderboard.json). ``static-oracle`` picks a split per seed; where its picks differ from
  static-tuned's it is the per-episode best return over the static splits run here, else it is the
  same policy with the same rate and is left out (a duplicate point would inflate the correlation).
- ``colocated``: the env has no colocated mode, but ``static:0:0:N`` (all instances MIXED) serves
  exactly as colocated (``arrow_rl.controllers.registry``); it needs the three-role codec, so it
  runs with the moves action and pools observation (same episodes, same reward).
- ``dynamo``: the Dynamo planner.
- ``agents/checkpoints/default``: its observation (pools, history 4) and action (moves every 5 s)
  differ from suite-episodes.yaml's (cluster features, discrete), so it runs in the same episodes
  with its own observation/action blocks (from its metadata), which the reward does not depend on.

Loads (``--load``): ``knee-estimate`` (default) is suite-episodes.yaml's own draw, f x the env's
capacity estimate with f ~ U(knee_factor); ``suite-crossing`` pins the factor to f x the mean of the
leaderboard's per-seed crossing factors for Arrow in that scenario (f ~ U(knee_factor), seeded by
the reset seed), for when the estimate misses the knee: the serving rate is decided at the
crossing, and far below it every controller serves everything, so returns tie.

Reward variants: every episode records its per-step counts (good, bad, pending, flips), λ and
end attainment, and each variant's return is recomputed from them with the env's formulas
(``envs.reward``), so all variants are ranked on the same episodes and one simulation serves them
all (``--variants YAML``; ``--rescore JSON`` scores a previous run's episodes without simulating).
The pooled rho also gets a 90% interval from resampling every scenario's episodes.

Run: ``nice python scripts/reward_rank_check.py [--episodes K] [--scenarios a,b] [--load L] [--json OUT]
[--variants YAML] [--rescore JSON]``.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
LEADERBOARD = ROOT / "docs" / "leaderboard.json"
SUITE_EPISODES = ROOT / "configs" / "env" / "suite-episodes.yaml"
CHECKPOINT = ROOT / "agents" / "checkpoints" / "default"
CHECKPOINT_KEY = "agents/checkpoints/default"
DEFAULT_SCENARIOS = ("azure-code-70b-x8", "azure-conv-70b-x8", "azure-conv-70b-x8-interactive",
                     "mooncake-70b-x8", "phase-shift-70b-x8")
# Reward variants scored on the run's episodes (RewardConfig fields over the env's default reward,
# not over the run config's reward block, so that "default" stays the global default whatever
# suite-episodes.yaml picks): the default reward, the affine-in-attainment reward, the bounded
# pending term, the target term, and both. The first is the reference of the paired changes.
DEFAULT_VARIANTS: dict[str, dict] = {
    "default": {},
    "no-pending": {"pending_miss_penalty": 0.0},
    "pending-cap": {"pending_cap": 1.0},
    "target": {"target_weight": 1.0},
    "cap+target": {"pending_cap": 1.0, "target_weight": 1.0},
}
# A generator's episode is its own duration (720 s for phase-shift): cut to this span to bound the
# cost, keeping its phases, so one episode still sees a prefill-heavy and a decode-heavy phase.
GENERATOR_SPAN_S = 360.0


@dataclass
class Entry:
    """One leaderboard controller as the env runs it."""

    key: str                      # leaderboard.json controller name
    specs: list[str]              # env teacher spec(s); several: per-episode best (static-oracle)
    three_roles: bool = False     # needs the moves/pools encodings
    note: str = ""


@dataclass
class Result:
    key: str
    returns: list[float]
    attainment: list[float]
    rate: float
    flips_proposed: int = 0
    flips_applied: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def split_spec(split: Any) -> str:
    """leaderboard ``best_split`` (P, or 'P:D:M') -> a static controller spec."""
    return f"static:{split}"


def needs_three_roles(spec: str) -> bool:
    return spec.startswith("static:") and spec.count(":") == 3 and not spec.endswith(":0")


def entries_for(scenario: str, board: dict, n: int, only: set[str] | None,
                arrow_spec: str = "arrow-interval") -> tuple[list[Entry], list[str]]:
    """The controllers to run in ``scenario`` and notes on those left out."""
    ctrls = board["scenarios"][scenario]["controllers"]
    out: list[Entry] = []
    left: list[str] = []
    for key, c in ctrls.items():
        if only and key not in only:
            continue
        if key == "arrow":
            out.append(Entry(key, [arrow_spec], note=arrow_spec))
        elif key == "dynamo":
            out.append(Entry(key, ["dynamo"], note="dynamo"))
        elif key == "colocated":
            out.append(Entry(key, [f"static:0:0:{n}"], True, note=f"static:0:0:{n}"))
        elif key == "static-tuned":
            spec = split_spec(c["best_split"])
            out.append(Entry(key, [spec], needs_three_roles(spec), note=spec))
        elif key == "static-oracle":
            tuned = ctrls.get("static-tuned", {}).get("per_seed_split")
            if tuned == c["per_seed_split"]:
                left.append("static-oracle: same splits as static-tuned (same policy)")
                continue
            splits = list(dict.fromkeys([*c["per_seed_split"], *(tuned or [])]))
            specs = [split_spec(s) for s in splits]
            out.append(Entry(key, specs, False, note="per-episode best of " + ", ".join(specs)))
        elif key == CHECKPOINT_KEY:
            out.append(Entry(key, [str(CHECKPOINT)], True, note="own obs/action"))
        else:
            left.append(f"{key}: no env policy for it")
    return out, left


def scenario_config(scn: dict, tiers: dict, base: dict, generator_span_s: float) -> dict:
    """suite-episodes.yaml with the scenario's workload, preset, size and SLO."""
    cfg = copy.deepcopy(base)
    slo = tiers[scn["slo"]] if isinstance(scn["slo"], str) else scn["slo"]
    cfg.update(preset=scn["preset"], num_instances=int(scn["instances"]),
               slo_ttft_s=float(slo["ttft_s"]), slo_tpot_s=float(slo["tpot_s"]))
    wl = scn["workload"]
    if isinstance(wl, str):
        cfg["episode"]["traces"] = [wl]
    else:
        gen = dict(wl)
        if "duration_s" in gen:
            gen["duration_s"] = min(float(gen["duration_s"]), generator_span_s)
        cfg["episode"]["generator"] = gen
    return cfg


def checkpoint_blocks() -> dict:
    """The checkpoint's own observation and action blocks (its saved env config)."""
    meta = json.loads((CHECKPOINT / "metadata.json").read_text())
    env = meta["env_config"]
    return {"observation": env["observation"], "action": env["action"]}


def env_for(cfg: dict, spec: str, three_roles: bool):
    from envs.pd_cluster_env import PDClusterEnv

    c = copy.deepcopy(cfg)
    if three_roles:   # the checkpoint's blocks serve the static MIXED splits too: they never flip
        c.update(checkpoint_blocks())
    c["teacher"] = spec
    c["episode"]["warmup_controller"] = spec
    return PDClusterEnv(c)


def run_episode(env, seed: int, rate_scale: float | None = None) -> dict[str, Any]:
    """One episode with the teacher's action played; return, attainment and flip bookkeeping."""
    obs, info = env.reset(seed=seed, options={} if rate_scale is None else {"rate_scale": rate_scale})
    total, proposed, applied = 0.0, 0, 0
    steps: list[list[int]] = []
    while True:
        proposed += len(info.get("teacher_flips") or [])
        obs, r, term, trunc, info = env.step(info["teacher_action"])
        total += float(r)
        applied += len(info["applied_flips"])
        t = info["reward_terms"]
        steps.append([int(t.good), int(t.bad), int(t.pending), int(t.flips)])
        if term or trunc:
            st = info["episode_stats"]
            return {"return": total, "attainment": float(st["slo_attainment"]), "rate_scale": st.get("rate_scale"),
                    "proposed": proposed, "applied": applied, "truncated": bool(trunc),
                    "trace": {"offered_per_step": float(env.offered_per_step), "offered": int(st["offered"]),
                              "attainment": float(st["slo_attainment"]), "steps": steps}}


def crossing_scales(board: dict, scenario: str, seeds: list[int], knee: tuple[float, float]) -> list[float]:
    """``--load suite-crossing``: f x the mean crossing factor of the leaderboard's Arrow runs,
    f ~ U(knee) seeded by the reset seed (the same for every controller)."""
    runs = board["scenarios"][scenario]["controllers"]["arrow"]["seeds"]
    crossing = float(np.mean([r["factor"] for r in runs]))
    return [crossing * float(np.random.default_rng(s).uniform(*knee)) for s in seeds]


def run_entry(cfg: dict, entry: Entry, seeds: list[int], scales: list[float | None],
              cache: dict) -> tuple[list[dict], dict[str, list[dict]]]:
    """Episodes of every spec of ``entry`` (cached per spec: static-oracle reuses static-tuned's)."""
    per_spec = {}
    for spec in entry.specs:
        if spec not in cache:
            env = env_for(cfg, spec, entry.three_roles or needs_three_roles(spec))
            cache[spec] = [run_episode(env, s, x) for s, x in zip(seeds, scales)]
            env.close()
        per_spec[spec] = cache[spec]
    if len(entry.specs) == 1:
        return per_spec[entry.specs[0]], per_spec
    best = [max((per_spec[s][i] for s in entry.specs), key=lambda e: e["return"]) for i in range(len(seeds))]
    return best, per_spec


def rho(x: list[float], y: list[float]) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    r = stats.spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


def bootstrap_rho(returns: np.ndarray, rates: list[float], n_boot: int, rng: np.random.Generator) -> list[float]:
    """90% interval of the scenario's rho over resampled episodes (common across controllers);
    the leaderboard's own uncertainty is not in it."""
    k = returns.shape[1]
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, k, k)
        vals.append(rho(list(returns[:, idx].mean(axis=1)), rates)[0])
    vals = [v for v in vals if not math.isnan(v)]
    return [float(np.percentile(vals, 5)), float(np.percentile(vals, 95))] if vals else [math.nan, math.nan]


def paired_sign(a: list[float], b: list[float]) -> int:
    """+1 / -1 when the paired mean difference a - b is beyond 2 standard errors (the same seeds
    on both sides), else 0: a tie at this many seeds."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 2:
        return int(np.sign(d.mean())) if len(d) else 0
    se = d.std(ddof=1) / math.sqrt(len(d))
    m = d.mean()
    return 0 if abs(m) <= 2 * se or m == 0 else int(np.sign(m))


def concordance(returns: list[list[float]], per_seed_rates: list[list[float]]) -> tuple[int, int, int]:
    """Within-scenario controller pairs that both sides separate (paired, 2 SE) and order alike /
    oppositely, and pairs that either side calls a tie."""
    agree = disagree = tied = 0
    for i in range(len(returns)):
        for j in range(i + 1, len(returns)):
            a, b = paired_sign(returns[i], returns[j]), paired_sign(per_seed_rates[i], per_seed_rates[j])
            if a == 0 or b == 0:
                tied += 1
            elif a == b:
                agree += 1
            else:
                disagree += 1
    return agree, disagree, tied


def run_load(load: str, args: argparse.Namespace, ctx: dict) -> dict[str, Any]:
    """Every scenario's controllers under one way of drawing the load; per-scenario and pooled ranks."""
    board, base, seeds = ctx["board"], ctx["base"], ctx["seeds"]
    rng = np.random.default_rng(0)
    report: dict[str, Any] = {"load": load, "scenarios": {}}
    pooled_x: list[float] = []
    pooled_y: list[float] = []
    pairs = np.zeros(3, int)
    t_all = time.process_time()
    for name in ctx["names"]:
        scn = ctx["scenarios"][name]
        cfg = scenario_config(scn, ctx["tiers"], base, args.generator_span)
        entries, left = entries_for(name, board, int(scn["instances"]), ctx["only"], args.arrow_spec)
        knee = tuple(base["episode"]["knee_factor"])
        scales = crossing_scales(board, name, seeds, knee) if load == "suite-crossing" else [None] * len(seeds)
        cache: dict[str, list[dict]] = {}
        results: list[Result] = []
        t0 = time.process_time()
        for e in entries:
            eps, per_spec = run_entry(cfg, e, seeds, scales, cache)
            rate = float(board["scenarios"][name]["controllers"][e.key]["serving_rate"])
            res = Result(e.key, [x["return"] for x in eps], [x["attainment"] for x in eps], rate,
                         sum(x["proposed"] for x in eps), sum(x["applied"] for x in eps), e.note,
                         {"rate_scale": [x["rate_scale"] for x in eps], "truncated": [x["truncated"] for x in eps]})
            res.extra["traces"] = {s: [x["trace"] for x in v] for s, v in per_spec.items()}
            if len(per_spec) > 1:
                res.extra["per_spec_mean_return"] = {s: float(np.mean([x["return"] for x in v])) for s, v in per_spec.items()}
            results.append(res)
            print(f"  [{load}] {name} {e.key:28s} return {np.mean(res.returns):8.2f}  attainment "
                  f"{np.mean(res.attainment):.3f}  rate {rate:7.2f}  flips {res.flips_applied}/{res.flips_proposed}  "
                  f"cpu {time.process_time() - t0:.0f}s", flush=True)
        means = [float(np.mean(r.returns)) for r in results]
        rates = [r.rate for r in results]
        r_s, p_s = rho(means, rates)
        ci = (bootstrap_rho(np.array([r.returns for r in results]), rates, args.bootstrap, rng)
              if len(results) >= 3 else [math.nan, math.nan])
        per_seed = [board["scenarios"][name]["controllers"][r.key]["per_seed"] for r in results]
        c = concordance([r.returns for r in results], per_seed)
        pairs += c
        # pooled: within-scenario relative values, so scenarios of different scale share one ranking
        if len(results) >= 2:
            mu, sd = np.mean(means), np.std(means) or 1.0
            pooled_x += [(m - mu) / sd for m in means]
            pooled_y += [r / np.mean(rates) - 1.0 for r in rates]
        drawn = [x for x in results[0].extra["rate_scale"] if x is not None] if results else []
        ctrls = board["scenarios"][name]["controllers"]
        crossing = float(np.mean([r["factor"] for r in ctrls["arrow"]["seeds"]])) if "arrow" in ctrls else math.nan
        report["scenarios"][name] = {
            "config": cfg, "load_factors": drawn, "arrow_crossing_factor": crossing, "left_out": left,
            "spearman": r_s, "p_value": p_s, "spearman_bootstrap90": ci,
            "pairs_agree_disagree_tied": list(map(int, c)), "cpu_s": time.process_time() - t0,
            "controllers": {r.key: {"mean_return": float(np.mean(r.returns)),
                                    "sem_return": float(np.std(r.returns, ddof=1) / math.sqrt(len(r.returns)))
                                    if len(r.returns) > 1 else math.nan,
                                    "returns": r.returns, "mean_attainment": float(np.mean(r.attainment)),
                                    "serving_rate": r.rate, "flips_applied": r.flips_applied,
                                    "flips_proposed": r.flips_proposed, "as": r.note, **r.extra} for r in results},
        }
        if drawn:
            print(f"[{load}] {name}: load factors {min(drawn):.2f}-{max(drawn):.2f} (x{min(drawn) / crossing:.2f}-"
                  f"{max(drawn) / crossing:.2f} of Arrow's suite crossing {crossing:.2f})", flush=True)
        print(f"[{load}] {name}: spearman {r_s:.2f} (p {p_s:.2f}, episode-bootstrap 90% [{ci[0]:.2f}, {ci[1]:.2f}]); "
              f"pairs agree/disagree/tied {c}; left out: {'; '.join(left) or 'none'}", flush=True)
    pr, pp = rho(pooled_x, pooled_y)
    report.update(pooled_spearman=pr, pooled_p_value=pp, pairs_agree_disagree_tied=list(map(int, pairs)),
                  cpu_s=time.process_time() - t_all)
    return report


def trace_return(trace: dict, config: Any) -> float:
    """An episode's return under ``config`` (a RewardConfig) from its recorded per-step counts
    (good, bad, pending, flips), λ and end attainment: the env's own formulas, no simulation."""
    from envs.reward import reward_from_counts, terminal_reward

    lam = float(trace["offered_per_step"])
    dense = sum(reward_from_counts(g, b, p, f, lam, config) for g, b, p, f in trace["steps"])
    return dense + terminal_reward(float(trace["attainment"]), trace["offered"] / max(lam, 1e-6), config)


def variant_returns(controller: dict, config: Any) -> list[float]:
    """Per-episode returns of one controller under ``config``; for several specs (static-oracle)
    the per-episode best under that same reward, as the run picks it."""
    per_spec = [[trace_return(t, config) for t in traces] for traces in controller["traces"].values()]
    return [max(col) for col in zip(*per_spec)]


def pooled_bootstrap(returns: list[np.ndarray], rates: list[list[float]], n_boot: int,
                     rng: np.random.Generator) -> list[float]:
    """The pooled rho over ``n_boot`` resamples of each scenario's episodes (common to its
    controllers; nan where undefined). The same rng seed gives every variant the same resamples,
    so variants can be compared resample by resample."""
    vals = []
    for _ in range(n_boot):
        xs: list[float] = []
        ys: list[float] = []
        for ret, rate in zip(returns, rates):
            k = ret.shape[1]
            means = ret[:, rng.integers(0, k, k)].mean(axis=1)
            xs += list((means - means.mean()) / (means.std() or 1.0))
            ys += [r / np.mean(rate) - 1.0 for r in rate]
        vals.append(rho(xs, ys)[0])
    return vals


def interval90(samples: list[float] | np.ndarray) -> list[float]:
    vals = np.asarray(samples, float)
    vals = vals[~np.isnan(vals)]
    return [float(np.percentile(vals, 5)), float(np.percentile(vals, 95))] if len(vals) else [math.nan, math.nan]


def score_variant(load_report: dict, board: dict, overrides: dict, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Per-scenario and pooled rho of one reward variant (``overrides`` on the default RewardConfig)
    from a run's recorded traces; the same episodes for every variant."""
    from envs.config import RewardConfig

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"reward": overrides, "scenarios": {}}
    pooled_x: list[float] = []
    pooled_y: list[float] = []
    all_returns: list[np.ndarray] = []
    all_rates: list[list[float]] = []
    pairs = np.zeros(3, int)
    for name, scn in load_report["scenarios"].items():
        config = RewardConfig(**overrides)
        keys = list(scn["controllers"])
        returns = np.array([variant_returns(scn["controllers"][k], config) for k in keys])
        rates = [float(scn["controllers"][k]["serving_rate"]) for k in keys]
        means = returns.mean(axis=1)
        r_s, p_s = rho(list(means), rates)
        ci = bootstrap_rho(returns, rates, n_boot, rng) if len(keys) >= 3 else [math.nan, math.nan]
        per_seed = [board["scenarios"][name]["controllers"][k]["per_seed"] for k in keys]
        c = concordance([list(r) for r in returns], per_seed)
        pairs += c
        if len(keys) >= 2:
            pooled_x += list((means - means.mean()) / (means.std() or 1.0))
            pooled_y += [r / np.mean(rates) - 1.0 for r in rates]
            all_returns.append(returns)
            all_rates.append(rates)
        out["scenarios"][name] = {"spearman": r_s, "p_value": p_s, "spearman_bootstrap90": ci,
                                  "pairs_agree_disagree_tied": list(map(int, c)),
                                  "mean_return": dict(zip(keys, map(float, means)))}
    pr, pp = rho(pooled_x, pooled_y)
    boot = pooled_bootstrap(all_returns, all_rates, n_boot, np.random.default_rng(seed + 1))
    out.update(pooled_spearman=pr, pooled_p_value=pp, pooled_bootstrap90=interval90(boot),
               pooled_bootstrap_samples=boot, pairs_agree_disagree_tied=list(map(int, pairs)))
    return out


def score_variants(report: dict, board: dict, variants: dict[str, dict], n_boot: int) -> dict[str, dict]:
    """Every variant under every load of a run (``report["loads"]``), printed as a table."""
    scored: dict[str, dict] = {}
    for load, lr in report["loads"].items():
        scored[load] = {name: score_variant(lr, board, ov, n_boot) for name, ov in variants.items()}
        ref = next(iter(scored[load].values()))
        first, first_rho = ref["pooled_bootstrap_samples"], ref["pooled_spearman"]
        for v in scored[load].values():   # paired: the same resamples of the same episodes
            v["pooled_delta_vs_first"] = v["pooled_spearman"] - first_rho
            v["pooled_delta_bootstrap90"] = interval90(np.subtract(v.pop("pooled_bootstrap_samples"), first))
        print(f"\n### reward variants, load: {load} (pooled rho, 90% bootstrap; paired change vs the first "
              f"variant, 90% bootstrap; per-scenario rho)\n")
        for name, v in scored[load].items():
            lo, hi = v["pooled_bootstrap90"]
            dlo, dhi = v["pooled_delta_bootstrap90"]
            per = ", ".join(f"{s.split('-70b')[0]}{'-i' if 'interactive' in s else ''} {x['spearman']:.2f}"
                            for s, x in v["scenarios"].items())
            print(f"{name:14s} pooled {v['pooled_spearman']:.2f} [{lo:.2f}, {hi:.2f}] p {v['pooled_p_value']:.3f} "
                  f"delta {v['pooled_delta_vs_first']:+.2f} [{dlo:+.2f}, {dhi:+.2f}] pairs {v['pairs_agree_disagree_tied']} | {per}")
    return scored


def read_variants(path: Path | None) -> dict[str, dict]:
    """``--variants`` YAML: name -> RewardConfig fields over the default reward; the first variant is
    the reference of the paired changes."""
    if path is None:
        return dict(DEFAULT_VARIANTS)
    variants = yaml.safe_load(path.read_text())
    from envs.config import RewardConfig

    for name, ov in variants.items():
        RewardConfig(**ov)   # unknown fields or bad values fail before any scoring
    return variants


def read_report(path: Path) -> dict:
    """A run's ``--json`` (gzip-compressed when it ends in .gz)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(raw)


def write_report(report: dict, path: Path) -> None:
    """``--json``: indented text, or compact and gzip-compressed for a .gz path (the per-step
    traces make a run's report tens of MB as text)."""
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(json.dumps(report, separators=(",", ":"), default=float).encode(), mtime=0))
    else:
        path.write_text(json.dumps(report, indent=2, default=float))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", "-k", type=int, default=10, help="K seeded episodes per controller")
    ap.add_argument("--seed0", type=int, default=0, help="reset seeds seed0 .. seed0+K-1 (common to all)")
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help="comma-separated train scenarios")
    ap.add_argument("--controllers", default="", help="comma-separated leaderboard names (default: all)")
    ap.add_argument("--generator-span", type=float, default=GENERATOR_SPAN_S,
                    help="arrival span (s) of a generator scenario's episodes")
    ap.add_argument("--load", default="knee-estimate,suite-crossing",
                    help="comma-separated: knee-estimate, suite-crossing (module docstring)")
    ap.add_argument("--arrow-spec", choices=("arrow-interval", "arrow"), default="arrow-interval",
                    help="what stands for the leaderboard's arrow: the interval controller, whose flips are "
                         "the env's action, or the event-driven Arrow, whose router also flips outside it")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--variants", type=Path, default=None,
                    help="YAML: variant name -> RewardConfig fields; scored on the same episodes (default: built-in)")
    ap.add_argument("--rescore", type=Path, default=None,
                    help="a previous run's --json: score the variants on its recorded episodes, no simulation")
    args = ap.parse_args(argv)
    variants = read_variants(args.variants)
    if args.rescore is not None:
        report = read_report(args.rescore)
        report["variants"] = score_variants(report, json.loads(LEADERBOARD.read_text()), variants, args.bootstrap)
        if args.json:
            write_report(report, args.json)
        return 0
    loads = [x for x in args.load.split(",") if x]
    bad = set(loads) - {"knee-estimate", "suite-crossing"}
    if bad:
        ap.error(f"--load: unknown {sorted(bad)}")

    from arrow_rl.evaluation.suite_spec import read_suite_spec, resolve_suite_path

    suite_path = resolve_suite_path("standard")
    raw = yaml.safe_load(suite_path.read_text())
    spec = read_suite_spec(suite_path)
    scenarios = {s["name"]: s for s in raw["scenarios"]}
    board = json.loads(LEADERBOARD.read_text())
    names = []
    for name in filter(None, args.scenarios.split(",")):
        if name not in scenarios:
            ap.error(f"no scenario {name!r} in the standard suite")
        if scenarios[name]["split"] != "train":
            ap.error(f"{name} is a {scenarios[name]['split']} scenario: only train scenarios may be used here")
        if name not in board["scenarios"]:
            ap.error(f"{name}: not in leaderboard.json")
        names.append(name)
    ctx = {"board": board, "base": yaml.safe_load(SUITE_EPISODES.read_text()), "scenarios": scenarios, "names": names,
           "tiers": {k: v.model_dump() for k, v in spec.slo_tiers.items()},
           "seeds": list(range(args.seed0, args.seed0 + args.episodes)),
           "only": set(filter(None, args.controllers.split(","))) or None}
    t0 = time.process_time()
    report = {"command": " ".join(["scripts/reward_rank_check.py", *(argv if argv is not None else sys.argv[1:])]),
              "episodes": args.episodes, "seeds": ctx["seeds"], "loads": {}}
    for load in loads:
        report["loads"][load] = run_load(load, args, ctx)
    report["cpu_s"] = time.process_time() - t0
    for load, r in report["loads"].items():
        print_table(r)
    report["variants"] = score_variants(report, board, variants, args.bootstrap)
    print(f"cpu {report['cpu_s']:.0f} s")
    if args.json:
        write_report(report, args.json)
    return 0


def print_table(report: dict) -> None:
    print(f"\n### load: {report['load']}\n")
    print("| scenario | controller | as | mean return ± sem | attainment | suite rate |")
    print("|---|---|---|---|---|---|")
    for name, s in report["scenarios"].items():
        for key, c in s["controllers"].items():
            print(f"| {name} | {key} | {c['as']} | {c['mean_return']:.2f} ± {c['sem_return']:.2f} | "
                  f"{c['mean_attainment']:.3f} | {c['serving_rate']:.2f} |")
    print()
    for name, s in report["scenarios"].items():
        lo, hi = s["spearman_bootstrap90"]
        print(f"{name}: rho {s['spearman']:.2f} (p {s['p_value']:.2f}; 90% episode bootstrap [{lo:.2f}, {hi:.2f}]); "
              f"pairs agree/disagree/tied {s['pairs_agree_disagree_tied']}")
    print(f"pooled (within-scenario standardised): rho {report['pooled_spearman']:.2f} (p {report['pooled_p_value']:.3f}); "
          f"pairs agree/disagree/tied {report['pairs_agree_disagree_tied']}; cpu {report['cpu_s']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
