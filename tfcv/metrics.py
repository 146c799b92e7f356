"""Scoring: the scikit-learn metrics every fold reports, and the losses and
metrics the model builder compiles with."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from tfcv.folds import class_labels

__all__ = ["check_scoring", "predicted_classes", "score_predictions", "score_with"]


def score_predictions(y_true: Any, predictions: Any, task: str, *, sample_weight: Any = None) -> dict[str, float]:
    """scikit-learn metrics of `predictions` against `y_true`.

    Classification: `accuracy`, macro `precision`, `recall` and `f1`.
    Regression: `mse`, `mae` and `r2`. With `sample_weight`, each metric
    weighs the samples as scikit-learn's `sample_weight` does.
    """
    from sklearn import metrics

    predictions = np.asarray(predictions)
    w = {"sample_weight": None if sample_weight is None else np.asarray(sample_weight, dtype="float64")}
    if task == "classification":
        y_true = class_labels(y_true)
        y_pred = predicted_classes(predictions)
        return {
            "accuracy": float(metrics.accuracy_score(y_true, y_pred, **w)),
            "precision": float(metrics.precision_score(y_true, y_pred, average="macro", zero_division=0, **w)),
            "recall": float(metrics.recall_score(y_true, y_pred, average="macro", zero_division=0, **w)),
            "f1": float(metrics.f1_score(y_true, y_pred, average="macro", zero_division=0, **w)),
        }
    y_true = np.asarray(y_true, dtype="float64").reshape(len(y_true), -1)
    y_hat = predictions.astype("float64").reshape(len(predictions), -1)
    return {
        "mse": float(metrics.mean_squared_error(y_true, y_hat, **w)),
        "mae": float(metrics.mean_absolute_error(y_true, y_hat, **w)),
        "r2": float(metrics.r2_score(y_true, y_hat, **w)),
    }


def scalar_scores(logs: dict[str, Any] | None) -> dict[str, float]:
    """Keras logs (or compiled metric results) as one float per name.

    A metric whose result is not a scalar (`keras.metrics.F1Score(
    average=None)` gives one value per class) becomes one score per
    element, named with the element's index: `f1_score[0]`, `f1_score[1]`,
    ... (`name[i,j]` for a matrix), so every element gets its own per-fold
    values and mean ± std.

    Raises:
        TypeError: For a value that is not a number or an array of numbers.
    """
    scores = {}
    for name, value in (logs or {}).items():
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise TypeError(
                f"Invalid log value. Received: {name}={value!r} of type {type(value).__name__}. Expected a "
                "number or an array of numbers (a metric's result: arrays are reported element by element)."
            )
        if array.ndim == 0:
            scores[name] = float(array)
            continue
        for index in np.ndindex(array.shape):
            scores[f"{name}[{','.join(str(i) for i in index)}]"] = float(array[index])
    return scores


# ------------------------------------------- scikit-learn's `scoring`


def check_scoring(scoring: Any) -> tuple[dict[str, Any], dict[str, str]] | None:
    """`scoring` as `sklearn.model_selection.cross_validate` takes it, as
    scorers by score name, and the key each has in `cross_validate`'s dict.

    A single scorer (a name or a callable) is keyed `score` there, as in
    scikit-learn; its score name is the scorer's name (`"score"` for a
    callable). A list names its scorers; a dict gives them names.

    Returns:
        `None` for `None`, else `(scorers, keys)`: `{score name: scorer}`
        and `{cross_validate key: score name}`.

    Raises:
        ValueError: For an unknown scorer name or an empty list or dict.
        TypeError: For anything else.
    """
    if scoring is None:
        return None
    from sklearn.metrics import get_scorer

    def scorer(value, where):
        if isinstance(value, str):
            try:
                return get_scorer(value)
            except ValueError as error:
                raise ValueError(
                    f"Invalid value for argument `scoring`. Received: {where}={value!r}. Expected a scorer name "
                    "of sklearn.metrics.get_scorer_names() or a callable(estimator, X, y)."
                ) from error
        if callable(value):
            return value
        raise TypeError(
            f"Invalid value for argument `scoring`. Received: {where}={value!r} of type {type(value).__name__}. "
            "Expected a scorer name or a callable(estimator, X, y)."
        )

    if isinstance(scoring, str):
        return {scoring: scorer(scoring, "scoring")}, {"score": scoring}
    if callable(scoring):
        return {"score": scoring}, {"score": "score"}
    if isinstance(scoring, (list, tuple, set, frozenset)) and scoring and all(isinstance(n, str) for n in scoring):
        if len(set(scoring)) != len(scoring):
            raise ValueError(f"Invalid value for argument `scoring`. Received: scoring={scoring!r}. The names repeat.")
        return {n: scorer(n, "scoring") for n in scoring}, {n: n for n in scoring}
    if isinstance(scoring, dict) and scoring and all(isinstance(n, str) for n in scoring):
        return {n: scorer(v, f"scoring[{n!r}]") for n, v in scoring.items()}, {n: n for n in scoring}
    raise ValueError(
        f"Invalid value for argument `scoring`. Received: scoring={scoring!r}. Expected None, a scorer name, "
        "a callable(estimator, X, y), a non-empty list of names or a non-empty dict of names or callables."
    )


def score_with(scorers: dict[str, Any], y_true: Any, predictions: Any, task: str, *,
               sample_weight: Any = None) -> dict[str, float]:
    """Every scorer of `check_scoring` applied to a fold's predictions.

    A scorer calls `estimator.predict` / `predict_proba` /
    `decision_function` on `X`; here the estimator is a stand-in that
    answers from `predictions` (`X` is the rows' positions), so nothing is
    predicted twice. A scorer receives `sample_weight` only when given.
    """
    labels = class_labels(y_true) if task == "classification" else np.asarray(y_true).reshape(len(y_true), -1)
    if task != "classification" and labels.shape[1] == 1:
        labels = labels.reshape(len(labels))
    estimator = _fold_estimator(predictions, task)
    rows = np.arange(len(labels))
    extra = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight, dtype="float64")}
    return {name: float(scorer(estimator, rows, labels, **extra)) for name, scorer in scorers.items()}


def predicted_probabilities(predictions: Any) -> np.ndarray:
    """Class probabilities `(n, num_classes)` from a classifier's outputs:
    probabilities as they are, logits through a softmax (sigmoid for one
    column); one column `p` becomes `[1 - p, p]`."""
    predictions = np.asarray(predictions, dtype="float64")
    if predictions.ndim == 1:
        predictions = predictions.reshape(-1, 1)
    probabilities = predictions.min(initial=0) >= 0 and predictions.max(initial=0) <= 1
    if predictions.shape[1] == 1:
        p = predictions[:, 0] if probabilities else 1 / (1 + np.exp(-predictions[:, 0]))
        return np.stack([1 - p, p], axis=1)
    if probabilities and np.allclose(predictions.sum(axis=1), 1, atol=1e-3):
        # float32 softmax rows sum to 1 within 1e-7, which scikit-learn's
        # log_loss warns about.
        return predictions / predictions.sum(axis=1, keepdims=True)
    shifted = np.exp(predictions - predictions.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _fold_estimator(predictions, task):
    """A fitted scikit-learn estimator whose answers for `X` (row positions)
    are the stored `predictions` of those rows."""
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    predictions = np.asarray(predictions)

    class _FoldClassifier(ClassifierMixin, BaseEstimator):
        def __init__(self):
            self.probabilities_ = predicted_probabilities(predictions)
            self.classes_ = np.arange(self.probabilities_.shape[1])

        def predict_proba(self, X):
            return self.probabilities_[np.asarray(X, dtype="int64").reshape(-1)]

        def decision_function(self, X):
            rows = np.asarray(predictions, dtype="float64")[np.asarray(X, dtype="int64").reshape(-1)]
            return rows.reshape(len(rows)) if rows.ndim == 2 and rows.shape[1] == 1 else rows

        def predict(self, X):
            return predicted_classes(predictions)[np.asarray(X, dtype="int64").reshape(-1)]

    class _FoldRegressor(RegressorMixin, BaseEstimator):
        def predict(self, X):
            rows = np.asarray(predictions, dtype="float64")[np.asarray(X, dtype="int64").reshape(-1)]
            return rows.reshape(len(rows)) if rows.ndim == 2 and rows.shape[1] == 1 else rows

    return _FoldClassifier() if task == "classification" else _FoldRegressor()


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
