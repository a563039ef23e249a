"""Start-up hook for vLLM instances launched by arrow-rl: NIXL without its busy-polling progress thread.

Why: NIXL's Python agent starts a progress thread with a zero delay (``pthrDelay = 0``), so every
idle vLLM instance with ``--kv-transfer-config`` keeps one core at 100%. On a small CPU machine two
idle instances use both cores and every request, health check and router step waits behind them
(measured: 1.99 busy cores idle with the connector, 0.02 without it). vLLM exposes no setting for
this, so the launcher puts this directory first on the instances' ``PYTHONPATH`` when
``LaunchConfig.nixl_progress_thread`` is false. Without the thread, UCX makes progress whenever
vLLM polls its transfers (every engine step checks them), which is all a pull-based hand-off needs.

The hook changes one default, ``nixl_agent_config(enable_prog_thread=...)``, when NIXL's ``_api``
module is first imported, and then runs any other ``sitecustomize`` that this one shadows.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

_API_MODULES = {"nixl_cu12._api", "nixl_cu13._api", "nixl_rocm._api", "nixl._api"}


def _patch(module) -> None:
    config = getattr(module, "nixl_agent_config", None)
    init = getattr(config, "__init__", None)
    defaults = getattr(init, "__defaults__", None)
    if defaults and isinstance(defaults[0], bool):
        init.__defaults__ = (False,) + defaults[1:]


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        _patch(module)


class _NixlFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _API_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


if os.environ.get("ARROW_RL_NIXL_PROGRESS_THREAD", "0") != "1":
    sys.meta_path.insert(0, _NixlFinder())


def _chain_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None and spec.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_chain_shadowed_sitecustomize()
