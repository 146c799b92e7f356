"""Reading YAML safely: the model spec and `tfcv run`'s configuration file.

A safe loader (no Python objects from the file) that also reads floats
written without a dot, such as `1e-3`, as numbers.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import yaml

from tfcv._checks import decode_utf8

__all__ = ["read_yaml"]


def read_yaml(path_or_text: str | os.PathLike) -> Any:
    """Parses a YAML file or text with a safe loader that also reads `1e-3`
    as a float.

    A one-line string is a path when it names a file, or when it ends in
    `.yaml` or `.yml` (then a missing file is an error, not one-word YAML).

    Raises:
        FileNotFoundError: If the path names no file.
        ValueError: If the text is not YAML, with the line it stopped at.
    """
    if isinstance(path_or_text, str) and "\n" not in path_or_text and (
        os.path.isfile(path_or_text) or path_or_text.strip().lower().endswith((".yaml", ".yml"))
    ):
        path_or_text = pathlib.Path(path_or_text)
    if isinstance(path_or_text, os.PathLike):
        where = f"YAML file {os.fspath(path_or_text)!r}"
        try:
            with open(path_or_text, "rb") as f:
                content = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(
                f"No YAML file at {os.fspath(path_or_text)!r}. Expected the path of an existing file, "
                "or the YAML text itself."
            ) from None
        # Decoded here, so that PyYAML's messages name the line, not the stream.
        text = decode_utf8(content, where)
    elif isinstance(path_or_text, str):
        text, where = path_or_text, "YAML text"
    else:
        raise TypeError(
            f"Invalid value for argument `path_or_text`. Received: {path_or_text!r}. "
            "Expected the path of a YAML file or YAML text."
        )
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as error:
        message = str(error).replace('in "<unicode string>", ', "")
        raise ValueError(f"Could not read the {where}: {message}") from None


def _loader():
    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            # PyYAML keeps the last of two equal keys: a key written twice
            # (`epochs: 5` ... `epochs: 50`) would silently lose one.
            if isinstance(node, yaml.MappingNode):
                first_line = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        line = first_line.setdefault(key, key_node.start_mark.line + 1)
                    except TypeError:  # an unhashable key: PyYAML's own error says so
                        break
                    if line != key_node.start_mark.line + 1:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found the key {key!r} a second time (first on line {line}); each key may appear once",
                            key_node.start_mark,
                        )
            return super().construct_mapping(node, deep=deep)

    # YAML 1.1 (PyYAML) needs a dot in a float: without this resolver
    # `learning_rate: 1e-3` would be the string "1e-3".
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader
