"""Arrow §5.2 instance profiles measured on live instances, cached as JSON.

T(n) (prefill time of an n-token prompt) is fitted from lone ``max_tokens=1`` requests; the
decode interval from concurrent streams' inter-chunk gaps against the batch's total tokens.
The fit itself reuses ``arrow_rl.perf``'s functional form (``InstanceProfile``).
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from arrow_rl.perf.profile import InstanceProfile

# The paper does not give the live grid; these fit within a 1024-token model and take seconds on CPU.
DEFAULT_PREFILL_LENGTHS: tuple[int, ...] = (64, 128, 256, 512, 768)
DEFAULT_DECODE_BATCHES: tuple[int, ...] = (1, 2, 4, 8)
DEFAULT_DECODE_CONTEXT = 256
DEFAULT_DECODE_STEPS = 24


def save_profiles(path: str | Path, profiles: dict[int, InstanceProfile], meta: dict | None = None) -> None:
    data = {"profiles": {str(k): asdict(v) for k, v in sorted(profiles.items())}, "meta": meta or {}}
    Path(path).write_text(json.dumps(data, indent=2), encoding="utf-8")


def load_profiles(path: str | Path) -> dict[int, InstanceProfile]:
    """Read a profile cache; errors name the file and the instance."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: cannot read profiles: {exc}") from exc
    out: dict[int, InstanceProfile] = {}
    raw = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{p}: expected an object with a non-empty 'profiles' mapping")
    for key, fields in raw.items():
        try:
            out[int(key)] = InstanceProfile(**fields)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p}: profile of instance {key!r} is invalid: {exc}") from exc
    return out


def fit_prefill(lengths: Sequence[float], times: Sequence[float]) -> tuple[float, float, float]:
    """Relative least squares of T(n) = a·n² + b·n + c (as ``arrow_rl.perf.profile``), a ≥ 0."""
    x = np.asarray(lengths, dtype=float)
    t = np.asarray(times, dtype=float)
    w = 1.0 / np.maximum(t, 1e-6)
    A = np.column_stack([x * x, x, np.ones_like(x)]) * w[:, None]
    a, b, c = np.linalg.lstsq(A, t * w, rcond=None)[0]
    if a < 0:  # a measured curve that bends down is noise on a short grid: fit a line instead
        b, c = np.linalg.lstsq(A[:, 1:], t * w, rcond=None)[0]
        a = 0.0
    return float(a), float(b), float(c)


def fit_decode(batch_tokens: Sequence[float], intervals: Sequence[float]) -> tuple[float, float]:
    """interval(N) = slope·N + intercept; slope is floored at a tiny positive value so that
    MT(i, SLO_TPOT) = (SLO − intercept)/slope stays finite (Arrow §5.3).

    A decode step has a positive fixed cost; on a noisy (shared-CPU) measurement a free fit can
    put the intercept below zero, which would inflate MT. Then the line is refitted through the
    origin (least squares with intercept 0), the closest physical fit."""
    n = np.asarray(batch_tokens, float)
    y = np.asarray(intervals, float)
    slope, intercept = np.polyfit(n, y, 1)
    if intercept < 0:
        slope, intercept = float(n @ y / (n @ n)), 0.0
    return max(float(slope), 1e-9), float(intercept)


def _prompt(rng: np.random.Generator, n: int, vocab: int) -> list[int]:
    # Distinct random ids per request so vLLM's prefix cache never shortens a measurement.
    return rng.integers(10, vocab, size=n).tolist()


def measure_instance(url: str, model: str, *, vocab: int = 1000,
                     prefill_lengths: Sequence[int] = DEFAULT_PREFILL_LENGTHS, repeats: int = 3,
                     decode_batches: Sequence[int] = DEFAULT_DECODE_BATCHES,
                     decode_context: int = DEFAULT_DECODE_CONTEXT, decode_steps: int = DEFAULT_DECODE_STEPS,
                     seed: int = 0, timeout_s: float = 120.0, api_key: str | None = None) -> tuple[InstanceProfile, dict]:
    """Measure one instance directly (not through the router) and fit its profile."""
    import httpx

    rng = np.random.default_rng(seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(timeout=timeout_s, headers=headers)
    url = url.rstrip("/")
    try:
        # Warm-up: the first request pays one-time costs (graph capture, allocator).
        client.post(url + "/v1/completions", json={"model": model, "prompt": _prompt(rng, 16, vocab),
                                                   "max_tokens": 2, "ignore_eos": True}).raise_for_status()
        lens, times = [], []
        for n in prefill_lengths:
            samples = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = client.post(url + "/v1/completions", json={"model": model, "prompt": _prompt(rng, n, vocab),
                                                               "max_tokens": 1, "ignore_eos": True})
                r.raise_for_status()
                samples.append(time.perf_counter() - t0)
            lens.append(n)
            times.append(min(samples))  # the least-disturbed run: other load only adds time
        a, b, c = fit_prefill(lens, times)

        def stream_itl(prompt: list[int]) -> float:
            gaps, last = [], None
            body = {"model": model, "prompt": prompt, "max_tokens": decode_steps, "ignore_eos": True,
                    "stream": True}
            with client.stream("POST", url + "/v1/completions", json=body) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    now = time.perf_counter()
                    if last is not None:
                        gaps.append(now - last)
                    last = now
            return statistics.median(gaps) if gaps else float("nan")

        ns, ivs = [], []
        for bsz in decode_batches:
            prompts = [_prompt(rng, decode_context, vocab) for _ in range(bsz)]
            with ThreadPoolExecutor(max_workers=bsz) as pool:
                itls = [x for x in pool.map(stream_itl, prompts) if x == x]
            if itls:
                ns.append(bsz * (decode_context + decode_steps / 2))
                ivs.append(statistics.median(itls))
        slope, intercept = fit_decode(ns, ivs) if len(ns) >= 2 else (1e-9, ivs[0] if ivs else 0.0)
    finally:
        client.close()
    prof = InstanceProfile(prefill_a=a, prefill_b=b, prefill_c=c, decode_slope=slope, decode_intercept=intercept)
    points = {"prefill": list(zip(lens, times)), "decode": list(zip(ns, ivs))}
    return prof, points


def measure_cluster(urls: Sequence[str], model: str, **kw) -> tuple[dict[int, InstanceProfile], dict]:
    """Profile every instance in turn (sequentially, so one measurement never disturbs another)."""
    profiles, points = {}, {}
    for i, u in enumerate(urls):
        profiles[i], points[str(i)] = measure_instance(u, model, **kw)
    return profiles, {"points": points, "urls": list(urls), "model": model, "measured_at": time.time()}
