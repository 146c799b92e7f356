"""Ready-made models."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfcv import _checks

__all__ = ["ReferenceCNN", "reference_cnn"]


def reference_cnn(
    input_shape: Sequence[int] = (8, 8, 1),
    num_classes: int = 10,
    *,
    filters: Sequence[int] = (32, 64),
    learning_rate: float = 2e-3,
) -> keras.Model:
    """A small compiled CNN: the default model of `tfcv run`.

    One Conv2D/BatchNormalization/ReLU block per entry of `filters` (two by
    default), each followed by max pooling while the feature map is larger
    than 2x2, then global average pooling, dropout and a softmax classifier.
    It reaches about 97-98% accuracy on the 8x8 digits in a few epochs on a
    CPU.

    Args:
        input_shape: Shape of one image, `(height, width, channels)`.
            Defaults to `(8, 8, 1)`.
        num_classes: `int`. Number of classes. Defaults to `10`.
        filters: The width of each convolution block, in order. Defaults to
            `(32, 64)`.
        learning_rate: `float`. Adam's learning rate. Defaults to `2e-3`.

    Returns:
        A compiled `keras.Model` (sparse categorical cross-entropy and
        accuracy) taking integer labels.

    Example:

    >>> model = tfcv.models.reference_cnn((8, 8, 1), 10)
    >>> model.fit(x, y, epochs=5)
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise _checks.invalid_argument("input_shape", input_shape, "(height, width, channels)")
    num_classes = _checks.positive_int("num_classes", num_classes, minimum=2)
    widths = tuple(filters) if isinstance(filters, Sequence) and not isinstance(filters, str) else ()
    if not widths or not all(_checks.is_int(w) and w > 0 for w in widths):
        raise _checks.invalid_argument(
            "filters", filters, "a non-empty sequence of positive ints, one per convolution block"
        )
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(int(width), 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        # momentum=0.9: with ~50 steps per epoch the default 0.99 leaves the
        # moving statistics far from the data after a few epochs.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        # Pool only while the feature map is larger than 2x2.
        if min(x.shape[1], x.shape[2]) > 2:
            x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(0.2, name="head_dropout")(x)
    outputs = keras.layers.Dense(int(num_classes), activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="reference_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class ReferenceCNN:
    """A picklable `build_fn` that returns a fresh `reference_cnn`.

    `CrossValidator` calls its `build_fn` once per fold, in joblib or Ray
    workers too, so the factory must pickle; a lambda or a closure does not.

    Args:
        input_shape: Shape of one image, `(height, width, channels)`.
        num_classes: `int`. Number of classes.

    Example:

    >>> cv = tfcv.CrossValidator(tfcv.models.ReferenceCNN((8, 8, 1), 10), folds=5)
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int):
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)

    def __call__(self) -> keras.Model:
        return reference_cnn(self.input_shape, self.num_classes)

    def __repr__(self) -> str:
        return f"ReferenceCNN(input_shape={self.input_shape}, num_classes={self.num_classes})"
