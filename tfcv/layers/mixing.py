"""BatchMixer: MixUp and CutMix on batches of (images, labels)."""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcv._checks import check_seed
from tfcv.layers._errors import invalid_value

__all__ = ["BatchMixer"]


@keras.saving.register_keras_serializable(package="tfcv")
class BatchMixer(keras.layers.Layer):
    """MixUp and/or CutMix on a batch of images *and* their labels.

    Mixing blends each image with another image of the same batch, so the
    label has to be blended with the same weight: a model layer never sees
    the labels, hence this is a separate layer that runs in the input
    pipeline, on batches, before the model:

    ```python
    mixer = tfcv.layers.BatchMixer(mixup=0.2, num_classes=10, seed=0)
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=0).batch(32).map(mixer))
    model.fit(train, validation_data=(x_val, y_val))
    ```

    Labels come out as float rows of class weights (integer labels are
    one-hot encoded first), so the model needs a loss that takes them: the
    models of `tfcv.build_model` do (they accept integer and one-hot labels
    alike, so validation can keep integer labels); with a plain Keras model
    use `categorical_crossentropy` and one-hot validation labels. A
    `ModelSpec` whose `augmentation` list holds `{"mixup": ...}` or
    `{"cutmix": ...}` carries such a mixer as `spec.batch_mixer()`, which the
    cross-validator applies to every fold's training batches.

    MixUp uses `keras.layers.MixUp`: `weight ~ Beta(mixup, mixup)` per
    image, and the label gets exactly the image's weight. CutMix uses
    `keras.layers.CutMix` to paste a random box from the partner image; the
    label weight of the partner is the fraction of pixels actually pasted
    (counted on the mask; Keras' own label weight uses the unrounded box
    area, which is off by up to a few pixels' worth on small images). With
    both, each batch gets one of the two, chosen with equal probability.

    Args:
        mixup: `float`. MixUp's `alpha`, or `None` for no MixUp.
        cutmix: `float` or `(min, max)`. CutMix's `factor`, or `None` for no
            CutMix. Defaults to `None`.
        num_classes: `int`. One-hot encode integer labels to this many
            classes. `None` (for one-hot labels, or for binary 0/1 labels of a
            one-unit sigmoid classifier) uses the labels as given, as floats
            of shape `(batch, k)`. Defaults to `None`.
        seed: `int`. Same seed, same mixed batches. Defaults to `None`.
        **kwargs: Base layer keyword arguments (`name`).

    Call arguments:
        images: `(batch, height, width, channels)` images.
        labels: `(batch,)` integer labels or `(batch, k)` label rows.
        training: `bool`. Mix when `True` (the default: the layer is meant
            for the training pipeline); with `False` only encode the labels.

    Returns:
        `(images, labels)`: float images of the input's shape and float
        labels of shape `(batch, num_classes)` (or `(batch, k)`).
    """

    def __init__(self, mixup: float | None = None, cutmix: Any = None, *, num_classes: int | None = None,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if mixup is None and cutmix is None:
            raise ValueError("BatchMixer needs `mixup` or `cutmix` (or both). Received: mixup=None, cutmix=None.")
        if mixup is not None:
            check_mixing_value("mixup", mixup, path="mixup")
        if cutmix is not None:
            check_mixing_value("cutmix", cutmix, path="cutmix")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2
        ):
            raise ValueError(
                f"Invalid value for argument `num_classes`. Received: num_classes={num_classes!r}. "
                "Expected an int >= 2, or None for labels that are already rows of class weights."
            )
        self.mixup = None if mixup is None else float(mixup)
        self.cutmix = cutmix if cutmix is None or isinstance(cutmix, numbers.Real) else tuple(cutmix)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.seed = check_seed("seed", seed, optional=True)
        seeds = (None, None, None) if self.seed is None else np.random.SeedSequence(self.seed).generate_state(3) % (2**31 - 1)
        self._mixup = None if mixup is None else keras.layers.MixUp(alpha=self.mixup, seed=_int(seeds[0]))
        self._cutmix = None if cutmix is None else keras.layers.CutMix(factor=self.cutmix, seed=_int(seeds[1]))
        self.choice_generator = keras.random.SeedGenerator(_int(seeds[2]))

    def build(self, images_shape, labels_shape=None):
        for layer in (self._mixup, self._cutmix):
            if layer is not None:
                layer.build(images_shape)

    def encode_labels(self, labels):
        """Integer labels to one-hot float rows (or labels as float rows)."""
        if self.num_classes is not None and (len(labels.shape) == 1 or labels.shape[-1] == 1):
            labels = ops.reshape(labels, (-1,))
            return ops.one_hot(ops.cast(labels, "int32"), self.num_classes, dtype="float32")
        labels = ops.cast(labels, "float32")
        return ops.reshape(labels, (-1, 1)) if len(labels.shape) == 1 else labels

    def call(self, images, labels, training=True):
        labels = self.encode_labels(labels)
        if not training:
            return images, labels
        if len(images.shape) != 4:
            raise ValueError(
                f"BatchMixer mixes batches: expected images of shape (batch, height, width, channels). "
                f"Received shape {tuple(images.shape)}."
            )
        results = []
        if self._mixup is not None:
            mixed = self._mixup({"images": images, "labels": labels}, training=True)
            results.append((mixed["images"], mixed["labels"]))
        if self._cutmix is not None:
            results.append(self._cut_mix(images, labels))
        if len(results) == 1:
            return results[0]
        use_mixup = keras.random.uniform((), seed=self.choice_generator) < 0.5
        (mix_x, mix_y), (cut_x, cut_y) = results
        return ops.where(use_mixup, mix_x, cut_x), ops.where(use_mixup, mix_y, cut_y)

    def _cut_mix(self, images, labels):
        data = {"images": images, "labels": labels}
        transformation = self._cutmix.get_random_transformation(data, training=True)
        mixed = self._cutmix.transform_images(images, transformation, training=True)
        # The label weight of the partner image is the share of pixels taken
        # from it, counted on the mask that made the image.
        pasted = ops.mean(ops.cast(transformation["batch_masks"], "float32"), axis=(1, 2, 3))
        pasted = ops.expand_dims(pasted, -1)
        partner = ops.take(labels, transformation["permutation_order"], axis=0)
        return mixed, (1.0 - pasted) * labels + pasted * partner

    def compute_output_spec(self, images, labels, training=True):
        batch = images.shape[0]
        if self.num_classes is not None and (len(labels.shape) == 1 or labels.shape[-1] == 1):
            label_shape = (batch, self.num_classes)
        else:
            label_shape = (batch, 1) if len(labels.shape) == 1 else tuple(labels.shape)
        return (
            keras.KerasTensor(images.shape, dtype=self.compute_dtype),
            keras.KerasTensor(label_shape, dtype="float32"),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "mixup": self.mixup,
            "cutmix": list(self.cutmix) if isinstance(self.cutmix, tuple) else self.cutmix,
            "num_classes": self.num_classes,
            "seed": self.seed,
        }


def check_mixing_value(name: str, value: Any, *, path: str) -> None:
    """Checks the value of a `mixup` (alpha > 0) or `cutmix` (factor in
    [0, 1], or a (min, max) pair) setting; errors name `path`."""
    def real(v):
        return isinstance(v, numbers.Real) and not isinstance(v, bool)

    if name == "mixup":
        if not real(value) or value <= 0:
            raise invalid_value(path, f"Received: {value!r}. Expected MixUp's alpha, a float > 0 (0.2 is usual).")
        return
    pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(real(v) for v in value)
    if not (real(value) or pair) or not all(0 <= v <= 1 for v in (value if pair else [value])) or (
        pair and value[0] > value[1]
    ):
        raise invalid_value(path, f"Received: {value!r}. Expected CutMix's factor, a float in [0, 1] or a "
                            "(min, max) pair within [0, 1] (1.0 is usual).")


def _int(value):
    return None if value is None else int(value)
