"""What an export starts from: a `keras.Model`, a `CVResult`, or their files."""

from __future__ import annotations

import os

import keras

from tfcv._run_dir import load_model_safely
from tfcv.result import CVResult

__all__ = ["CVResult", "resolve"]


def resolve(obj: keras.Model | CVResult | str | os.PathLike) -> tuple[list[keras.Model], CVResult | None]:
    """The models to export and the result they come from (`None` for a
    single `keras.Model`); a path is loaded with `safe_mode=True`."""
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if os.path.isdir(path):
            obj = CVResult.load(path)
        elif os.path.isfile(path) and path.endswith(".keras"):
            obj = load_model_safely(path)
        else:
            raise FileNotFoundError(
                f"Invalid value for argument `obj`. Received: obj={path!r}, which is neither a run directory "
                "nor a .keras file."
            )
    if isinstance(obj, CVResult):
        return list(obj.models), obj
    if isinstance(obj, keras.Model):
        return [obj], None
    raise TypeError(
        f"Invalid value for argument `obj`. Received: obj={obj!r} of type {type(obj).__name__}. "
        "Expected a keras.Model, a CVResult, or the path of a run directory or .keras file."
    )
