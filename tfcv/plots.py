"""Matplotlib figures.

Every function returns a `matplotlib.figure.Figure` made without pyplot, so
it works in notebooks, scripts and servers alike: show it in a notebook by
leaving it as the cell's value, or write it with `fig.savefig(path)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["augmentation_grid"]


def augmentation_grid(layer: Any, images: Any, n: int = 8, *, max_images: int = 8):
    """A grid of images and `n` randomly augmented variants of each.

    Row `i` shows image `i` in the first column ("original") and `n`
    independent draws of the augmentation in the next ones. Pixels are shown
    on the layer's `value_range` (or the images' own range), grayscale for
    one channel.

    Args:
        layer: A `tfcv.layers.Augmentation` (called with `randomized=True`),
            or any Keras layer or callable that augments when called with
            `training=True`.
        images: Array of images, `(batch, height, width, channels)`.
        n: `int`. Augmented variants per image. Defaults to `8`.
        max_images: `int`. Rows shown at most (the first images). Defaults
            to `8`.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> augment = tfcv.layers.Augmentation([{"rotate": 0.1}, {"zoom": 0.1}])
    >>> fig = tfcv.plots.augmentation_grid(augment, x[:4], n=6)
    >>> fig.savefig("augmentation.png")
    """
    from matplotlib.figure import Figure

    from tfcv.layers.augmentation import Augmentation

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Invalid value for argument `n`. Received: n={n!r}. Expected an int >= 1.")
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[np.newaxis]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"Invalid value for argument `images`. Received an array of shape {images.shape}. "
            "Expected a non-empty batch of images (batch, height, width, channels)."
        )
    images = images[:max_images]
    # All variants in one batch: one call, each image augmented independently.
    batch = np.repeat(images, n, axis=0)
    if isinstance(layer, Augmentation):
        augmented = layer(batch, randomized=True)
    else:
        augmented = layer(batch, training=True)
    augmented = np.asarray(augmented).reshape((len(images), n) + images.shape[1:])

    value_range = getattr(layer, "value_range", None)
    low, high = (float(value_range[0]), float(value_range[1])) if value_range is not None else (
        float(images.min()), float(images.max()))
    if high <= low:
        high = low + 1.0

    rows, cols = len(images), n + 1
    fig = Figure(figsize=(1.3 * cols, 1.3 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        for j in range(cols):
            image = images[i] if j == 0 else augmented[i, j - 1]
            ax = axes[i, j]
            _show(ax, image, low, high)
            if i == 0:
                ax.set_title("original" if j == 0 else f"augmented {j}", fontsize=8)
    return fig


def _show(ax, image, low, high) -> None:
    image = (np.clip(image.astype("float64"), low, high) - low) / (high - low)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image[..., :3])
    ax.set_xticks([])
    ax.set_yticks([])
