"""Calibration and conformal prediction from the folds: `Conformal`, the
fitting of temperatures and thresholds on out-of-fold predictions, and
their graph pieces (`temper`, `predict_set`, `predict_interval`).

Every number is fitted on out-of-fold predictions made the way the served
predictor predicts (see `CVResult.calibration`), so no row that calibrates
a predictor was seen by the model that predicted it.

What the conformal guarantee is, and is not: split conformal prediction
promises *marginal* coverage, `P(label in set) >= 1 - alpha` averaged over
test points and calibration rows, when the test points are exchangeable
with the calibration rows (drawn from the same distribution); nothing per
input, nothing under shift. Cross-validation changes two things. Each
calibration row is scored by the fold model that did not train on it, but
the rows of one fold share a model, so the scores are not exactly
exchangeable with a test point's; and the served predictor is the ensemble
(or randomized mean) of all fold models, which is sharper than any fold
model that produced the scores. The first is what CV+ (Barber et al.,
2021) bounds for regression (coverage >= 1 - 2 alpha in the worst case,
about 1 - alpha in practice); the second is measured by `bench/uncertainty.py`
on held-out digits and reported in the README.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from tfcv import _calibration, _checks

__all__ = ["Conformal"]

PREDICT_SET = "predict_set"
PREDICT_INTERVAL = "predict_interval"
_CALIBRATIONS = ("temperature",)
_ON = ("deterministic", "randomized")


@dataclasses.dataclass(frozen=True)
class Conformal:
    """Configures conformal prediction: the `predict_set` signature of a
    classifier, `predict_interval` of a regressor.

    `predict_set` returns `set` (`(n, classes)` int32, 1 where the class is
    in the prediction set) and `set_size` (`(n,)` int32): every class whose
    nonconformity score is at most a threshold, the
    `ceil((n + 1) * (1 - alpha))`-th smallest out-of-fold score of the true
    class. `predict_interval` returns `lower` and `upper` by CV+ from the
    fold models' predictions and the out-of-fold absolute residuals.

    Args:
        alpha: `float` in (0, 1). Target miscoverage: sets contain the label
            with probability at least `1 - alpha` (marginally, for data
            exchangeable with the training data). Defaults to `0.1`.
        method: `"lac"` (score `1 - p_label`, the smallest sets on average),
            `"aps"` (probability mass ranked at or above the label) or
            `"raps"` (APS plus `penalty` per rank beyond `k_reg`). Measured
            on the digits at alpha 0.1 (README): LAC gives an accurate model
            single classes, APS (no randomized tie-breaking) 4-5 classes per
            set, RAPS 1.1-1.6, growing under shift. Defaults to `"lac"`.
        on: `"deterministic"` (sets on the `serving_default` probabilities)
            or `"randomized"` (on the `predict_randomized` mean; needs a
            `Randomized` config and the training data). Defaults to
            `"deterministic"`.
        nonempty: `bool`. Always keep the most probable class, so no set is
            empty (coverage can only rise). Defaults to `True`.
        penalty: `float`. RAPS' penalty per extra rank. Defaults to `0.01`.
        k_reg: `int`. Ranks RAPS leaves unpenalized. Defaults to `1`.

    Example:

    >>> tfcv.export.export_saved_model(result, "models/digits", calibration="temperature",
    ...     conformal=tfcv.export.Conformal(alpha=0.1), calibration_data=(x, y))
    """

    alpha: float = 0.1
    _: dataclasses.KW_ONLY
    method: str = "lac"
    on: str = "deterministic"
    nonempty: bool = True
    penalty: float = 0.01
    k_reg: int = 1

    def __post_init__(self):
        if not _checks.is_real(self.alpha) or not 0.0 < float(self.alpha) < 1.0:
            raise ValueError(
                f"Invalid value for argument `alpha`. Received: alpha={self.alpha!r}. Expected a float in (0, 1)."
            )
        if self.method not in _calibration.CONFORMAL_METHODS:
            raise ValueError(
                f"Invalid value for argument `method`. Received: method={self.method!r}. "
                f"Expected one of {_calibration.CONFORMAL_METHODS}."
            )
        if self.on not in _ON:
            raise ValueError(f"Invalid value for argument `on`. Received: on={self.on!r}. Expected one of {_ON}.")
        _checks.check_bool("nonempty", self.nonempty)
        if not _checks.is_real(self.penalty) or float(self.penalty) < 0:
            raise ValueError(f"Invalid value for argument `penalty`. Received: penalty={self.penalty!r}. Expected a float >= 0.")
        _checks.non_negative_int("k_reg", self.k_reg)

    def to_dict(self) -> dict:
        return {"alpha": float(self.alpha), "method": self.method, "on": self.on, "nonempty": bool(self.nonempty),
                "penalty": float(self.penalty), "k_reg": int(self.k_reg)}

    @classmethod
    def from_dict(cls, config: Mapping | Conformal) -> Conformal:
        if isinstance(config, Conformal):
            return config
        return cls(**dict(config))


@dataclasses.dataclass
class Calibrated:
    """What an export fitted on the folds: temperatures per signature and
    the conformal state, plus their metadata."""

    temperatures: dict = dataclasses.field(default_factory=dict)
    conformal: Conformal | None = None
    threshold: float | None = None
    residuals: np.ndarray | None = None
    fold_of: np.ndarray | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def temperature(self, signature: str) -> float:
        return float(self.temperatures.get(signature, 1.0))


def check_arguments(calibration, conformal, calibration_data, randomized, model="ensemble"):
    if calibration is not None and calibration not in _CALIBRATIONS:
        raise ValueError(
            f"Invalid value for argument `calibration`. Received: calibration={calibration!r}. "
            f"Expected one of {_CALIBRATIONS} or None."
        )
    if conformal is not None and not isinstance(conformal, Conformal):
        raise TypeError(
            f"Invalid value for argument `conformal`. Received: conformal={conformal!r}. "
            "Expected a tfcv.export.Conformal or None."
        )
    if conformal is not None and model == "refit":
        raise ValueError(
            "Invalid value for argument `conformal` with model='refit'. A conformal threshold holds only for "
            "the predictor whose out-of-fold scores it comes from, and the refit model has none: it trained on "
            "every row. Export model='ensemble' (the fold models that scored those rows), or conformal=None."
        )
    if conformal is not None and conformal.on == "randomized" and randomized is None:
        raise ValueError(
            "Invalid value for argument `conformal`. Received: on='randomized' with randomized=None. "
            "Pass a tfcv.export.Randomized, or Conformal(on='deterministic')."
        )
    if calibration_data is not None and (not isinstance(calibration_data, (tuple, list)) or len(calibration_data) != 2):
        raise TypeError(
            f"Invalid value for argument `calibration_data`. Received: {type(calibration_data).__name__}. "
            "Expected an (x, y) pair: the data the cross-validation ran on."
        )


def fit(result, *, task: str, n_outputs: int, randomized, calibration, conformal, calibration_data,
        predictors: tuple[str, ...], model: str = "ensemble") -> Calibrated:
    """Fits the temperatures and conformal thresholds of one export.

    For `model="refit"` the temperatures come from the fold models'
    out-of-fold predictions and are applied to the refit model, as
    scikit-learn's `CalibratedClassifierCV(ensemble=False)` calibrates the
    estimator refit on all the data with `cross_val_predict` predictions.
    """
    from tfcv.bundle import SERVING_DEFAULT
    from tfcv.export._signatures import PREDICT_RANDOMIZED

    if result is None:
        raise ValueError(
            "calibration and conformal need out-of-fold predictions: export a CVResult (or its run "
            "directory), not a single keras.Model."
        )
    if n_outputs != 1:
        raise ValueError(f"calibration and conformal support models with one output; this one has {n_outputs}.")
    if calibration is not None and task != "classification":
        raise ValueError(
            f"Invalid value for argument `calibration`. Received: calibration={calibration!r} for a "
            "regression. Temperatures calibrate classifiers; use conformal=Conformal() for intervals."
        )
    x, y = calibration_data if calibration_data is not None else (None, None)
    needs_randomized = task == "classification" and PREDICT_RANDOMIZED in predictors and (
        calibration is not None or (conformal is not None and conformal.on == "randomized"))
    if needs_randomized and calibration_data is None:
        raise ValueError(
            "Invalid value for argument `calibration_data`. Received: calibration_data=None. Calibrating "
            "predict_randomized randomizes each fold model on its own validation fold: pass "
            "calibration_data=(x, y), the data the cross-validation ran on, or randomized=None."
        )
    outputs = _calibration.oof_outputs(result, x, y, randomized=randomized if needs_randomized else None)
    done = Calibrated(conformal=conformal)
    if calibration is not None:
        report = {}
        for name, (target, draws, _) in outputs.items():
            t = _calibration.fit_temperature(target, draws)
            done.temperatures[name] = t
            report[name] = {
                "temperature": t,
                "n": int(draws.shape[1]),
                "before": _calibration.classification_report(target, draws.mean(axis=0)),
                "after": _calibration.classification_report(target, _calibration.mean_draws(draws, t)),
            }
        fitted_on = "out-of-fold predictions" if model != "refit" else (
            "out-of-fold predictions of the fold models, applied to the refit model")
        done.metadata["calibration"] = {"method": calibration, "fitted_on": fitted_on,
                                        "temperatures": dict(done.temperatures), "oof": report}
    if conformal is None:
        return done
    if task == "regression":
        target, draws, fold_of = outputs[SERVING_DEFAULT]
        mu = draws[0].reshape(len(target), -1)
        residuals = np.abs(np.asarray(target, dtype="float64").reshape(mu.shape) - mu)
        done.residuals, done.fold_of = residuals.astype("float32"), fold_of.astype("int32")
        half = np.array([_calibration.conformal_quantile(residuals[:, j], conformal.alpha)
                         for j in range(residuals.shape[1])])
        done.metadata["conformal"] = {
            **conformal.to_dict(), "method": "cv+", "signature": PREDICT_INTERVAL, "n": int(len(target)),
            "oof_coverage": float(np.mean(residuals <= half)), "oof_mean_width": float(np.mean(2 * half)),
        }
        return done
    name = SERVING_DEFAULT if conformal.on == "deterministic" else PREDICT_RANDOMIZED
    target, draws, _ = outputs[name]
    probabilities = _calibration.two_columns(_calibration.mean_draws(draws, done.temperature(name)))
    labels = np.asarray(target).astype("int64").reshape(-1)
    kwargs = {"penalty": float(conformal.penalty), "k_reg": int(conformal.k_reg)}
    true_scores = _calibration.class_scores(probabilities, conformal.method, **kwargs)[np.arange(len(labels)), labels]
    done.threshold = _calibration.conformal_quantile(true_scores, conformal.alpha)
    sets = _calibration.prediction_sets(probabilities, done.threshold, conformal.method,
                                        nonempty=conformal.nonempty, **kwargs)
    bare = _calibration.prediction_sets(probabilities, done.threshold, conformal.method, nonempty=False, **kwargs)
    done.metadata["conformal"] = {
        **conformal.to_dict(),
        "signature": PREDICT_SET,
        "predictor": name,
        "threshold": done.threshold if math.isfinite(done.threshold) else None,
        "n": int(len(labels)),
        "oof_coverage": float(np.mean(sets[np.arange(len(labels)), labels])),
        "oof_mean_set_size": float(np.mean(sets.sum(axis=1))),
        "oof_empty_rate_without_top_class": float(np.mean(bare.sum(axis=1) == 0)),
    }
    return done


# ------------------------------------------------------------------ graphs


def temper(p: tf.Tensor, temperature: float) -> tf.Tensor:
    """`softmax(log(p) / T)` in the graph; a sigmoid column stays one column."""
    if temperature == 1.0:
        return p
    single = p.shape[-1] == 1
    full = tf.concat([1.0 - p, p], axis=-1) if single else p
    tempered = tf.nn.softmax(tf.math.log(tf.clip_by_value(full, 1e-12, 1.0)) / float(temperature), axis=-1)
    return tempered[..., 1:] if single else tempered


def prediction_set(p: tf.Tensor, threshold: float, conformal: Conformal) -> dict[str, tf.Tensor]:
    """The `predict_set` outputs for probabilities `p`, computed as
    `tfcv._calibration.prediction_sets` computes them."""
    full = tf.concat([1.0 - p, p], axis=-1) if p.shape[-1] == 1 else p
    if conformal.method == "lac":
        scores = 1.0 - full
    else:
        order = tf.argsort(full, axis=-1, direction="DESCENDING", stable=True)
        cumulative = tf.cumsum(tf.gather(full, order, batch_dims=1), axis=-1)
        if conformal.method == "raps":
            rank = tf.range(1, tf.shape(full)[-1] + 1)
            cumulative += float(conformal.penalty) * tf.cast(tf.maximum(0, rank - int(conformal.k_reg)), full.dtype)
        scores = tf.gather(cumulative, tf.argsort(order, axis=-1, stable=True), batch_dims=1)
    members = scores <= float(threshold)
    if conformal.nonempty:
        members = tf.logical_or(members, tf.one_hot(tf.argmax(full, axis=-1), tf.shape(full)[-1]) > 0.5)
    members = tf.cast(members, tf.int32)
    return {"set": members, "set_size": tf.reduce_sum(members, axis=-1)}


def prediction_interval(per_fold: list[tf.Tensor], calibrated: Calibrated) -> dict[str, tf.Tensor]:
    """CV+ `lower`/`upper` from each fold model's prediction."""
    alpha = float(calibrated.conformal.alpha)
    residuals, fold_of = calibrated.residuals, calibrated.fold_of
    n = len(residuals)
    shape = tf.shape(per_fold[0])
    mu = tf.stack([tf.reshape(v, [shape[0], -1]) for v in per_fold], axis=1)  # (b, folds, d)
    values = tf.gather(mu, tf.constant(fold_of), axis=1)  # (b, n, d)
    r = tf.constant(residuals, tf.float32)[None]
    k_hi, k_lo = math.ceil((1.0 - alpha) * (n + 1)), math.floor(alpha * (n + 1))
    upper = tf.sort(values + r, axis=1)
    lower = tf.sort(values - r, axis=1)
    up = upper[:, k_hi - 1] if k_hi <= n else tf.fill(tf.shape(upper[:, 0]), float("inf"))
    lo = lower[:, k_lo - 1] if k_lo >= 1 else tf.fill(tf.shape(lower[:, 0]), float("-inf"))
    return {"lower": tf.reshape(lo, shape), "upper": tf.reshape(up, shape)}
