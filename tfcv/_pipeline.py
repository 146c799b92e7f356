"""The input pipeline of a fold: `Pipeline`, for any `tf.data.Dataset`.

Decode, resize, rescale, cast, cache, shuffle, batch, prefetch: what a
streamed fold goes through on its way to `fit` (`tfcv.data.fold_datasets`
applies it to both parts of a TFDS fold), and what anyone can apply to their
own datasets. Public as `tfcv.data.Pipeline`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import tensorflow as tf

from tfcv import _checks
from tfcv._checks import is_int

__all__ = ["Pipeline"]


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The input pipeline of a cross-validation fold, for any `tf.data.Dataset`.

    Applied to a dataset of `(x, y)` pairs (or `(x, y, sample_weight)`, or
    bare `x`), it transforms `x` in this order, each step only if asked for:

    1. decode: `x` holding encoded images (`tf.string`: PNG, JPEG, GIF, BMP)
       is decoded with `tf.io.decode_image`;
    2. resize: `tf.image.resize` to `image_size` (bilinear, float32 output);
    3. rescale: `x * rescale + offset`, in float32;
    4. cast to `dtype`;

    then caches the result (in memory or to files), shuffles the training
    data with a buffer of `shuffle_buffer` examples and the fold's seed,
    batches and prefetches with `tf.data.AUTOTUNE`. Validation data is never
    shuffled, so its order is stable.

    Caching in memory holds the whole transformed split in RAM: that is fast
    for data that fits, and the opposite of streaming for data that does
    not. Caching to a directory writes one cache file per fold and part (the
    file name holds a digest of the split it caches, so caches of different
    folds or plans never mix); delete the directory when the data changes.

    Args:
        image_size: `(height, width)` to resize images to, or `None` to keep
            their size. Defaults to `None`.
        rescale: `float` factor applied to `x` after resizing (for example
            `1/255` for uint8 images, `1/16` for `tfcv_digits`), or `None`.
            Defaults to `None`.
        offset: `float` added after rescaling. Defaults to `0.0`.
        channels: Number of channels when decoding encoded images (`1`, `3`
            or `4`), or `None` to keep the file's own. Defaults to `None`.
        dtype: Name of the dtype `x` is cast to at the end, or `None` to
            keep it (uint8 stays uint8 unless resized or rescaled, which
            give float32). Defaults to `None`.
        cache: `None` (no cache), `"memory"`, or the path of a directory for
            cache files. Defaults to `None`.
        shuffle_buffer: `int`. Number of examples in the shuffle buffer of
            the training data (the memory cost of shuffling). Defaults to
            `1024`.
        drop_remainder: `bool`. Drop the last, smaller batch of the training
            data. Validation data always keeps every example. Defaults to
            `False`.

    Example:

    >>> pipeline = tfcv.data.Pipeline(image_size=(32, 32), rescale=1 / 255)
    >>> train_ds = pipeline(ds, batch_size=64, training=True, seed=7)
    >>> train_ds, val_ds = tfcv.data.fold_datasets(
    ...     plan, 0, batch_size=64, seed=7, pipeline=pipeline)
    """

    image_size: tuple[int, int] | None = None
    rescale: float | None = None
    offset: float = 0.0
    channels: int | None = None
    dtype: str | None = None
    cache: str | None = None
    shuffle_buffer: int = 1024
    drop_remainder: bool = False

    def __post_init__(self):
        if self.image_size is not None:
            size = self.image_size
            if (
                not isinstance(size, (tuple, list))
                or len(size) != 2
                or not all(is_int(s) and s > 0 for s in size)
            ):
                raise ValueError(
                    f"Invalid value for argument `image_size`. Received: image_size={size!r}. "
                    "Expected a (height, width) pair of positive ints, or None."
                )
            object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        _checks.check_real("rescale", self.rescale, optional=True, expected="a float (for example 1/255) or None")
        _checks.check_real("offset", self.offset, expected="a float")
        _checks.check_choice("channels", self.channels, (None, 1, 3, 4), expected="1, 3, 4 or None")
        if self.dtype is not None:
            try:
                object.__setattr__(self, "dtype", tf.as_dtype(self.dtype).name)
            except TypeError as error:
                raise ValueError(
                    f"Invalid value for argument `dtype`. Received: dtype={self.dtype!r}. "
                    "Expected a dtype name such as 'float32', or None."
                ) from error
        if self.cache is not None:
            if isinstance(self.cache, os.PathLike):
                object.__setattr__(self, "cache", os.fspath(self.cache))
            if not isinstance(self.cache, str) or not self.cache:
                raise ValueError(
                    f"Invalid value for argument `cache`. Received: cache={self.cache!r}. "
                    "Expected None, 'memory' or the path of a directory for cache files."
                )
        object.__setattr__(self, "shuffle_buffer", _checks.positive_int("shuffle_buffer", self.shuffle_buffer))
        object.__setattr__(self, "drop_remainder", _checks.check_bool("drop_remainder", self.drop_remainder))

    def __call__(
        self,
        dataset: tf.data.Dataset,
        *,
        batch_size: int,
        training: bool = False,
        seed: int | None = None,
        cache_name: str = "data",
    ) -> tf.data.Dataset:
        """Applies the pipeline to `dataset`.

        Args:
            dataset: A `tf.data.Dataset` of unbatched examples: `(x, y)`,
                `(x, y, sample_weight)` or bare `x`.
            batch_size: `int`. Examples per batch.
            training: `bool`. Shuffle (with `seed`) and honour
                `drop_remainder`. Defaults to `False`.
            seed: `int`. Shuffling seed, normally the fold's seed. Required
                when `training=True` so that runs are reproducible.
            cache_name: `str`. File name of the cache inside the `cache`
                directory. Defaults to `"data"`.

        Returns:
            A batched, prefetched `tf.data.Dataset`.
        """
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                f"Invalid value for argument `dataset`. Received: dataset={dataset!r} of type "
                f"{type(dataset).__name__}. Expected a tf.data.Dataset."
            )
        batch_size = _checks.positive_int("batch_size", batch_size)
        if training and not is_int(seed):
            raise _checks.invalid_argument(
                "seed", seed, "an int (the fold's seed) when training=True, so that shuffling is reproducible"
            )
        transform = self._transform_fn(_features_spec(dataset.element_spec).dtype)
        if transform is not None:
            dataset = dataset.map(
                _on_features(transform, dataset.element_spec),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        if self.cache == "memory":
            dataset = dataset.cache()
        elif self.cache is not None:
            os.makedirs(self.cache, exist_ok=True)
            dataset = dataset.cache(os.path.join(self.cache, cache_name))
        if training:
            dataset = dataset.shuffle(self.shuffle_buffer, seed=int(seed), reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=bool(training and self.drop_remainder))
        return dataset.prefetch(tf.data.AUTOTUNE)

    def _transform_fn(self, dtype: tf.DType) -> Callable[[tf.Tensor], tf.Tensor] | None:
        decode = dtype == tf.string
        rescale = self.rescale is not None or self.offset != 0
        if not (decode or rescale or self.image_size is not None or self.dtype is not None):
            return None

        def transform(x):
            if decode:
                x = tf.io.decode_image(x, channels=self.channels or 0, expand_animations=False)
            if self.image_size is not None:
                x = tf.image.resize(x, self.image_size)
            if rescale:
                x = tf.cast(x, "float32")
                if self.rescale is not None:
                    x = x * tf.constant(self.rescale, "float32")
                if self.offset:
                    x = x + tf.constant(self.offset, "float32")
            if self.dtype is not None:
                x = tf.cast(x, self.dtype)
            return x

        return transform

    def to_dict(self) -> dict:
        """A JSON-able dict; `Pipeline.from_dict(p.to_dict()) == p`."""
        d = dataclasses.asdict(self)
        if d["image_size"] is not None:
            d["image_size"] = list(d["image_size"])
        return d

    @classmethod
    def from_dict(cls, config: dict | Pipeline) -> Pipeline:
        """Makes a `Pipeline` from `to_dict`'s output (or returns a `Pipeline` as is)."""
        if isinstance(config, Pipeline):
            return config
        if not isinstance(config, dict):
            raise TypeError(
                f"Invalid value for argument `config`. Received: config={config!r}. "
                "Expected a dict from Pipeline.to_dict() or a Pipeline."
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(
                f"Invalid value for argument `config`: unknown keys {unknown}. Expected keys among {sorted(fields)}."
            )
        config = dict(config)
        if config.get("image_size") is not None:
            config["image_size"] = tuple(config["image_size"])
        return cls(**config)


def _features_spec(element_spec) -> tf.TensorSpec:
    """The spec of `x` in `(x, y, ...)` or bare-`x` elements."""
    spec = element_spec[0] if isinstance(element_spec, tuple) and element_spec else element_spec
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(
            "Pipeline transforms a single tensor `x` in (x, y) or bare-x elements. Received elements "
            f"of spec {element_spec!r}. Map the dataset to (x, y) pairs first (as_supervised=True)."
        )
    return spec


def _on_features(transform, element_spec):
    """Applies `transform` to `x` of `(x, y, ...)` elements, or to bare `x`."""
    if isinstance(element_spec, tuple):

        def fn(*parts):
            return (transform(parts[0]),) + tuple(parts[1:])

        return fn
    return transform
