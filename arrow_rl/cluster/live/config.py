"""Reading a live cluster's config file (``configs/live/*.yaml``) into its pydantic model.

Files are YAML or JSON; a bad field gets an error naming the file and the field. The launcher's
``LaunchConfig`` and the router's ``RouterConfig`` (``arrow_rl.serving.config``) are both read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from arrow_rl.config_io import format_validation_error, read_config_mapping

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)


def load_config_file(path: str | Path, model: type[ConfigModel]) -> ConfigModel:
    """Read YAML/JSON ``path`` into ``model``; errors name the file and the field."""
    data = read_config_mapping(path)
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise ValueError(f"{path}: {format_validation_error(exc)}") from None
