"""Ready-made models."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import keras

from tfcv import _checks

__all__ = ["ReferenceCNN", "TextClassifier", "reference_cnn", "text_classifier"]


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
    input_shape = _image_shape(input_shape)
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
    return _compiled(keras.Model(inputs, outputs, name="reference_cnn"), learning_rate)


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
        # Checked here, once, rather than in every fold: int() made 10.9 classes 10.
        self.input_shape = _image_shape(input_shape)
        self.num_classes = _checks.positive_int("num_classes", num_classes, minimum=2)

    def __call__(self) -> keras.Model:
        return reference_cnn(self.input_shape, self.num_classes)

    def __repr__(self) -> str:
        return f"ReferenceCNN(input_shape={self.input_shape}, num_classes={self.num_classes})"


def text_classifier(
    num_classes: int = 2,
    *,
    max_tokens: int = 20000,
    sequence_length: int = 128,
    embedding_dim: int = 64,
    filters: int = 64,
    kernel_size: int = 5,
    dropout: float = 0.2,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """A small compiled text classifier that takes raw sentences.

    `TextVectorization` (lower-cased, punctuation stripped, adapted on each
    fold's training split by the cross-validator) -> `Embedding` -> one
    `Conv1D` with ReLU -> global max pooling -> dropout -> softmax. The
    vocabulary is part of the model, so an exported bundle takes
    `DT_STRING` sentences.

    Args:
        num_classes: `int`. Number of classes. Defaults to `2`.
        max_tokens: `int`. Vocabulary size, out-of-vocabulary and padding
            tokens included. Defaults to `20000`.
        sequence_length: `int`. Tokens kept per sentence (padded or cut).
            Defaults to `128`.
        embedding_dim: `int`. Defaults to `64`.
        filters: `int`. Width of the convolution. Defaults to `64`.
        kernel_size: `int`. Tokens seen by one filter. Defaults to `5`.
        dropout: `float`. Dropout rate before the classifier. Defaults to
            `0.2`.
        learning_rate: `float`. Adam's learning rate. Defaults to `1e-3`.

    Returns:
        A compiled `keras.Model` (sparse categorical cross-entropy and
        accuracy) taking a batch of strings and integer labels.

    Example:

    >>> cv = tfcv.CrossValidator(tfcv.models.TextClassifier(num_classes=2), folds=5)
    >>> result = cv.fit(sentences, labels, epochs=5)
    """
    num_classes = _checks.positive_int("num_classes", num_classes, minimum=2)
    max_tokens = _checks.positive_int("max_tokens", max_tokens, minimum=3)
    sequence_length = _checks.positive_int("sequence_length", sequence_length)
    inputs = keras.Input((), dtype="string", name="text")
    x = keras.layers.TextVectorization(
        max_tokens=max_tokens, output_sequence_length=sequence_length, name="vectorize"
    )(inputs)
    x = keras.layers.Embedding(max_tokens, _checks.positive_int("embedding_dim", embedding_dim), name="embedding")(x)
    x = keras.layers.Conv1D(_checks.positive_int("filters", filters),
                            min(_checks.positive_int("kernel_size", kernel_size), sequence_length),
                            activation="relu", name="conv")(x)
    x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
    x = keras.layers.Dropout(_checks.check_real("dropout", dropout, low=0.0, high=1.0, high_open=True),
                             name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return _compiled(keras.Model(inputs, outputs, name="text_classifier"), learning_rate)


class TextClassifier:
    """A picklable `build_fn` that returns a fresh `text_classifier`.

    Args:
        num_classes: `int`. Number of classes.
        **options: Keyword arguments of `text_classifier`.

    Example:

    >>> cv = tfcv.CrossValidator(tfcv.models.TextClassifier(2, sequence_length=64), folds=5)
    """

    def __init__(self, num_classes: int = 2, **options):
        self.num_classes = _checks.positive_int("num_classes", num_classes, minimum=2)
        accepted = [name for name in inspect.signature(text_classifier).parameters if name != "num_classes"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"Invalid keyword argument(s) {unknown} for TextClassifier. Expected some of {accepted}.")
        self.options = dict(options)

    def __call__(self) -> keras.Model:
        return text_classifier(self.num_classes, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"TextClassifier(num_classes={self.num_classes}{options})"


def _image_shape(input_shape) -> tuple[int, int, int]:
    if (isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or len(input_shape) != 3
            or not all(_checks.is_int(d) and d >= 1 for d in input_shape)):
        raise _checks.invalid_argument("input_shape", input_shape, "(height, width, channels), three ints >= 1")
    return tuple(int(d) for d in input_shape)


def _compiled(model: keras.Model, learning_rate: float) -> keras.Model:
    if _checks.check_real("learning_rate", learning_rate, low=0.0) == 0:
        raise _checks.invalid_argument("learning_rate", learning_rate, "a number > 0")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
