"""How sure a model is, measured: uncertainty metrics, dataset shifts and
`evaluate`, which scores what the served signatures return.

The metrics work on NumPy arrays (class probabilities `(n, classes)`, one
column for a binary problem). `evaluate` compares, on clean data and on
named shifts of it, a single fold model, the fold ensemble
(`serving_default`) and `predict_randomized` (and, for a `CVResult`, its
test-time-augmentation-only and MC-dropout-only variants), each with and
without a temperature fitted on the folds, as a TF Serving client sees them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tfcv._calibration import (
    accuracy,
    aurc,
    auroc,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    gaussian_nll,
    interval_coverage,
    interval_width,
    negative_log_likelihood,
    selective_accuracy,
    temper,
    two_columns,
)

__all__ = [
    "SHIFTS",
    "Evaluation",
    "accuracy",
    "aurc",
    "auroc",
    "brier_score",
    "entropy",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "gaussian_nll",
    "interval_coverage",
    "interval_width",
    "negative_log_likelihood",
    "parse_shifts",
    "selective_accuracy",
    "shift",
    "temper",
]

# Severity s = 1..5 of every shift, in the spirit of MNIST-C / CIFAR-10-C.
SHIFTS = {
    "rotate": "rotation by 6*s degrees (keras.layers.RandomRotation)",
    "shift": "translation by 0.5*s pixels down and right (keras.layers.RandomTranslation)",
    "noise": "additive Gaussian noise of std 0.06*s, clipped to the input range (keras.layers.GaussianNoise)",
    "blur": "Gaussian blur of sigma 0.2*s, kernel 3 (keras.layers.RandomGaussianBlur)",
    "contrast": "contrast scaled by 1 - 0.15*s around each image's mean (keras.ops)",
}


def entropy(p: Any) -> np.ndarray:
    """Predictive entropy (nats) of each row of class probabilities."""
    p = two_columns(p)
    return -np.sum(p * np.log(np.clip(p, 1e-12, 1.0)), axis=1)


def shift(x: Any, name: str, severity: int, *, value_range: tuple[float, float] = (0.0, 1.0),
          seed: int = 0) -> np.ndarray:
    """A shifted copy of images `x` `(n, height, width, channels)`.

    Args:
        x: Images.
        name: One of `SHIFTS`: `"rotate"`, `"shift"`, `"noise"`, `"blur"`,
            `"contrast"`.
        severity: `int` from 1 (mild) to 5 (severe).
        value_range: `(low, high)` of the pixel values. Defaults to `(0, 1)`.
        seed: `int`. Seed of the noise. Defaults to `0`.

    Returns:
        A float32 array of the shape of `x`.
    """
    import keras

    if name not in SHIFTS:
        raise ValueError(f"Invalid value for argument `name`. Received: name={name!r}. Expected one of {sorted(SHIFTS)}.")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"Invalid value for argument `severity`. Received: severity={severity!r}. Expected an int in 1..5.")
    x = np.asarray(x, dtype="float32")
    low, high = value_range
    s = int(severity)
    if name == "rotate":
        turn = 6.0 * s / 360.0
        layer = keras.layers.RandomRotation((turn, turn), fill_mode="constant", fill_value=low, seed=seed)
    elif name == "shift":
        frac_h, frac_w = 0.5 * s / x.shape[1], 0.5 * s / x.shape[2]
        layer = keras.layers.RandomTranslation((frac_h, frac_h), (frac_w, frac_w), fill_mode="constant",
                                               fill_value=low, seed=seed)
    elif name == "noise":
        layer = keras.layers.GaussianNoise(0.06 * s * (high - low), seed=seed)
    elif name == "blur":
        layer = keras.layers.RandomGaussianBlur(factor=1.0, kernel_size=3, sigma=(0.2 * s, 0.2 * s),
                                                value_range=value_range, seed=seed)
    else:
        mean = keras.ops.mean(x, axis=(1, 2, 3), keepdims=True)
        return np.asarray(mean + (x - mean) * (1.0 - 0.15 * s), dtype="float32")
    out = np.asarray(layer(x, training=True), dtype="float32")
    return np.clip(out, low, high)


def parse_shifts(shifts: Any, severities: Iterable[int] = (1, 3, 5)) -> dict[str, tuple[int, ...]]:
    """Named shifts and their severities, checked.

    Args:
        shifts: Names from `SHIFTS` (every one at `severities`), strings
            `"name:s,s"` with their own severities (`"rotate:1,3,5"`), or a
            mapping `{name: severities}`.
        severities: Severities (1..5) of the names given without any.
            Defaults to `(1, 3, 5)`.

    Returns:
        `{name: (severity, ...)}` in the order given.

    Example:

    >>> tfcv.uncertainty.parse_shifts(["rotate:1,3,5", "noise:3"])
    {'rotate': (1, 3, 5), 'noise': (3,)}
    """
    if isinstance(shifts, str):
        shifts = [shifts]
    items = shifts.items() if isinstance(shifts, Mapping) else (
        (str(item).partition(":")[0], str(item).partition(":")[2] or None) for item in shifts)
    parsed: dict[str, tuple[int, ...]] = {}
    for name, levels in items:
        received = levels
        if name not in SHIFTS:
            raise ValueError(
                f"Invalid value for argument `shifts`. Received: unknown shift {name!r}. Expected names from "
                f"{list(SHIFTS)}, each optionally followed by ':' and severities 1..5 (rotate:1,3,5)."
            )
        if levels is None:
            levels = severities
        elif isinstance(levels, str):
            try:
                levels = [int(level) for level in levels.split(",")]
            except ValueError:
                levels = None
        if levels is None or isinstance(levels, (str, bytes)) or not all(
                isinstance(level, (int, np.integer)) and not isinstance(level, bool) and 1 <= level <= 5
                for level in levels) or not len(levels):
            raise ValueError(
                f"Invalid value for argument `shifts`. Received: {name}:{received}. Expected severities, "
                "comma-separated ints in 1..5 (rotate:1,3,5)."
            )
        parsed[name] = tuple(dict.fromkeys(int(level) for level in levels))
    return parsed


class Evaluation:
    """The rows of `evaluate`: one per contender and condition.

    Attributes:
        rows: `list` of `dict` with `contender`, `calibrated`, `shift`,
            `severity` and the metrics (`accuracy`, `nll`, `brier`, `ece`,
            `auroc_error`, `aurc`, `mean_entropy`, and where a conformal
            signature was served `coverage`, `set_size`, `empty_rate`; with
            OOD inputs `ood_auroc`).
    """

    def __init__(self, rows: list[dict]):
        self.rows = list(rows)

    def to_frame(self):
        """The rows as a tidy pandas DataFrame. Needs pandas."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError("Evaluation.to_frame() needs pandas: pip install pandas") from error
        return pd.DataFrame(self.rows)

    def to_records(self) -> list[dict]:
        """The rows as JSON-ready dicts: NaN (a metric undefined on that
        data, such as AUROC without errors) becomes `None`."""
        return [{k: None if isinstance(v, float) and v != v else v for k, v in row.items()} for row in self.rows]

    def summary(self) -> str:
        """The rows as a fixed-width table, one line per contender and
        condition."""
        columns = [c for c in _SUMMARY_COLUMNS if any(c in row for row in self.rows)]
        header = ["contender", "T", "shift", *columns]
        lines = [[row["contender"], "yes" if row["calibrated"] else "no",
                  row["shift"] + (f":{row['severity']}" if row["severity"] else ""),
                  *("" if row.get(c) is None or row[c] != row[c] else f"{row[c]:.4f}" for c in columns)]
                 for row in self.rows]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
        return "\n".join("  ".join(str(cell).rjust(w) if i >= 3 else str(cell).ljust(w)
                                   for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
                         for line in [header, *lines])

    def __repr__(self) -> str:
        contenders = sorted({r["contender"] for r in self.rows})
        return f"Evaluation(rows={len(self.rows)}, contenders={contenders})"


_SUMMARY_COLUMNS = ("accuracy", "nll", "brier", "ece", "auroc_error", "mean_entropy", "coverage", "set_size",
                    "ood_auroc")


def _scores(y, p, sets=None, ood_p=None) -> dict[str, float]:
    p = two_columns(p)
    y = np.asarray(y).astype("int64").reshape(-1)
    h = entropy(p)
    correct = np.argmax(p, axis=1) == y
    row = {
        "accuracy": float(correct.mean()),
        "nll": negative_log_likelihood(y, p),
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(y, p),
        "auroc_error": auroc(h, ~correct),
        "aurc": aurc(h, correct),
        "mean_entropy": float(h.mean()),
    }
    if sets is not None:
        row["coverage"] = float(sets[np.arange(len(y)), y].mean())
        row["set_size"] = float(sets.sum(axis=1).mean())
    if ood_p is not None:
        ood_h = entropy(ood_p)
        row["ood_auroc"] = auroc(np.concatenate([h, ood_h]), np.r_[np.zeros(len(h)), np.ones(len(ood_h))])
    return row


def _call(loaded, signature, name, x, batch_size):
    fn = loaded.signatures[signature]
    parts = [fn(**{name: x[i:i + batch_size]}) for i in range(0, len(x), batch_size)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def _check_data(x: np.ndarray, y: np.ndarray, meta: dict, version_dir: str) -> np.ndarray:
    """`y` as class indices, once `x` fits the bundle's input and `y` its
    classes (TensorFlow would abort the process on some wrong shapes, and a
    label beyond the classes fails deep in the scoring)."""
    shape = meta["input_spec"]["shape"]
    if x.ndim != len(shape) or any(want is not None and got != want for got, want in zip(x.shape[1:], shape[1:])):
        raise ValueError(
            f"Invalid value for argument `x`. Received: x of shape {x.shape}. Expected shape "
            f"{tuple(shape)} (None: any size), the input of {version_dir!r}."
        )
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"Invalid value for argument `y`. Received: y of shape {y.shape}. Expected one label per row of x, "
            f"shape ({len(x)},)."
        )
    names = [str(name) for name in meta.get("class_names") or ()]
    if not names:
        return y
    if y.dtype.kind in "USO":
        unknown = sorted({str(label) for label in y} - set(names))
        if unknown:
            raise ValueError(
                f"Invalid value for argument `y`. Received labels {unknown[:5]} that are not class names of "
                f"{version_dir!r}. Expected class indices 0..{len(names) - 1} or names from {names}."
            )
        return np.array([names.index(str(label)) for label in y])
    if y.dtype.kind not in "iu" or (len(y) and not 0 <= y.min() <= y.max() < len(names)):
        raise ValueError(
            f"Invalid value for argument `y`. Received: y of dtype {y.dtype} with values in "
            f"[{y.min() if len(y) else ''}, {y.max() if len(y) else ''}]. Expected class indices 0..{len(names) - 1} "
            f"of {version_dir!r} (or names from {names})."
        )
    return y


def _bundle_contenders(version_dir: str, label: str | None = None) -> tuple[list, dict]:
    """`(contenders, metadata)` of one bundle: `(name, fn(x) -> (probabilities, sets or None))`."""
    import tensorflow as tf

    from tfcv import bundle

    meta = bundle.read_metadata(version_dir)
    if meta.get("task") != "classification":
        raise ValueError(f"evaluate measures classifiers; {version_dir!r} serves a {meta.get('task')}.")
    loaded = tf.saved_model.load(version_dir, tags=[bundle.SERVE_TAG])
    name = meta["input_spec"]["name"]
    conformal = meta.get("conformal") or {}
    batch = 256

    def probabilities(signature, key):
        return lambda x: _call(loaded, signature, name, tf.constant(x), batch)[key]

    def with_sets(predictor, fn):
        if conformal.get("predictor") != predictor:
            return lambda x: (fn(x), None)
        return lambda x: (fn(x), _call(loaded, "predict_set", name, tf.constant(x), batch)["set"])

    contenders = []
    if int(meta.get("n_folds") or 1) > 1:
        folds = probabilities("predict_folds", meta["output_names"][0])
        contenders.append(("single", lambda x: (folds(x)[:, 0], None)))
        contenders.append(("ensemble", with_sets("serving_default", probabilities("serving_default", meta["output_names"][0]))))
    else:
        contenders.append(("single", with_sets("serving_default", probabilities("serving_default", meta["output_names"][0]))))
    if meta.get("randomized"):
        contenders.append((label or "randomized", with_sets("predict_randomized", probabilities("predict_randomized", "mean"))))
    return contenders, meta


def evaluate(
    source: Any,
    x: Any,
    y: Any,
    *,
    shifts: Iterable[str] | None = tuple(SHIFTS),
    severities: Iterable[int] = (1, 3, 5),
    ood: Any = None,
    calibration_data: tuple | None = None,
    randomized: Any = None,
    alpha: float = 0.1,
    method: str = "lac",
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Evaluation:
    """Scores a classifier's served predictors on clean and shifted data.

    Args:
        source: An exported version directory (its signatures are called
            as they are served: `predict_folds` fold 0 as the single model,
            `serving_default` as the ensemble, `predict_randomized`, and
            `predict_set` for the predictor it was built on), a `CVResult`
            or a `keras.Model` (exported first into a temporary directory,
            so the numbers are again those of the served signatures; a
            `CVResult` is exported with and without temperatures, with
            conformal sets at `alpha`, and with test-time augmentation
            only and MC dropout only as extra contenders
            `randomized_tta` and `randomized_mc`).
        x: Held-out inputs.
        y: Their integer labels.
        shifts: Shifts to apply, as `parse_shifts` reads them: names from
            `SHIFTS`, `"name:s,s"` strings or a `{name: severities}`
            mapping. Defaults to all of them.
        severities: Severities (1..5) of the shifts named without any.
            Defaults to `(1, 3, 5)`.
        ood: Out-of-distribution inputs, or `None`. With them every row gets
            `ood_auroc`: how well predictive entropy tells them from `x`.
        calibration_data: `(x, y)` the cross-validation ran on, for a
            `CVResult` (temperatures of `predict_randomized`). Defaults to
            `None` (then only the deterministic predictors are calibrated).
        randomized: A `tfcv.export.Randomized` for a `CVResult` or
            `keras.Model`. Defaults to `Randomized()`.
        alpha: `float`. Miscoverage of the conformal sets of a `CVResult`.
            Defaults to `0.1`.
        method: `str`. Score of those sets: `"lac"`, `"aps"` or `"raps"`
            (see `tfcv.export.Conformal`). Defaults to `"lac"`.
        value_range: `(low, high)` of the pixels, for the shifts. Defaults
            to `(0, 1)`.

    Returns:
        An `Evaluation`; `evaluation.to_frame()` is the tidy table.

    Example:

    >>> table = tfcv.uncertainty.evaluate("models/digits/1", x_test, y_test).to_frame()
    >>> table.pivot_table(index=["shift", "severity"], columns="contender", values="nll")
    """
    import keras

    from tfcv import export
    from tfcv.result import CVResult

    x, y = np.asarray(x), np.asarray(y)
    if isinstance(source, (str, os.PathLike)):
        from tfcv import bundle

        y = _check_data(x, y, bundle.read_metadata(source), os.fspath(source))
    conditions = [("clean", 0, x)] + [
        (name, s, shift(x, name, s, value_range=value_range))
        for name, levels in parse_shifts(shifts or (), severities).items() for s in levels
    ]
    if isinstance(source, (str, os.PathLike)):
        groups = [(None, *_bundle_contenders(os.fspath(source)))]
        return Evaluation(_measure(groups, conditions, y, ood))
    if not isinstance(source, (CVResult, keras.Model)):
        raise TypeError(
            f"Invalid value for argument `source`. Received: source of type {type(source).__name__}. "
            "Expected a version directory, a CVResult or a keras.Model."
        )
    randomized = randomized or export.Randomized()
    with tempfile.TemporaryDirectory(prefix="tfcv-evaluate-") as tmp:
        groups = []
        if isinstance(source, keras.Model):
            path = export.export_saved_model(source, os.path.join(tmp, "m"), randomized=randomized, warmup=False)
            groups.append((False, *_bundle_contenders(path)))
            return Evaluation(_measure(groups, conditions, y, ood))
        variants = [("randomized", randomized)]
        for label, off in (("randomized_tta", "mc_dropout"), ("randomized_mc", "augmentation")):
            variant = export.Randomized(**{**randomized.to_dict(), off: False})
            if variant != randomized and (variant.augmentation or variant.mc_dropout):
                variants.append((label, variant))
        for calibration in (None, "temperature"):
            path = export.export_saved_model(
                source, os.path.join(tmp, f"{calibration}_ensemble"), randomized=None, warmup=False,
                calibration=calibration, conformal=export.Conformal(alpha, method=method))
            groups.append((bool(calibration), *_bundle_contenders(path)))
            if calibration_data is None:
                # predict_randomized's temperatures and sets need each
                # fold's validation rows, randomized.
                path = export.export_saved_model(source, os.path.join(tmp, f"{calibration}_randomized"),
                                                 randomized=randomized, warmup=False) if not calibration else None
                if path is not None:
                    contenders, meta = _bundle_contenders(path)
                    groups.append((False, [c for c in contenders if c[0] == "randomized"], meta))
                continue
            for label, variant in variants:
                path = export.export_saved_model(
                    source, os.path.join(tmp, f"{calibration}_{label}"), randomized=variant, warmup=False,
                    calibration=calibration, calibration_data=calibration_data,
                    conformal=export.Conformal(alpha, method=method, on="randomized"))
                contenders, meta = _bundle_contenders(path, label)
                groups.append((bool(calibration), [c for c in contenders if c[0] == label], meta))
        return Evaluation(_measure(groups, conditions, y, ood))


def _measure(groups, conditions, y, ood) -> list[dict]:
    rows = []
    for calibrated, contenders, meta in groups:
        if calibrated is None:
            calibrated = bool(meta.get("calibration"))
        for contender, fn in contenders:
            ood_p = fn(np.asarray(ood))[0] if ood is not None else None
            for name, severity, data in conditions:
                p, sets = fn(data)
                rows.append({"contender": contender, "calibrated": calibrated, "shift": name, "severity": severity,
                             **_scores(y, p, sets, ood_p)})
    return rows

