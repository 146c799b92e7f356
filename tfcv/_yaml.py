"""Reading YAML safely: the model spec and `tfcv run`'s configuration file.

A safe loader (no Python objects from the file) that also reads floats
written without a dot, such as `1e-3`, as numbers.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

__all__ = ["read_yaml"]


def read_yaml(path_or_text: str | os.PathLike) -> Any:
    """Parses a YAML file or text with a safe loader that also reads `1e-3`
    as a float."""
    if isinstance(path_or_text, os.PathLike) or (
        isinstance(path_or_text, str) and "\n" not in path_or_text and os.path.isfile(path_or_text)
    ):
        with open(path_or_text, encoding="utf-8") as f:
            text = f.read()
    elif isinstance(path_or_text, str):
        text = path_or_text
    else:
        raise TypeError(
            f"Invalid value for argument `path_or_text`. Received: {path_or_text!r}. "
            "Expected the path of a YAML file or YAML text."
        )
    return yaml.load(text, Loader=_loader())


def _loader():
    class Loader(yaml.SafeLoader):
        pass

    # YAML 1.1 (PyYAML) needs a dot in a float: without this resolver
    # `learning_rate: 1e-3` would be the string "1e-3".
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader
