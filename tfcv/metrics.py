"""Scoring: the scikit-learn metrics every fold reports, and the losses and
metrics the model builder compiles with."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from tfcv._targets import output_units
from tfcv.folds import class_labels

__all__ = ["check_metric_labels", "check_scoring", "predicted_classes", "score_predictions", "score_with"]


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


# ------------------------------------ compiled metrics against the labels

# Keras metrics that compare y_true with the outputs column by column: with
# integer class labels, (n,) or (n, 1), against C > 1 output units they fail
# deep inside the first step ("FBetaScore expects 2D inputs") or broadcast the
# labels over the C columns into a number that is silently wrong (each of them
# measured with Keras 3.15). Each maps to the Keras metric that takes integer
# labels, where there is one.
_LABEL_ROW_METRICS = {
    "CategoricalAccuracy": "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy": "SparseTopKCategoricalAccuracy",
    "CategoricalCrossentropy": "SparseCategoricalCrossentropy",
    **dict.fromkeys((
        "F1Score", "FBetaScore", "Precision", "Recall", "AUC", "PrecisionAtRecall", "RecallAtPrecision",
        "SensitivityAtSpecificity", "SpecificityAtSensitivity", "TruePositives", "TrueNegatives",
        "FalsePositives", "FalseNegatives", "BinaryAccuracy", "BinaryCrossentropy", "CategoricalHinge",
        "KLDivergence", "OneHotIoU", "OneHotMeanIoU",
    )),
}
_SPARSE_METRICS = {sparse: dense for dense, sparse in _LABEL_ROW_METRICS.items() if sparse}
# `compile` picks the binary, sparse or categorical variant of these names
# from the shapes it sees.
_SHAPE_CHOSEN = ("accuracy", "acc", "crossentropy", "ce")


def check_metric_labels(model: keras.Model, labels: Any, *, where: str = "y") -> None:
    """Checks that every Keras metric `model` is compiled with takes labels
    of the format of `labels`, before any training.

    Refused, with the metric and what it takes: a metric that compares the
    labels with the outputs column by column (`F1Score`, `FBetaScore`,
    `Precision`, `Recall`, `AUC`, `CategoricalAccuracy`, ...) against integer
    class labels and more than one output unit; `F1Score` or `FBetaScore`
    against labels of shape `(n,)` and one output unit (they take `(n, 1)`);
    a sparse metric (`SparseCategoricalAccuracy`, ...) against label rows.
    Metrics of a model with several outputs, metrics that are not Keras'
    own (subclasses included) and `"accuracy"` (Keras picks its variant
    from the shapes) are not checked.

    Args:
        model: A compiled `keras.Model`.
        labels: The targets the model trains on, `(n,)` or `(n, width)`.
        where: `str`. What messages call the labels (`"fold 0's validation
            labels"` for streamed folds). Defaults to `"y"`.

    Raises:
        ValueError: For a metric the labels do not fit, with the label
            format it takes and the sparse metric to use instead, if any.
    """
    units = output_units(model)
    labels = np.asarray(labels)
    if units is None or labels.ndim not in (1, 2) or labels.dtype.kind not in "iubf":
        return
    integer = (labels.ndim == 1 or labels.shape[1] == 1) and bool(np.all(np.mod(labels, 1) == 0))
    rows = labels.ndim == 2 and labels.shape[1] > 1
    config = model.get_compile_config() or {}
    for metric in _flat(config.get("metrics")) + _flat(config.get("weighted_metrics")):
        found = _keras_metric(metric)
        if found is None:
            continue
        name, metric_config = found
        shown = f"{name} (named {metric_config.get('name', name)!r})"
        received = f"Invalid value for argument `y`. Received: {where} of shape {labels.shape}"
        if integer and units > 1 and name in _LABEL_ROW_METRICS:
            sparse = _LABEL_ROW_METRICS[name]
            if sparse:
                logits = "from_logits=True" if metric_config.get("from_logits") else ""
                instead = f"compile with keras.metrics.{sparse}({logits}) instead, which takes class indices"
            else:
                instead = ("leave the metric out: every fold reports scikit-learn's accuracy and macro precision, "
                           "recall and f1 already, and `scoring=` takes any scikit-learn scorer ('f1_weighted', "
                           "'roc_auc_ovr', ...)")
            raise ValueError(
                f"{received}, integer class labels. The model's metric {shown} takes one-hot label rows of width "
                f"{units}, the model's output units, and compares them with the outputs column by column. Pass "
                f"keras.utils.to_categorical(y, {units}) with a categorical loss, or {instead}."
            )
        if integer and units == 1 and labels.ndim == 1 and name in ("F1Score", "FBetaScore"):
            raise ValueError(
                f"{received}. The model's metric {shown} takes labels of shape (n, 1) for its one output unit. "
                "Pass y.reshape(-1, 1)."
            )
        if rows and name in _SPARSE_METRICS:
            raise ValueError(
                f"{received}, label rows. The model's metric {shown} takes integer class labels. Pass "
                f"y.argmax(axis=1) with a sparse loss, or compile with keras.metrics.{_SPARSE_METRICS[name]}() "
                "instead, which takes label rows."
            )


def _flat(metrics) -> list:
    """The metrics of a compile config (a list, per-output lists or dicts)."""
    if metrics is None:
        return []
    if isinstance(metrics, (list, tuple)):
        return [m for value in metrics for m in _flat(value)]
    if isinstance(metrics, dict) and "class_name" not in metrics:
        return [m for value in metrics.values() for m in _flat(value)]
    return [metrics]


def _keras_metric(metric) -> tuple[str, dict] | None:
    """The Keras class and config of a serialized compiled metric; `None`
    for a metric that is not one of Keras' own or whose variant Keras picks."""
    if isinstance(metric, dict):
        if metric.get("class_name") == "function":
            metric = metric.get("config")
        elif metric.get("module") == "keras.metrics":
            return metric.get("class_name"), dict(metric.get("config") or {})
        else:
            return None
    if not isinstance(metric, str) or metric.lower() in _SHAPE_CHOSEN:
        return None
    try:
        resolved = keras.metrics.get(metric)
    except ValueError:
        return None
    kind = type(resolved)
    if not isinstance(resolved, keras.metrics.Metric) or kind is not getattr(keras.metrics, kind.__name__, None):
        return None
    # Compiled under the name given, not the instance's uniquified one.
    return kind.__name__, {**resolved.get_config(), "name": metric}


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
