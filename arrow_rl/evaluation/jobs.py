"""The one job loop of the evaluation: run keyed jobs here, in spawned worker processes, or on Ray.

A job is a top-level function of picklable arguments whose last argument is a progress hook (or
None). Every backend calls the same function on the same arguments, so a job's result does not
depend on where it ran (``tests/test_ray_backend.py``); only the hook's route differs: called
directly here, posted through a manager queue from worker processes, or through a Ray queue from
Ray tasks (``arrow_rl.evaluation.ray_backend``), and relayed to ``progress`` in this process.

The first failing job ends the run: queued jobs are cancelled and running ones stopped, rather
than run for results nobody will see (a failure once kept both cores busy for an hour).
"""

from __future__ import annotations

import queue as queue_mod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Hashable, Sequence

Calls = Sequence[tuple[Hashable, tuple]]
OnDone = Callable[[Hashable, Any], None]
DescribeError = Callable[[Hashable, Exception], Exception]
BACKENDS = ("local", "ray")


def run_jobs(fn: Callable[..., Any], calls: Calls, *, jobs: int = 1, backend: str = "local",
             ray_address: str | None = None, progress: Callable[..., None] | None = None,
             on_done: OnDone | None = None, describe_error: DescribeError | None = None,
             shared: Sequence[int] = ()) -> dict[Hashable, Any]:
    """``{key: fn(*args, hook)}`` for every ``(key, args)`` of ``calls``, in order of completion.

    ``backend``: ``local`` (in this process when ``jobs`` <= 1, else ``jobs`` spawned worker
    processes) or ``ray`` (one task per call at ``ray_address``; ``jobs`` unused). ``hook(*item)``
    reaches ``progress(*item)`` here. ``on_done(key, result)`` runs as each job finishes. A job's
    error is raised again as ``describe_error(key, exc)`` (the error itself when that returns it).
    ``shared``: argument positions that hold the same object in every call (sent to Ray once)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "ray":
        from arrow_rl.evaluation.ray_backend import run_jobs as run_on_ray

        return run_on_ray(fn, calls, progress=progress, notify_arg=True, on_done=on_done,
                          describe_error=describe_error, address=ray_address, shared=shared)
    if jobs <= 1:
        return _run_here(fn, calls, progress, on_done, describe_error)
    return _run_in_pool(fn, calls, jobs, progress, on_done, describe_error)


def _run_here(fn: Callable[..., Any], calls: Calls, progress: Callable[..., None] | None,
              on_done: OnDone | None, describe_error: DescribeError | None) -> dict[Hashable, Any]:
    done: dict[Hashable, Any] = {}
    for key, args in calls:
        try:
            done[key] = fn(*args, progress)
        except Exception as exc:  # noqa: BLE001 - re-raised, described, below
            _reraise(key, exc, describe_error)
        if on_done is not None:
            on_done(key, done[key])
    return done


def _run_in_pool(fn: Callable[..., Any], calls: Calls, jobs: int, progress: Callable[..., None] | None,
                 on_done: OnDone | None, describe_error: DescribeError | None) -> dict[Hashable, Any]:
    import multiprocessing as mp

    done: dict[Hashable, Any] = {}
    with mp.Manager() as manager:
        q = manager.Queue()
        hook = _Notifier(q) if progress is not None else None
        pool = process_pool(jobs)
        failed = True
        try:
            futures: dict[Future, Hashable] = {pool.submit(fn, *args, hook): key for key, args in calls}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(q, progress)
                for fut in finished:
                    key = futures[fut]
                    try:
                        done[key] = fut.result()
                    except Exception as exc:  # noqa: BLE001 - re-raised, described, below
                        _reraise(key, exc, describe_error)
                    if on_done is not None:
                        on_done(key, done[key])
            _drain(q, progress)
            failed = False
        finally:
            _shut_down(pool, failed)
    return done


def _shut_down(pool: ProcessPoolExecutor, failed: bool) -> None:
    """Close the pool; after a failure, cancel the queued jobs and stop the running ones
    (ProcessPoolExecutor has no public way to stop a running job)."""
    running = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=not failed, cancel_futures=True)
    if failed:
        for proc in running:
            proc.terminate()


def _reraise(key: Hashable, exc: Exception, describe_error: DescribeError | None) -> None:
    described = describe_error(key, exc) if describe_error is not None else exc
    if described is exc:
        raise exc
    raise described from exc


def process_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker pool for jobs. Spawned, not forked: a forked child of a process whose torch/OpenMP
    thread pool is already running can spin for minutes in torch's first parallel op (seen when a
    checkpoint controller initialises its network); one compute thread per worker."""
    import multiprocessing as mp

    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker)


def _init_worker() -> None:
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


class _Notifier:
    """Picklable progress hook: worker processes post each call's arguments to a manager queue."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def __call__(self, *item: Any) -> None:
        self.q.put(item)


def _drain(q: Any, progress: Callable[..., None] | None) -> None:
    if progress is None:
        return
    while True:
        try:
            item = q.get_nowait()
        except queue_mod.Empty:
            return
        progress(*item)
