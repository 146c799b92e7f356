"""RandomResizedCrop: a random crop resized back to the image's size."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from tfcv._checks import check_seed

__all__ = ["RandomResizedCrop"]

_INTERPOLATIONS = ("bilinear", "nearest")


@keras.saving.register_keras_serializable(package="tfcv")
class RandomResizedCrop(keras.layers.Layer):
    """Crops a random part of each image and resizes it back to full size.

    Keras' `RandomCrop` returns smaller images and center-crops at inference;
    this layer keeps the image's shape and is the identity at inference, so
    it can sit anywhere in a model. Each image gets its own crop: a square
    fraction `s` of its height and width (the aspect ratio is kept), placed
    uniformly at random inside the image, then resized back.

    Args:
        factor: `float` or tuple `(min, max)`. The fraction of the height and
            width that a crop keeps, drawn per image uniformly from
            `[min, max]`, within `(0, 1]`. A float `f` means `(f, 1.0)`.
            Defaults to `0.9`.
        interpolation: `"bilinear"` or `"nearest"`. Defaults to
            `"bilinear"`.
        seed: `int`. Seed of the layer's `keras.random.SeedGenerator`.
            Defaults to `None` (drawn from Keras' global seed).
        **kwargs: Base layer keyword arguments (`name`, `dtype`).

    Call arguments:
        images: Images.
        training: `bool`. Crop when `True`; otherwise (`False` or not
            given) return the images unchanged.

    Input shape:
        `(batch, height, width, channels)` or `(height, width, channels)`.

    Output shape:
        Same as the input.

    Example:

    >>> crop = tfcv.layers.RandomResizedCrop(0.8, seed=0)
    >>> crop(images, training=True).shape == images.shape
    True
    """

    def __init__(self, factor=0.9, interpolation: str = "bilinear", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factor = _check_factor(factor)
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"Invalid value for argument `interpolation`. Received: interpolation={interpolation!r}. "
                f"Expected one of {_INTERPOLATIONS}."
            )
        self.interpolation = interpolation
        self.seed = check_seed("seed", seed, optional=True)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, images, training=None):
        # Unlike Keras' Random* layers, no `training` means inference: a
        # model exported with `model.export` must not crop at serving time.
        if not training:
            return images
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        shape = ops.shape(images)
        batch = shape[0]
        height = ops.cast(shape[1], "float32")
        width = ops.cast(shape[2], "float32")
        low, high = self.factor
        scale = keras.random.uniform((batch,), low, high, seed=self.seed_generator)
        where = keras.random.uniform((batch, 2), seed=self.seed_generator)
        # affine_transform maps each output pixel (x, y) to the input point
        # (scale * x + dx, scale * y + dy): the crop's corner is (dx, dy).
        dx = where[:, 0] * (1.0 - scale) * (width - 1.0)
        dy = where[:, 1] * (1.0 - scale) * (height - 1.0)
        zeros = ops.zeros_like(scale)
        transform = ops.stack([scale, zeros, dx, zeros, scale, dy, zeros, zeros], axis=1)
        outputs = ops.image.affine_transform(
            ops.cast(images, "float32"), transform, interpolation=self.interpolation, fill_mode="nearest"
        )
        outputs = ops.cast(outputs, self.compute_dtype)
        return outputs[0] if unbatched else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "factor": list(self.factor),
            "interpolation": self.interpolation,
            "seed": self.seed,
        }


def _check_factor(factor) -> tuple[float, float]:
    if isinstance(factor, numbers.Real) and not isinstance(factor, bool):
        low, high = float(factor), 1.0
    elif isinstance(factor, (tuple, list)) and len(factor) == 2 and all(
        isinstance(f, numbers.Real) and not isinstance(f, bool) for f in factor
    ):
        low, high = float(factor[0]), float(factor[1])
    else:
        raise TypeError(
            f"Invalid value for argument `factor`. Received: factor={factor!r}. "
            "Expected a float or a (min, max) pair of floats in (0, 1]."
        )
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(
            f"Invalid value for argument `factor`. Received: factor={factor!r}. "
            "Expected fractions with 0 < min <= max <= 1."
        )
    return low, high
