"""The numbers of uncertainty: scoring rules, temperature scaling, conformal
quantiles and class scores, and out-of-fold randomized predictions.

Everything here works on NumPy arrays of class probabilities `(n, classes)`
(a single column is the positive class of a binary problem) or regression
values, and imports no TensorFlow at module level, so `tfcv.result` (the
temperatures of `CVResult.calibration`), `tfcv.export` (the calibrated and
conformal signatures) and `tfcv.uncertainty` (the public metrics) share one
implementation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "aurc",
    "auroc",
    "brier_score",
    "class_scores",
    "conformal_quantile",
    "expected_calibration_error",
    "fit_temperature",
    "gaussian_nll",
    "interval_coverage",
    "interval_width",
    "negative_log_likelihood",
    "selective_accuracy",
    "temper",
]

_EPS = 1e-12
CONFORMAL_METHODS = ("lac", "aps", "raps")


# ------------------------------------------------------------ probabilities


def two_columns(p: Any) -> np.ndarray:
    """`(n, classes)` float64 probabilities; one column becomes `[1 - p, p]`."""
    p = np.asarray(p, dtype="float64")
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ValueError(f"Expected class probabilities of shape (n, classes). Received shape {p.shape}.")
    return np.concatenate([1.0 - p, p], axis=1) if p.shape[1] == 1 else p


def looks_like_probabilities(values: Any) -> bool:
    """Whether model outputs are probabilities rather than logits."""
    v = np.asarray(values, dtype="float64")
    v = v[np.all(np.isfinite(v.reshape(len(v), -1)), axis=1)] if v.ndim else v
    if v.size == 0 or v.min() < 0 or v.max() > 1:
        return False
    return v.ndim == 1 or v.shape[-1] == 1 or bool(np.allclose(v.sum(axis=-1), 1.0, atol=1e-3))


def to_probabilities(values: Any) -> np.ndarray:
    """Model outputs (probabilities or logits) as probabilities, same shape."""
    v = np.asarray(values, dtype="float64")
    if looks_like_probabilities(v):
        return v
    if v.ndim == 1 or v.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-v))
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def temper(p: Any, temperature: float) -> np.ndarray:
    """`softmax(log(p) / temperature)`, over the last axis, in the input's
    column layout (a single sigmoid column stays a single column)."""
    p = np.asarray(p, dtype="float64")
    single = p.shape[-1] == 1
    full = np.concatenate([1.0 - p, p], axis=-1) if single else p
    z = np.log(np.clip(full, _EPS, 1.0)) / float(temperature)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    full = z / z.sum(axis=-1, keepdims=True)
    return full[..., 1:] if single else full


def _labels(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"Expected {n} labels, one per row of probabilities. Received {y.shape[0]}.")
    return y.astype("int64")


# ----------------------------------------------------------------- metrics


def accuracy(y: Any, p: Any) -> float:
    """Fraction of rows whose most probable class is the label."""
    p = two_columns(p)
    return float(np.mean(np.argmax(p, axis=1) == _labels(y, len(p))))


def negative_log_likelihood(y: Any, p: Any) -> float:
    """Mean `-log p[label]` (nats), probabilities clipped at 1e-12."""
    p = two_columns(p)
    y = _labels(y, len(p))
    return float(np.mean(-np.log(np.clip(p[np.arange(len(p)), y], _EPS, 1.0))))


def brier_score(y: Any, p: Any) -> float:
    """Mean over rows of `sum_c (p_c - [c == label])**2` (0 to 2)."""
    p = two_columns(p)
    onehot = np.eye(p.shape[1])[_labels(y, len(p))]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _bins(confidence: np.ndarray, n_bins: int, strategy: str) -> list[np.ndarray]:
    if strategy == "uniform":
        # Bins (lo, hi], the first one [0, 1/n_bins].
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
        return [np.flatnonzero(index == b) for b in range(n_bins)]
    if strategy == "quantile":
        return list(np.array_split(np.argsort(confidence, kind="stable"), n_bins))
    raise ValueError(
        f"Invalid value for argument `strategy`. Received: strategy={strategy!r}. Expected 'uniform' or 'quantile'."
    )


def _binned_error(confidence: np.ndarray, outcome: np.ndarray, n_bins: int, strategy: str) -> float:
    n = len(confidence)
    total = 0.0
    for rows in _bins(confidence, n_bins, strategy):
        if len(rows):
            total += len(rows) / n * abs(float(np.mean(outcome[rows])) - float(np.mean(confidence[rows])))
    return total


def expected_calibration_error(y: Any, p: Any, *, n_bins: int = 15, strategy: str = "uniform",
                               kind: str = "top_label") -> float:
    """Expected calibration error.

    Args:
        y: Integer labels, `(n,)`.
        p: Class probabilities, `(n, classes)` (one column: binary).
        n_bins: `int`. Number of bins. Defaults to `15`.
        strategy: `"uniform"` (equal-width bins on [0, 1], `(lo, hi]`) or
            `"quantile"` (equal-mass bins of the sorted confidences).
            Defaults to `"uniform"`.
        kind: `"top_label"` (confidence of the predicted class against
            whether it is right) or `"classwise"` (every class's probability
            against whether it is the label, averaged over classes).
            Defaults to `"top_label"`.

    Returns:
        `sum_b |bin| / n * |accuracy(b) - confidence(b)|` (averaged over
        classes for `"classwise"`).
    """
    p = two_columns(p)
    y = _labels(y, len(p))
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"Invalid value for argument `n_bins`. Received: n_bins={n_bins!r}. Expected an int >= 1.")
    if kind == "top_label":
        return _binned_error(p.max(axis=1), (p.argmax(axis=1) == y).astype("float64"), n_bins, strategy)
    if kind == "classwise":
        return float(np.mean([_binned_error(p[:, c], (y == c).astype("float64"), n_bins, strategy)
                              for c in range(p.shape[1])]))
    raise ValueError(f"Invalid value for argument `kind`. Received: kind={kind!r}. Expected 'top_label' or 'classwise'.")


def auroc(score: Any, positive: Any) -> float:
    """Area under the ROC curve of `score` for detecting `positive` rows
    (ties count one half); NaN when either class is missing.

    With `score` an uncertainty and `positive` the errors, 1.0 means every
    error is more uncertain than every correct prediction, 0.5 is chance.
    """
    score = np.asarray(score, dtype="float64").reshape(-1)
    positive = np.asarray(positive).astype(bool).reshape(-1)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score), dtype="float64")
    sorted_scores = score[order]
    # Average ranks over ties (Mann-Whitney U).
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def aurc(uncertainty: Any, correct: Any) -> float:
    """Area under the risk-coverage curve: the error rate among the `k`
    least uncertain rows, averaged over `k = 1..n` (lower is better)."""
    uncertainty = np.asarray(uncertainty, dtype="float64").reshape(-1)
    errors = 1.0 - np.asarray(correct, dtype="float64").reshape(-1)
    order = np.argsort(uncertainty, kind="stable")
    risks = np.cumsum(errors[order]) / np.arange(1, len(order) + 1)
    return float(np.mean(risks))


def selective_accuracy(uncertainty: Any, correct: Any, coverage: float) -> float:
    """Accuracy on the `ceil(coverage * n)` least uncertain rows."""
    if not 0.0 < float(coverage) <= 1.0:
        raise ValueError(f"Invalid value for argument `coverage`. Received: coverage={coverage!r}. Expected 0 < coverage <= 1.")
    uncertainty = np.asarray(uncertainty, dtype="float64").reshape(-1)
    correct = np.asarray(correct, dtype="float64").reshape(-1)
    keep = np.argsort(uncertainty, kind="stable")[: max(1, math.ceil(float(coverage) * len(uncertainty)))]
    return float(np.mean(correct[keep]))


def gaussian_nll(y: Any, mean: Any, std: Any) -> float:
    """Mean negative log-likelihood (nats) of `y` under `N(mean, std**2)`."""
    y, mean = np.asarray(y, dtype="float64"), np.asarray(mean, dtype="float64")
    var = np.maximum(np.asarray(std, dtype="float64"), 1e-6) ** 2
    y = y.reshape(mean.shape)
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + (y - mean) ** 2 / (2 * var)))


def interval_coverage(y: Any, lower: Any, upper: Any) -> float:
    """Fraction of `y` inside `[lower, upper]`."""
    lower = np.asarray(lower, dtype="float64")
    y = np.asarray(y, dtype="float64").reshape(lower.shape)
    return float(np.mean((y >= lower) & (y <= np.asarray(upper, dtype="float64"))))


def interval_width(lower: Any, upper: Any) -> float:
    """Mean width `upper - lower`."""
    return float(np.mean(np.asarray(upper, dtype="float64") - np.asarray(lower, dtype="float64")))


def classification_report(y: Any, p: Any, *, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, Brier and top-label ECE (equal-width) of probabilities."""
    return {
        "accuracy": accuracy(y, p),
        "nll": negative_log_likelihood(y, p),
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(y, p, n_bins=n_bins),
    }


# ------------------------------------------------------------- temperature


def fit_temperature(y: Any, p: Any, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature `T` minimizing the NLL of `softmax(log(p) / T)`.

    Args:
        y: Integer labels, `(n,)`.
        p: Class probabilities `(n, classes)`, or randomized draws
            `(samples, n, classes)`: then the temperature applies to their
            mean, as `predict_randomized` applies it.
        bounds: `(low, high)` search range for `T`. Defaults to
            `(0.05, 20.0)`.

    Returns:
        `float`. `T < 1` sharpens, `T > 1` softens; `1.0` changes nothing.
    """
    from scipy.optimize import minimize_scalar

    p = np.asarray(p, dtype="float64")
    # Averaging draws that disagree flattens the mean whatever each draw's
    # temperature; measured on the digits, a temperature on the mean lowers
    # held-out NLL 2-3x more than one on every draw (see the README).
    p = two_columns(p.mean(axis=0) if p.ndim == 3 else p)
    y = _labels(y, len(p))
    log_p = np.log(np.clip(p, _EPS, 1.0))
    rows = np.arange(len(p))

    def loss(log_t):
        z = log_p / math.exp(log_t)
        z = z - z.max(axis=-1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=-1, keepdims=True)
        return float(np.mean(-np.log(np.clip(probs[rows, y], _EPS, 1.0))))

    found = minimize_scalar(loss, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                            options={"xatol": 1e-4})
    # The bounded search never evaluates T = 1 exactly; keep it when it is
    # at least as good, so calibration never makes the fitted NLL worse.
    return 1.0 if loss(0.0) <= found.fun else float(math.exp(found.x))


# ---------------------------------------------------------------- conformal


def class_scores(p: Any, method: str, *, penalty: float = 0.0, k_reg: int = 0) -> np.ndarray:
    """Nonconformity score of every class, `(n, classes)`; a class is in
    the conformal set when its score is at most the threshold.

    - `"lac"`: `1 - p_c`.
    - `"aps"`: the probability mass of the classes ranked at or above `c`.
    - `"raps"`: APS plus `penalty * max(0, rank(c) - k_reg)` (rank 1 is the
      most probable class), which keeps sets small on accurate models.

    The graph in `tfcv.export` computes the same in TensorFlow.
    """
    p = two_columns(p)
    if method == "lac":
        return 1.0 - p
    if method not in CONFORMAL_METHODS:
        raise ValueError(f"Invalid value for argument `method`. Received: method={method!r}. Expected one of {CONFORMAL_METHODS}.")
    order = np.argsort(-p, axis=1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
    if method == "raps":
        rank = np.arange(1, p.shape[1] + 1)[None, :]
        cumulative = cumulative + penalty * np.maximum(0, rank - k_reg)
    scores = np.empty_like(cumulative)
    np.put_along_axis(scores, order, cumulative, axis=1)
    return scores


def conformal_quantile(scores: Any, alpha: float) -> float:
    """The `ceil((n + 1) * (1 - alpha))`-th smallest of `n` calibration
    scores (`inf` when that exceeds `n`): split conformal's threshold."""
    scores = np.sort(np.asarray(scores, dtype="float64").reshape(-1))
    k = math.ceil((len(scores) + 1) * (1.0 - float(alpha)))
    return float("inf") if k > len(scores) else float(scores[max(k, 1) - 1])


def prediction_sets(p: Any, threshold: float, method: str, *, penalty: float = 0.0, k_reg: int = 0,
                    nonempty: bool = True) -> np.ndarray:
    """`(n, classes)` int32 membership of the conformal sets."""
    p = two_columns(p)
    members = class_scores(p, method, penalty=penalty, k_reg=k_reg) <= threshold
    if nonempty:
        members[np.arange(len(p)), np.argmax(p, axis=1)] = True
    return members.astype("int32")


def cv_plus_interval(mu: np.ndarray, residuals: np.ndarray, fold_of: np.ndarray, alpha: float):
    """CV+ intervals (Barber et al., 2021) from each fold model's prediction
    `mu` `(n_test, folds, ...)`, the out-of-fold absolute residuals
    `(n_cal, ...)` and the fold that predicted each calibration row."""
    values = mu[:, fold_of]  # (n_test, n_cal, ...)
    n = len(residuals)
    k_hi = math.ceil((1.0 - alpha) * (n + 1))
    k_lo = math.floor(alpha * (n + 1))
    upper = np.sort(values + residuals, axis=1)
    lower = np.sort(values - residuals, axis=1)
    up = np.full(upper[:, 0].shape, np.inf) if k_hi > n else upper[:, k_hi - 1]
    lo = np.full(lower[:, 0].shape, -np.inf) if k_lo < 1 else lower[:, k_lo - 1]
    return lo, up


# ------------------------------------------------------- randomized draws


def randomized_draws(model, x: np.ndarray, *, samples: int, augmentation: bool, mc_dropout: bool,
                     batch_size: int = 256) -> np.ndarray:
    """`(samples, n, ...)` probabilities of `model` randomized as
    `predict_randomized` randomizes it (`tfcv.layers.randomized_inference`,
    `training=False`, the batch tiled `samples` times), outputs converted
    from logits when they are not probabilities.

    The model's random-generator states are put back afterwards, so
    measuring never changes what a later export or call draws.
    """
    import tensorflow as tf

    from tfcv.layers import randomized_inference

    states = [v for v in model.variables if "seed_generator_state" in v.path]
    saved = [np.asarray(v.numpy()) for v in states]
    chunks = []
    try:
        with randomized_inference(augmentation=bool(augmentation), dropout=bool(mc_dropout)):
            for start in range(0, len(x), batch_size):
                part = tf.constant(x[start:start + batch_size])
                tiled = tf.tile(part, [samples] + [1] * (len(part.shape) - 1))
                out = np.asarray(model(tiled, training=False), dtype="float64")
                chunks.append(out.reshape(samples, len(part), *out.shape[1:]))
    finally:
        for variable, value in zip(states, saved):
            variable.assign(value)
    draws = np.concatenate(chunks, axis=1)
    return draws if looks_like_probabilities(draws.reshape(-1, draws.shape[-1])) else to_probabilities(draws)


# -------------------------------------------------------- out-of-fold rows


def oof_outputs(result, x: Any = None, y: Any = None, *, randomized: Any = None) -> dict[str, tuple]:
    """Out-of-fold outputs of each served predictor of a `CVResult`, every
    row predicted by the fold model that did not train on it.

    Returns `{"serving_default": (targets, draws, fold_of)}` with `draws`
    of shape `(1, n, ...)` (each fold model's plain validation predictions,
    as probabilities for classifiers), plus `"predict_randomized"` with
    `(samples, n, classes)` draws when `randomized` (a
    `tfcv.export.Randomized`) and the training data `x`, `y` are given:
    each fold model randomized as that signature randomizes it, on its own
    validation fold. `fold_of` is the fold that predicted each row.
    """
    n_folds = len(result.val_predictions)
    targets = result.val_targets
    if targets is None:
        raise ValueError(
            "This CVResult holds no validation targets, so nothing can be calibrated on its out-of-fold "
            "predictions. Results of CrossValidator.fit hold them; re-run the cross-validation."
        )
    fold_of = np.concatenate([np.full(len(t), k) for k, t in enumerate(targets)])
    target = np.concatenate([_flat_target(t, result.task) for t in targets])
    values = np.concatenate([np.asarray(p, dtype="float64") for p in result.val_predictions])
    if result.task == "classification":
        values = to_probabilities(values)
    out = {"serving_default": (target, values[None], fold_of)}
    if randomized is None:
        return out
    if result.task != "classification":
        raise ValueError("Randomized out-of-fold predictions are only calibrated for classifiers.")
    if x is None or y is None:
        raise ValueError(
            "Calibrating predict_randomized needs the data the cross-validation ran on, to randomize each "
            "fold model on its own validation fold. Pass x and y (as given to CrossValidator.fit)."
        )
    plan = result.plan
    if not plan.uses_indices:
        raise ValueError(
            f"Cannot calibrate predict_randomized for a plan of split strings ({plan!r}): pass a result "
            "cross-validated on in-memory arrays."
        )
    x = np.asarray(x)
    plan.check_data(x, np.asarray(y))
    draws = [
        randomized_draws(model, x[val], samples=randomized.samples, augmentation=randomized.augmentation,
                         mc_dropout=randomized.mc_dropout)
        for model, (_, val) in zip(result.models, plan.folds)
    ]
    if n_folds != len(draws):
        raise ValueError(f"The result has {n_folds} folds of predictions but {len(draws)} models.")
    out["predict_randomized"] = (target, np.concatenate(draws, axis=1), fold_of)
    return out


def _flat_target(t, task):
    t = np.asarray(t)
    if task == "classification" and t.ndim == 2 and t.shape[1] > 1:
        return np.argmax(t, axis=1)  # one-hot labels
    return t.reshape(len(t)) if t.ndim == 2 and t.shape[1] == 1 and task == "classification" else t


def mean_draws(draws: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The mean over axis 0 of the draws, tempered: what a calibrated
    `serving_default` (one draw per row) or `predict_randomized` returns."""
    mean = draws.mean(axis=0)
    return mean if temperature == 1.0 else temper(mean, temperature)
