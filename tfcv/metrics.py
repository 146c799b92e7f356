"""Scoring: the scikit-learn metrics every fold reports, and the losses and
metrics the model builder compiles with."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from tfcv.folds import class_labels

__all__ = ["predicted_classes", "score_predictions"]


def score_predictions(y_true: Any, predictions: Any, task: str) -> dict[str, float]:
    """scikit-learn metrics of `predictions` against `y_true`.

    Classification: `accuracy`, macro `precision`, `recall` and `f1`.
    Regression: `mse`, `mae` and `r2`.
    """
    from sklearn import metrics

    predictions = np.asarray(predictions)
    if task == "classification":
        y_true = class_labels(y_true)
        y_pred = predicted_classes(predictions)
        return {
            "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
            "precision": float(metrics.precision_score(y_true, y_pred, average="macro", zero_division=0)),
            "recall": float(metrics.recall_score(y_true, y_pred, average="macro", zero_division=0)),
            "f1": float(metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        }
    y_true = np.asarray(y_true, dtype="float64").reshape(len(y_true), -1)
    y_hat = predictions.astype("float64").reshape(len(predictions), -1)
    return {
        "mse": float(metrics.mean_squared_error(y_true, y_hat)),
        "mae": float(metrics.mean_absolute_error(y_true, y_hat)),
        "r2": float(metrics.r2_score(y_true, y_hat)),
    }


def predicted_classes(predictions: Any) -> np.ndarray:
    """Class indices from probabilities or logits.

    One output column is a binary classifier: thresholded at 0.5 when the
    values look like probabilities (all in [0, 1]), at 0 when they are logits.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim == 1 or predictions.shape[-1] == 1:
        flat = predictions.reshape(len(predictions))
        threshold = 0.5 if (flat.min(initial=0) >= 0 and flat.max(initial=0) <= 1) else 0.0
        return (flat > threshold).astype("int64")
    return predictions.argmax(axis=-1)


# ------------------------------------------------- labels of any format


def _dense_labels(y_true, y_pred, *, checked=False):
    """Integer labels (`(batch,)` or `(batch, 1)`) to one-hot rows; label
    rows (one-hot, smoothed or mixed) as they are. With `checked`, a label
    outside `[0, num_classes)` raises instead of becoming a row of zeros."""
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes and num_classes != 1:
        return ops.cast(y_true, y_pred.dtype)
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    if not checked:
        return ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
    return _checked_one_hot(labels, num_classes, y_pred.dtype)


def _checked_one_hot(labels, num_classes, dtype):
    """One-hot rows of `labels`, refusing labels outside `[0, num_classes)`
    as Keras' `SparseCategoricalCrossentropy` does on CPU (TF's
    SparseSoftmaxCrossEntropyWithLogits kernel): an `InvalidArgumentError`,
    eagerly and in graphs. XLA drops assertions, and that kernel then gives
    NaN; so do these rows, instead of the silent zero row of `one_hot`."""
    import tensorflow as tf

    valid = (labels >= 0) & (labels < num_classes)
    message = f"Received a label value outside the valid range of [0, {num_classes}). Label values:"
    with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(valid), [message, labels], summarize=32)]):
        rows = ops.one_hot(labels, num_classes, dtype=dtype)
    return ops.where(ops.expand_dims(valid, -1), rows, ops.cast(float("nan"), dtype))


@keras.saving.register_keras_serializable(package="tfcv")
class ClassCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy that takes integer labels or label rows.

    Integer labels are one-hot encoded; one-hot, smoothed or mixed label
    rows (from `tfcv.layers.BatchMixer`) are used as they are. So one model
    trains on mixed batches and validates on integer labels, and label
    smoothing works with integer labels (Keras'
    `SparseCategoricalCrossentropy` has no `label_smoothing`). An integer
    label outside `[0, num_classes)` raises an `InvalidArgumentError`, as
    that loss does on CPU, instead of counting as a row of zeros.

    Args:
        label_smoothing: `float` in `[0, 1)`. Defaults to `0.0`.
        from_logits: `bool`. Defaults to `False`.
    """

    def __init__(self, label_smoothing: float = 0.0, from_logits: bool = False,
                 name: str = "class_crossentropy", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(
            _dense_labels(y_true, y_pred, checked=True), y_pred,
            from_logits=self.from_logits, label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


def _class_accuracy(y_true, y_pred):
    y_true = ops.argmax(_dense_labels(y_true, y_pred), axis=-1)
    return ops.cast(ops.equal(y_true, ops.argmax(y_pred, axis=-1)), "float32")


@keras.saving.register_keras_serializable(package="tfcv")
class ClassAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy for integer labels or label rows (argmax of the row)."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(fn=_class_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
