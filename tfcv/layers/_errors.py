"""How tfcv's layers word a rejected argument, with its parts kept."""

from __future__ import annotations


def invalid_value(path: str, detail: str, error: type[Exception] = ValueError) -> Exception:
    """The error ``Invalid value for `path`. detail``; the caller raises it.

    The exception carries `path` and `detail`, so that a `ModelSpec` can
    report the same rejection as a `SpecError` under its own key path.
    """
    exception = error(f"Invalid value for `{path}`. {detail}")
    exception.path, exception.detail = path, detail
    return exception

