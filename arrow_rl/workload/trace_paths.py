"""Where a trace is: a file path, or the short name of a real trace shipped inside the package.

The bundled files (``--workload azure-conv``) are copied unmodified from their upstream
repositories; ``data/README.md`` gives the source commits, licences (CC-BY 4.0 for Azure,
Apache-2.0 for Mooncake) and the statistics. This module only finds files: the loaders
(loaders.py) read them, and ``bundled.load_bundled`` loads a bundled trace by name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# name -> (file in arrow_rl/workload/data, format, expected rows as documented in data/README.md)
BUNDLED_TRACES: dict[str, tuple[str, str, int]] = {
    "azure-code": ("AzureLLMInferenceTrace_code.csv", "azure", 8819),
    "azure-conv": ("AzureLLMInferenceTrace_conv.csv", "azure", 19366),
    "mooncake": ("synthetic_trace.jsonl", "mooncake", 3993),
}


def bundled_trace_names() -> list[str]:
    return sorted(BUNDLED_TRACES)


def bundled_trace_path(name: str) -> Path:
    """Filesystem path of a bundled trace; raises ``KeyError`` listing the valid names."""
    try:
        filename = BUNDLED_TRACES[name][0]
    except KeyError:
        raise KeyError(f"no bundled trace {name!r}; bundled traces: {', '.join(bundled_trace_names())}") from None
    path = Path(str(resources.files("arrow_rl.workload.data").joinpath(filename)))
    if not path.is_file():  # a broken install (package data not shipped) must say so plainly
        raise FileNotFoundError(f"bundled trace {name!r} should be at {path} but is missing; "
                                "reinstall arrow-rl with its package data")
    return path


def resolve_trace_path(path_or_name: str | Path) -> Path:
    """An existing file wins; otherwise a bundled trace name; otherwise a clear error."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    if str(path_or_name) in BUNDLED_TRACES:
        return bundled_trace_path(str(path_or_name))
    if path.exists():
        raise IsADirectoryError(f"workload {str(path_or_name)!r} is not a file")
    raise FileNotFoundError(f"workload {str(path_or_name)!r}: no such file, and not a bundled trace "
                            f"name ({', '.join(bundled_trace_names())})")
