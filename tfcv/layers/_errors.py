"""How tfcv's layers word a rejected argument, with its parts kept."""

from __future__ import annotations

import numbers


def invalid_value(path: str, detail: str, error: type[Exception] = ValueError) -> Exception:
    """The error ``Invalid value for `path`. detail``; the caller raises it.

    The exception carries `path` and `detail`, so that a `ModelSpec` can
    report the same rejection as a `SpecError` under its own key path.
    """
    exception = error(f"Invalid value for `{path}`. {detail}")
    exception.path, exception.detail = path, detail
    return exception


def check_seed(seed) -> int | None:
    """A layer's `seed`: `None`, or an int (NumPy ints too, kept as `int`:
    Keras' `SeedGenerator` refuses `np.int64(3)` as "must be an integer").

    Raises:
        TypeError: For anything else, naming the value.
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"Invalid value for argument `seed`. Received: seed={seed!r}. Expected an int or None.")
    return int(seed)
