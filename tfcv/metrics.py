"""Scoring: the scikit-learn metrics every fold reports, and the losses and
metrics the model builder compiles with."""

from __future__ import annotations

from typing import Any

import numpy as np

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
