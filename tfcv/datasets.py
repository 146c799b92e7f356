"""Embedded in-memory datasets, as `keras.datasets` and `sklearn.datasets`."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Loads scikit-learn's bundled 8x8 handwritten digits (no download).

    The 1,797 images ship inside scikit-learn, so this works offline and is
    the default data of `tfcv run`.

    Returns:
        Tuple `(x, y)`: `x` is a float32 array of shape `(1797, 8, 8, 1)`
        scaled to `[0, 1]`; `y` is an int64 array of labels `0`-`9`.

    Example:

    >>> x, y = tfcv.datasets.load_digits()
    >>> x.shape, y.shape
    ((1797, 8, 8, 1), (1797,))
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    # The raw pixel intensities are integers in [0, 16].
    x = (bunch.images.astype("float32") / 16.0)[..., np.newaxis]
    y = bunch.target.astype("int64")
    return x, y
