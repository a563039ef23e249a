"""Reading config files at the boundary: one place that turns a YAML/JSON file into a mapping and
a pydantic ``ValidationError`` into a one-line message that names the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigFileError(ValueError):
    """A config file that cannot be read or is not a mapping; the message names the file."""


class ConfigFileNotFound(ConfigFileError, FileNotFoundError):
    """The config file does not exist (also a ``FileNotFoundError``)."""


def read_config_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Parse ``path`` (YAML, or JSON for ``.json``) and return its top-level mapping.

    An empty file is an empty mapping. Errors name the file and say what was wrong with it.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileNotFound(f"{p}: {what} file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{p}: not a text file (byte {exc.start} is not UTF-8); expected a YAML/JSON "
                              f"{what}") from None
    except OSError as exc:
        raise ConfigFileError(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    is_json = p.suffix == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())  # PyYAML's messages span lines; keep one line
        raise ConfigFileError(f"{p}: not valid {'JSON' if is_json else 'YAML'}: {detail}") from None
    except RecursionError:
        raise ConfigFileError(f"{p}: nested too deeply to be a {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{p}: expected a mapping of {what} fields at the top level, "
                              f"got {type(data).__name__}")
    return data


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One clause per problem: ``field.path: message (got value)``. ``prefix`` (e.g. ``"env."``) is put
    before every field path, for a model validated as one block of a larger file."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "config"
        if prefix:
            loc = prefix + loc if loc != "config" else prefix.rstrip(".")
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        got = err.get("input")
        got_s = "" if isinstance(got, dict) or got is None or repr(got) in msg else f" (got {got!r})"
        parts.append(f"{msg}" if loc == "config" else f"{loc}: {msg}{got_s}")
    return "; ".join(parts)
