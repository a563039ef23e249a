"""The emulator as it was before the speed work, importable beside today's, for same-process ratios.

``load()`` extracts ``arrow_rl/cluster/emulator/`` at ``BASE_REV`` from this checkout's git history
into a temporary package (its absolute imports of ``arrow_rl.cluster.emulator`` rewritten to the
package's own name; everything else, e.g. ``arrow_rl.cluster.base`` and the latency models, is
today's and shared) and returns it. Benchmarks time ``reference.EmulatedCluster`` and today's
``EmulatedCluster`` back to back in one process, so the ratio holds on a loaded, shared machine.

Without git or the history (an sdist, a shallow clone) ``load()`` returns None; the benchmarks then
compare with today's emulator on its reference path (``fastpath.ENABLED = False``) instead.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# main before the emulator speed work: the golden set (tests/golden/) was generated from it
BASE_REV = "8fb5c1b"
PKG = "arrow_rl/cluster/emulator"
# Names that moved since BASE_REV, rewritten in the extracted sources so the old engine runs against
# today's shared modules: the routers' package and the window field that holds finished requests'
# output lengths (the same values under their present names).
RENAMED = {"arrow_rl.scheduling": "arrow_rl.routing",
           "arrival_output_tokens_mean": "finished_output_tokens_mean"}
_loaded: dict[str, object] = {}
_tmp_dirs: list[Path] = []


@atexit.register
def _cleanup() -> None:
    for d in _tmp_dirs:
        shutil.rmtree(d, ignore_errors=True)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def load(rev: str = BASE_REV):
    """The emulator package at ``rev`` as a module (cached), or None if git cannot provide it."""
    if rev in _loaded:
        return _loaded[rev]
    name = f"_emulator_reference_{rev}"
    try:
        files = [f for f in _git("ls-tree", "--name-only", f"{rev}:{PKG}").split() if f.endswith(".py")]
        sources = {f: _git("show", f"{rev}:{PKG}/{f}") for f in files}
    except (OSError, subprocess.CalledProcessError):
        _loaded[rev] = None
        return None
    tmp = Path(tempfile.mkdtemp(prefix="emu-ref-"))
    _tmp_dirs.append(tmp)
    (tmp / name).mkdir()
    for f, text in sources.items():
        for old, new in {**RENAMED, "arrow_rl.cluster.emulator": name}.items():
            text = text.replace(old, new)
        (tmp / name / f).write_text(text)
    sys.path.insert(0, str(tmp))
    try:
        mod = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp))
    # Methods the Cluster interface gained after ``rev`` (what evaluation reads on any backend,
    # e.g. ``flip_history``) are left abstract by an older engine. No benchmark calls them, so the
    # reference class is made instantiable; calling one raises, as an unimplemented method should.
    cls = mod.EmulatedCluster
    for method in getattr(cls, "__abstractmethods__", ()):
        setattr(cls, method, _missing(method, rev))
    cls.__abstractmethods__ = frozenset()
    _loaded[rev] = mod
    return mod


def _missing(method: str, rev: str):
    def call(*_args, **_kwargs):
        raise NotImplementedError(f"the reference emulator of {rev} predates Cluster.{method}")
    return call
