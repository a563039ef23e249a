"""Arrow §5.2 instance profiles measured on live instances, cached as JSON.

T(n) (prefill time of an n-token prompt) is fitted from lone ``max_tokens=1`` requests; the
decode interval from concurrent streams' inter-chunk gaps against the batch's total tokens.
The fit itself reuses ``arrow_rl.perf``'s functional form (``InstanceProfile``).

Why the prefill fit is robust rather than plain least squares: on a shared CPU host one timed
request in five can be slowed several-fold by other load, and a short grid of per-length minima
then gave a *falling* T(n) (a fitted ``b < 0`` was seen). So every length is timed ``repeats``
times in a shuffled order (a burst of load hits several lengths a little rather than one length
completely), all samples enter a Huber-weighted fit whose coefficients are constrained to be
non-negative (a prefill cannot get faster with a longer prompt), and the fit is checked: when the
samples do not rise with length beyond chance (a rank test), the profile is flagged
``prefill_credible: false`` and ``arrow-rl live-profile`` prints a warning.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from arrow_rl.perf.profile import InstanceProfile

# The paper does not give the live grid; these fit within a 1024-token model and take seconds on CPU.
DEFAULT_PREFILL_LENGTHS: tuple[int, ...] = (64, 128, 256, 512, 768)
DEFAULT_DECODE_BATCHES: tuple[int, ...] = (1, 2, 4, 8)
DEFAULT_DECODE_CONTEXT = 256
DEFAULT_DECODE_STEPS = 24
DEFAULT_REPEATS = 5
# Huber threshold in units of the robust residual scale (1.345: 95% efficiency under Gaussian noise).
HUBER_K = 1.345
# A prefill fit is credible when the samples rise with length at this one-sided significance.
CREDIBLE_P = 0.01


class ProfileError(RuntimeError):
    """An instance could not be profiled (unreachable, errors); the message names it."""


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


def fit_prefill(lengths: Sequence[float], times: Sequence[float], iterations: int = 20) -> tuple[float, float, float]:
    """Robust fit of T(n) = a·n² + b·n + c with a, b, c ≥ 0, from every timed sample.

    Relative residuals (as ``arrow_rl.perf.profile``), Huber weights from iteratively reweighted
    non-negative least squares: a few samples slowed by outside load get down-weighted instead of
    bending the curve, and a noisy grid can no longer produce a prefill time that falls with length.
    """
    from scipy.optimize import nnls

    x = np.asarray(lengths, dtype=float)
    t = np.asarray(times, dtype=float)
    keep = np.isfinite(x) & np.isfinite(t) & (t > 0)
    x, t = x[keep], t[keep]
    if x.size == 0:
        raise ValueError("no valid prefill samples to fit")
    scale_n = max(float(x.max()), 1.0)  # fit in n/n_max so the columns are of similar size
    u = x / scale_n
    design = np.column_stack([u * u, u, np.ones_like(u)])
    rel = 1.0 / t
    w = np.ones_like(t)
    coef = np.zeros(3)
    for _ in range(iterations):
        sw = np.sqrt(w) * rel
        coef, _ = nnls(design * sw[:, None], t * sw)
        r = (design @ coef - t) * rel
        mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
        if mad <= 1e-12:
            break
        z = np.abs(r) / (HUBER_K * mad)
        w_new = np.where(z <= 1.0, 1.0, 1.0 / np.maximum(z, 1e-12))
        if np.allclose(w_new, w, atol=1e-6):
            break
        w = w_new
    a, b, c = coef
    return float(a / scale_n**2), float(b / scale_n), float(c)


def prefill_credibility(lengths: Sequence[float], times: Sequence[float],
                        fit: tuple[float, float, float]) -> tuple[bool, str]:
    """Does the prefill time measurably grow with prompt length? Returns (credible, why).

    Credible when the fitted T(n) grows over the measured range *and* the samples themselves rise
    with length beyond chance: Kendall's tau of time against length over every sample, one-sided
    p < ``CREDIBLE_P``. A rank test is used because it ignores how much a disturbed sample is off,
    and it stays honest for a constrained fit (which by construction never falls).
    """
    from scipy.stats import kendalltau

    x = np.asarray(lengths, dtype=float)
    t = np.asarray(times, dtype=float)
    grid = np.unique(x)
    if grid.size < 2:
        return False, "fewer than two distinct prompt lengths"
    a, b, c = fit
    lo, hi = float(grid[0]), float(grid[-1])
    growth = (a * hi * hi + b * hi + c) - (a * lo * lo + b * lo + c)
    med_lo, med_hi = float(np.median(t[x == lo])), float(np.median(t[x == hi]))
    tau, p_two = kendalltau(x, t)
    p = p_two / 2 if tau > 0 else 1.0 - p_two / 2
    detail = (f"median {1e3 * med_lo:.2f} ms at {lo:g} tokens, {1e3 * med_hi:.2f} ms at {hi:g}; "
              f"Kendall tau {tau:.2f}, p {p:.3g} over {t.size} samples")
    if not growth > 0 or not med_hi > med_lo:
        return False, "prefill time does not grow with prompt length (" + detail + ")"
    if not p < CREDIBLE_P:
        return False, "the growth with prompt length is within the timing noise (" + detail + ")"
    return True, detail


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


def _time_prefills(client: Any, url: str, model: str, rng: np.random.Generator, vocab: int,
                   lengths: Sequence[int], repeats: int) -> list[tuple[int, float]]:
    """(prompt length, seconds) of one-token requests: every (length, repeat) once, in a shuffled
    order, so a burst of outside load spreads over several lengths instead of shifting one
    length's whole sample."""
    schedule = [int(n) for n in lengths for _ in range(repeats)]
    rng.shuffle(schedule)
    samples: list[tuple[int, float]] = []
    for n in schedule:
        prompt = _prompt(rng, n, vocab)
        t0 = time.perf_counter()
        r = client.post(url + "/v1/completions", json={"model": model, "prompt": prompt,
                                                       "max_tokens": 1, "ignore_eos": True})
        r.raise_for_status()
        samples.append((n, time.perf_counter() - t0))
    return samples


def _stream_itl(client: Any, url: str, model: str, prompt: list[int], steps: int) -> float:
    """Median gap between the streamed chunks of one request (NaN with fewer than two chunks)."""
    gaps, last = [], None
    body = {"model": model, "prompt": prompt, "max_tokens": steps, "ignore_eos": True, "stream": True}
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


def _time_decode(client: Any, url: str, model: str, rng: np.random.Generator, vocab: int,
                 batches: Sequence[int], context: int, steps: int) -> tuple[list[float], list[float]]:
    """(batch tokens, median inter-token interval) with each batch size's requests decoding at once."""
    ns, ivs = [], []
    for bsz in batches:
        prompts = [_prompt(rng, context, vocab) for _ in range(bsz)]
        with ThreadPoolExecutor(max_workers=bsz) as pool:
            itls = [x for x in pool.map(lambda p: _stream_itl(client, url, model, p, steps), prompts) if x == x]
        if itls:
            ns.append(bsz * (context + steps / 2))
            ivs.append(statistics.median(itls))
    return ns, ivs


def measure_instance(url: str, model: str, *, vocab: int = 1000,
                     prefill_lengths: Sequence[int] = DEFAULT_PREFILL_LENGTHS, repeats: int = DEFAULT_REPEATS,
                     decode_batches: Sequence[int] = DEFAULT_DECODE_BATCHES,
                     decode_context: int = DEFAULT_DECODE_CONTEXT, decode_steps: int = DEFAULT_DECODE_STEPS,
                     seed: int = 0, timeout_s: float = 120.0, api_key: str | None = None) -> tuple[InstanceProfile, dict]:
    """Measure one instance directly (not through the router) and fit its profile.

    Returns the profile and the points: ``prefill`` (length, median time) per length,
    ``prefill_samples`` (every timed sample), ``decode`` (batch tokens, interval), and
    ``prefill_credible`` / ``prefill_check`` (see :func:`prefill_credibility`).
    Raises :class:`ProfileError` naming the URL when the instance cannot be measured.
    """
    import httpx

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(timeout=timeout_s, headers=headers)
    url = url.rstrip("/")
    try:
        # Warm-up: the first request pays one-time costs (graph capture, allocator).
        client.post(url + "/v1/completions", json={"model": model, "prompt": _prompt(rng, 16, vocab),
                                                   "max_tokens": 2, "ignore_eos": True}).raise_for_status()
        samples = _time_prefills(client, url, model, rng, vocab, prefill_lengths, repeats)
        xs = [n for n, _ in samples]
        ts = [t for _, t in samples]
        a, b, c = fit_prefill(xs, ts)
        credible, why = prefill_credibility(xs, ts, (a, b, c))
        lens = sorted(set(xs))
        times = [float(np.median([t for n, t in samples if n == m])) for m in lens]
        ns, ivs = _time_decode(client, url, model, rng, vocab, decode_batches, decode_context, decode_steps)
        slope, intercept = fit_decode(ns, ivs) if len(ns) >= 2 else (1e-9, ivs[0] if ivs else 0.0)
    except httpx.HTTPStatusError as exc:
        raise ProfileError(f"{url}: HTTP {exc.response.status_code} while profiling "
                           f"({exc.response.text[:200]!r}); is the model name {model!r} right?") from None
    except httpx.HTTPError as exc:
        raise ProfileError(f"{url}: cannot profile ({type(exc).__name__}: {exc})") from None
    finally:
        client.close()
    prof = InstanceProfile(prefill_a=a, prefill_b=b, prefill_c=c, decode_slope=slope, decode_intercept=intercept)
    points = {"prefill": list(zip(lens, times)), "prefill_samples": samples, "decode": list(zip(ns, ivs)),
              "prefill_credible": credible, "prefill_check": why}
    return prof, points


def measure_cluster(urls: Sequence[str], model: str, **kw) -> tuple[dict[int, InstanceProfile], dict]:
    """Profile every instance in turn (sequentially, so one measurement never disturbs another).

    ``meta["warnings"]`` lists every instance whose prefill fit is not credible."""
    profiles, points, warnings = {}, {}, []
    for i, u in enumerate(urls):
        profiles[i], points[str(i)] = measure_instance(u, model, **kw)
        if not points[str(i)]["prefill_credible"]:
            warnings.append(f"instance {i} ({u}): the prefill fit is not credible: {points[str(i)]['prefill_check']}; "
                            "rerun on a quieter host, with more --repeats, or with longer --lengths")
    return profiles, {"points": points, "urls": list(urls), "model": model, "measured_at": time.time(),
                      "warnings": warnings}
