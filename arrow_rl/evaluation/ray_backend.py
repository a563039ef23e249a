"""Run evaluation jobs as Ray tasks (``--backend ray``): the Ray side of the job loop
(``arrow_rl.evaluation.jobs``), the same job functions on a Ray cluster.

Why the unit of work is a whole job (one (scenario, controller) search over every seed) and not
one (seed, rate) point: the points of a search are sequential (each rate depends on the attainment
at the last one), and the static job's cross-fitting reuses every seed's runs, so splitting finer
would only chain dependent tasks or repeat runs. A job is exactly what a local worker process
runs, so the Ray backend returns the local backend's results bit for bit
(``tests/test_ray_backend.py``); a job is tens to thousands of simulations, so the ~1-2 ms a Ray
task costs (docs/scaling.md) is negligible.

Ray is an optional dependency (``pip install -e ".[ray]"``); ``require_ray`` turns its absence into
one clear error. The driver connects with ``connect`` (a running cluster's address, or a local
Ray started for this process) and keeps the workers' per-simulation progress flowing back through
a Ray queue, so the progress bar moves as it does with the process pool.
"""

from __future__ import annotations

import queue as queue_mod
from typing import Any, Callable, Hashable, Sequence

INSTALL_HINT = 'Ray is not installed; install the extra with: pip install -e ".[ray]"'


class RayUnavailable(RuntimeError):
    """Ray is not importable (the optional ``ray`` extra is not installed)."""


def require_ray() -> Any:
    """The ``ray`` module, or ``RayUnavailable`` with the install command."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray, unless already connected. ``address``: ``auto`` (a cluster
    started with ``ray start`` on this machine), ``HOST:PORT`` of a head node, or None for a
    private local Ray with ``num_cpus`` CPUs (default: all). Returns True when this call started
    the connection (the caller then shuts it down with ``disconnect``)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    # "local" starts a new private Ray even when `ray start` left a cluster on this machine (plain
    # ray.init() would join that one): no address means this process's own Ray, as documented.
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "address": address or "local"}
    if not address and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ValueError(f"--ray-address {address}: cannot connect to a Ray cluster ({exc}); a cluster with token "
                         "authentication (Ray's default) also needs RAY_AUTH_MODE=token and its token in "
                         "~/.ray/auth_token here (docs/scaling.md)") from None
    return True


def disconnect(started: bool) -> None:
    if started:
        require_ray().shutdown()


class ray_session:
    """``with ray_session(address):`` one connection for a whole command (several ``run_jobs``
    calls then share it instead of starting a local Ray each)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus, self.started = address, num_cpus, False

    def __enter__(self) -> "ray_session":
        self.started = connect(self.address, self.num_cpus)
        return self

    def __exit__(self, *exc: object) -> None:
        disconnect(self.started)


class _QueueNotifier:
    """Picklable progress hook for Ray workers: posts each call's arguments to a Ray queue."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def __call__(self, *item: Any) -> None:
        self.q.put_nowait(item)


def run_jobs(fn: Callable[..., Any], calls: Sequence[tuple[Hashable, tuple]], *,
             progress: Callable[..., None] | None = None, notify_arg: bool = False,
             on_done: Callable[[Hashable, Any], None] | None = None,
             describe_error: Callable[[Hashable, Exception], Exception] | None = None,
             address: str | None = None, shared: Sequence[int] = ()) -> dict[Hashable, Any]:
    """Run ``fn(*args)`` for every ``(key, args)`` of ``calls`` as one Ray task each (1 CPU) and
    return ``{key: result}``. With ``notify_arg`` a progress hook (or None without ``progress``)
    is appended to each call's arguments; what workers post to it reaches ``progress`` here.
    ``shared``: indices of arguments that are the same object in every call (a scenario's load, a
    workload), put into Ray's object store once instead of once per task. ``on_done(key, result)``
    runs as each task finishes. A task's error stops the run (the other tasks are cancelled) and
    is raised again here, as ``describe_error(key, exc)`` when given."""
    ray = require_ray()
    started = connect(address)
    try:
        from ray.util.queue import Queue

        q = Queue() if (notify_arg and progress is not None) else None
        notify = _QueueNotifier(q) if q is not None else None
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        stored: dict[int, Any] = {}  # id(argument) -> ObjectRef, for the ``shared`` positions
        refs: dict[Any, Hashable] = {}
        for key, args in calls:
            args = list(args)
            for i in shared:
                if id(args[i]) not in stored:
                    stored[id(args[i])] = ray.put(args[i])
                args[i] = stored[id(args[i])]
            if notify_arg:
                args.append(notify)
            refs[remote.remote(*args)] = key
        results: dict[Hashable, Any] = {}
        pending = list(refs)
        try:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                _drain(q, progress)
                for ref in finished:
                    key = refs[ref]
                    try:
                        results[key] = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - re-raised as the task's own error below
                        raise _unwrap(exc, key, describe_error) from None
                    if on_done is not None:
                        on_done(key, results[key])
            _drain(q, progress)
        finally:
            for ref in pending:  # a failed task ends the run: nobody will read the others' results
                ray.cancel(ref, force=True)
            if q is not None:
                q.shutdown()
        return results
    finally:
        disconnect(started)


def _unwrap(exc: Exception, key: Hashable, describe: Callable[[Hashable, Exception], Exception] | None) -> Exception:
    """The worker's own exception (Ray wraps it in a RayTaskError that subclasses its type)."""
    cause = getattr(exc, "cause", None)
    original = cause if isinstance(cause, Exception) else exc
    return describe(key, original) if describe is not None else original


def _drain(q: Any, progress: Callable[..., None] | None) -> None:
    if q is None or progress is None:
        return
    while True:
        try:
            item = q.get_nowait()
        except queue_mod.Empty:  # ray.util.queue.Empty subclasses it
            return
        progress(*item)
