"""Augmentation: image augmentation as one Keras layer, described as data."""

from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcv._checks import check_seed
from tfcv.layers._errors import invalid_value
from tfcv.layers.mixing import check_mixing_value
from tfcv.layers.random_resized_crop import RandomResizedCrop
from tfcv.layers.randomized import augmentation_randomized

__all__ = ["Augmentation", "AUGMENTATIONS"]


class _Kind:
    """One augmentation name: the layer it makes and what a bare value means."""

    def __init__(self, layer_cls, primary: tuple[str, ...], *, needs_rgb: bool = False, flag: bool = False):
        self.layer_cls = layer_cls
        self.primary = primary
        self.needs_rgb = needs_rgb
        # `flag`: `True` alone means "with the layer's defaults".
        self.flag = flag

    def parameters(self) -> list[str]:
        signature = inspect.signature(self.layer_cls.__init__)
        return [
            p.name for p in signature.parameters.values()
            if p.name not in ("self", "data_format", "name")
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]


# name -> (Keras layer, argument(s) a bare value sets). Keras has a layer for
# every entry but "crop": its RandomCrop changes the image size and
# center-crops at inference.
_KINDS: dict[str, _Kind] = {
    "flip": _Kind(keras.layers.RandomFlip, ("mode",)),
    "rotate": _Kind(keras.layers.RandomRotation, ("factor",)),
    "zoom": _Kind(keras.layers.RandomZoom, ("height_factor",)),
    "translate": _Kind(keras.layers.RandomTranslation, ("height_factor", "width_factor")),
    "crop": _Kind(RandomResizedCrop, ("factor",)),
    "contrast": _Kind(keras.layers.RandomContrast, ("factor",)),
    "brightness": _Kind(keras.layers.RandomBrightness, ("factor",)),
    "gaussian_noise": _Kind(keras.layers.GaussianNoise, ("stddev",)),
    "erase": _Kind(keras.layers.RandomErasing, ("factor",)),
    "rand_augment": _Kind(keras.layers.RandAugment, ("factor",), flag=True),
    "shear": _Kind(keras.layers.RandomShear, ("x_factor", "y_factor")),
    "perspective": _Kind(keras.layers.RandomPerspective, ("factor",)),
    "blur": _Kind(keras.layers.RandomGaussianBlur, ("factor",)),
    "sharpness": _Kind(keras.layers.RandomSharpness, ("factor",)),
    "hue": _Kind(keras.layers.RandomHue, ("factor",), needs_rgb=True),
    "saturation": _Kind(keras.layers.RandomSaturation, ("factor",), needs_rgb=True),
    "grayscale": _Kind(keras.layers.RandomGrayscale, ("factor",), needs_rgb=True),
}

#: The augmentation names `Augmentation` accepts, with the Keras layer each makes.
AUGMENTATIONS: dict[str, str] = {name: kind.layer_cls.__name__ for name, kind in _KINDS.items()}

_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")

# Batch-level mixing changes the labels, so it cannot live inside a model.
_BATCH_MIXING = ("mixup", "cutmix")


@keras.saving.register_keras_serializable(package="tfcv")
class Augmentation(keras.layers.Layer):
    """Image augmentation described as a list, built from Keras' own layers.

    Each item of `augmentations` is a one-key dict `{name: value}`. The
    value is either the main argument of the Keras layer that `name` makes
    (`{"rotate": 0.1}` is `keras.layers.RandomRotation(0.1)`), or a dict of
    that layer's keyword arguments (`{"rotate": {"factor": 0.1,
    "fill_mode": "constant"}}`). The layers run in the order given:

    | name             | layer                                | bare value sets          |
    |------------------|--------------------------------------|--------------------------|
    | `flip`           | `RandomFlip`                         | `mode`                   |
    | `rotate`         | `RandomRotation`                     | `factor`                 |
    | `zoom`           | `RandomZoom`                         | `height_factor`          |
    | `translate`      | `RandomTranslation`                  | both factors             |
    | `crop`           | `tfcv.layers.RandomResizedCrop`      | `factor`                 |
    | `contrast`       | `RandomContrast`                     | `factor`                 |
    | `brightness`     | `RandomBrightness`                   | `factor`                 |
    | `gaussian_noise` | `GaussianNoise`                      | `stddev`                 |
    | `erase`          | `RandomErasing`                      | `factor` (probability)   |
    | `rand_augment`   | `RandAugment`                        | `factor` (`true`: defaults) |
    | `shear`          | `RandomShear`                        | both factors             |
    | `perspective`    | `RandomPerspective`                  | `factor`                 |
    | `blur`           | `RandomGaussianBlur`                 | `factor`                 |
    | `sharpness`      | `RandomSharpness`                    | `factor`                 |
    | `hue`, `saturation`, `grayscale` | `RandomHue`, `RandomSaturation`, `RandomGrayscale` (RGB only) | `factor` |

    Layers that take a `value_range` get the layer's `value_range` unless
    the item sets its own.

    Modes: with `training=True` (as in `fit`) the layer randomizes, each
    image of a batch independently. Otherwise (`training=False` or not
    given, as in `predict`, `evaluate` and serving) it returns its input
    unchanged. `randomized=True` forces randomization whatever `training`
    is, and so does an active `tfcv.layers.randomized_inference()` context
    (the randomized serving signatures of `tfcv.export` use it); neither
    touches any other layer, so BatchNormalization stays in inference mode.
    `randomized=False` forces the identity.

    MixUp and CutMix mix labels as well as images, so they are not part of
    this layer: see `tfcv.layers.BatchMixer`.

    Args:
        augmentations: List of one-key dicts, as above.
        value_range: `(low, high)` of the pixel values the layer receives.
            Defaults to `(0, 1)`.
        seed: `int`. Seeds every augmentation (each from its own seed
            derived from this one), so the same seed gives the same
            augmented batch. Defaults to `None` (seeds drawn from Keras'
            global seed, set by `keras.utils.set_random_seed`).
        **kwargs: Base layer keyword arguments (`name`, `dtype`).

    Input shape:
        `(batch, height, width, channels)` or `(height, width, channels)`.

    Output shape:
        Same as the input, with the input's dtype (integer images are
        rounded and clipped back to their dtype).

    Example:

    >>> augment = tfcv.layers.Augmentation(
    ...     [{"flip": "horizontal"}, {"rotate": 0.1}, {"contrast": 0.2}], seed=0)
    >>> augmented = augment(images, training=True)
    >>> augment(images) is images  # inference: the identity
    True
    """

    def __init__(
        self,
        augmentations: Sequence[Mapping[str, Any]],
        *,
        value_range: Sequence[float] = (0, 1),
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.augmentations = check_augmentations(augmentations)
        self.value_range = _check_value_range(value_range)
        self.seed = check_seed("seed", seed, optional=True)
        names = [next(iter(item)) for item in self.augmentations]
        self.augmentation_layers = [
            _make_layer(
                item,
                value_range=self.value_range,
                seed=None if self.seed is None else _derived_seed(self.seed, i),
                name=name if names.count(name) == 1 else f"{name}_{i}",
            )
            for i, (name, item) in enumerate(zip(names, self.augmentations, strict=True))
        ]

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (3, 4):
            raise ValueError(
                f"`Augmentation` expects images of shape (batch, height, width, channels) or "
                f"(height, width, channels). Received: input_shape={input_shape}."
            )
        channels = input_shape[-1]
        for item in self.augmentations:
            name = next(iter(item))
            if _KINDS[name].needs_rgb and channels is not None and channels != 3:
                raise ValueError(
                    f"The augmentation {name!r} needs RGB images (3 channels). Received: "
                    f"input_shape={input_shape} with {channels} channel(s)."
                )
        shape = input_shape
        for layer in self.augmentation_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None, randomized=None):
        if randomized is None:
            randomized = bool(training) or augmentation_randomized()
        if not randomized or not self.augmentation_layers:
            return inputs
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        outputs = ops.cast(inputs, self.compute_dtype)
        for layer in self.augmentation_layers:
            outputs = layer(outputs, training=True)
        if "int" in dtype:
            info = np.iinfo(dtype)
            outputs = ops.clip(ops.round(outputs), info.min, info.max)
        return ops.cast(outputs, dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "augmentations": _to_json(self.augmentations),
            "value_range": list(self.value_range),
            "seed": self.seed,
        }


def check_augmentations(
    augmentations: Any,
    *,
    path: str = "augmentations",
    channels: int | None = None,
    allow_batch_mixing: bool = False,
) -> list[dict]:
    """Validates an augmentation list and returns a deep copy of it.

    Every item is checked by building its Keras layer, so a bad value fails
    here with Keras' reason, under the item's path.

    Args:
        augmentations: The list given to `Augmentation`.
        path: How error messages name the list (`"augmentation"` in a
            `ModelSpec`).
        channels: Image channels, when known: RGB-only augmentations are
            refused on other images.
        allow_batch_mixing: Accept `mixup` and `cutmix` items (checked by
            `BatchMixer`) instead of refusing them.

    Returns:
        A list of one-key dicts.
    """
    if isinstance(augmentations, (str, bytes, Mapping)) or not isinstance(augmentations, Sequence):
        raise invalid_value(path, f"Received: {augmentations!r}. Expected a list of one-key dicts such as "
                            f"[{{'flip': 'horizontal'}}, {{'rotate': 0.1}}].", TypeError)
    checked = []
    for i, item in enumerate(augmentations):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            raise invalid_value(where, f"Received: {item!r}. Expected a one-key dict {{name: value}} with a name "
                                f"in {sorted(_KINDS) + list(_BATCH_MIXING)}.", TypeError)
        name, value = next(iter(item.items()))
        value = _builtins(value)
        if name in _BATCH_MIXING:
            if not allow_batch_mixing:
                raise invalid_value(where, f"{name!r} mixes labels as well as images, so it cannot run inside a "
                                    "model. Use tfcv.layers.BatchMixer on batches of (images, labels), or put it in "
                                    "a ModelSpec's augmentation list, which hands it to the cross-validator.")
            check_mixing_value(name, value, path=f"{where}.{name}")
        elif name not in _KINDS:
            raise invalid_value(where, f"Received: unknown augmentation {name!r}. "
                                f"Expected one of {sorted(_KINDS) + list(_BATCH_MIXING)}.")
        else:
            if _KINDS[name].needs_rgb and channels is not None and channels != 3:
                raise invalid_value(where, f"{name!r} needs RGB images (3 channels), but the images have "
                                    f"{channels} channel(s).")
            # A throwaway layer checks the arguments; seed=0 keeps Python's
            # global random state (Keras' default seed source) untouched.
            _make_layer({name: value}, value_range=(0.0, 1.0), seed=0, name=name, path=f"{where}.{name}")
        checked.append({name: value})
    return checked


def _make_layer(item, *, value_range, seed, name, path=None):
    (key, value), = item.items()
    kind = _KINDS[key]
    path = path or key
    parameters = kind.parameters()
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(parameters))
        if unknown:
            raise invalid_value(path, f"Received unknown argument(s) {unknown} for "
                                f"keras.layers.{kind.layer_cls.__name__}. Expected some of {parameters}.")
        kwargs = dict(value)
    elif kind.flag and value is True:
        kwargs = {}
    elif value is None or isinstance(value, bool):
        raise invalid_value(path, f"Received: {value!r}. Expected the value of `{kind.primary[0]}` or a dict "
                            f"of {kind.layer_cls.__name__} arguments.", TypeError)
    else:
        kwargs = {arg: _plain(value) for arg in kind.primary}
    if key == "flip" and kwargs.get("mode", "horizontal_and_vertical") not in _FLIP_MODES:
        # RandomFlip only checks its mode when first called.
        raise invalid_value(path, f"Received: {value!r}. Expected a mode in {_FLIP_MODES}.")
    if "value_range" in parameters:
        kwargs.setdefault("value_range", tuple(value_range))
    if "seed" in parameters:
        kwargs.setdefault("seed", seed)
    try:
        return kind.layer_cls(name=name, **kwargs)
    except (ValueError, TypeError) as error:
        raise invalid_value(path, f"Received: {value!r}. keras.layers.{kind.layer_cls.__name__} refused it: "
                            f"{error}", type(error)) from None


def _builtins(value):
    """A copy of an item's value with NumPy scalars and arrays as Python
    numbers and lists: Keras' layers refuse `np.float32` factors, and the
    layer's config and a spec's YAML need builtins."""
    if isinstance(value, Mapping):
        return {k: _builtins(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_builtins(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return copy.deepcopy(value)


def _plain(value):
    if isinstance(value, list):
        return tuple(value)
    return value


def _check_value_range(value_range) -> tuple[float, float]:
    if isinstance(value_range, np.ndarray):
        value_range = value_range.tolist()
    if (
        isinstance(value_range, (str, bytes))
        or not isinstance(value_range, Sequence)
        or len(value_range) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value_range)
        or not value_range[0] < value_range[1]
    ):
        raise ValueError(
            f"Invalid value for argument `value_range`. Received: value_range={value_range!r}. "
            "Expected (low, high) with low < high, such as (0, 1) or (0, 255)."
        )
    return float(value_range[0]), float(value_range[1])


def _derived_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] % (2**31 - 1))


def _to_json(value):
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value
