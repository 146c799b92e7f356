"""`CVResult`: what a cross-validation run produced, and its statistics.

The result holds per-fold scores, models, histories and validation
predictions, and derives everything else from them: mean and standard
deviation of each metric, out-of-fold predictions in input order, the fold
ensemble. Where it lives on disk is `tfcv._run_dir`'s business.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from tfcv.metrics import score_predictions
from tfcv.preprocessing import array_batches

__all__ = ["CVResult"]


class _FoldOutcome:
    """One trained fold: its model, scores, validation predictions (and
    targets), history and run information."""

    def __init__(self, model, scores, val_predictions, history=None, info=None, val_targets=None):
        self.model = model
        self.scores = scores
        self.val_predictions = val_predictions
        self.val_targets = val_targets
        self.history = history or {}
        self.info = info or {}




class CVResult:
    """What a cross-validation run produced.

    Attributes:
        scores: `dict` mapping each metric name to its list of per-fold
            values: the model's compiled metrics on the validation fold plus,
            for classifiers, `accuracy` and macro `precision`, `recall` and
            `f1` (scikit-learn), for regressors `mse`, `mae` and `r2`. A
            compiled metric whose result is an array (`keras.metrics.
            F1Score(average=None)`: one value per class) has one score per
            element, named with its index: `f1_score[0]`, `f1_score[1]`, ...
        val_predictions: Each fold's predictions on its validation split, in
            the order of the plan's validation indices.
        oof_predictions: Out-of-fold predictions, one row per input sample in
            input order (rows never validated are NaN; a sample validated
            several times, as with repeated splitters, gets the mean).
        oof_targets: The targets aligned with `oof_predictions` (float32,
            NaN where never validated), for plots and out-of-fold metrics.
        models: The trained `keras.Model` of every fold.
        histories: One `History.history` dict per fold.
        plan: The `FoldPlan` used.
        task: `"classification"` or `"regression"`.
        info: Settings of the run (seed, epochs, per-fold seeds, ...).
        test_scores: Scores of the fold ensemble on held-out test data, set
            by `evaluate` (`None` until then).
        refit_model: The model `fit(..., refit=True)` trained on all the
            data (`info["refit_epochs"]` epochs), or `None`.
    """

    def __init__(self, *, scores, val_predictions, models, histories, plan, task, info=None,
                 fold_info=None, test_scores=None, n_samples=None, val_targets=None):
        self.scores = {k: [float(v) for v in vs] for k, vs in scores.items()}
        self.val_predictions = [np.asarray(p) for p in val_predictions]
        self.oof_predictions = _out_of_fold(plan, self.val_predictions, n_samples)
        self.val_targets = None
        self.oof_targets = None
        if val_targets is not None and all(t is not None for t in val_targets):
            self.val_targets = [np.asarray(t) for t in val_targets]
            self.oof_targets = _out_of_fold(plan, self.val_targets, n_samples)
        self.models = list(models)
        self.histories = list(histories)
        self.plan = plan
        self.task = task
        self.info = dict(info or {})
        self.fold_info = list(fold_info or [{} for _ in self.models])
        self.test_scores = test_scores
        self.refit_model = None

    @classmethod
    def _from_outcomes(cls, outcomes, plan, task, *, n_samples, info):
        names = list(outcomes[0].scores)
        for outcome in outcomes[1:]:
            names += [n for n in outcome.scores if n not in names]
        scores = {n: [o.scores.get(n, float("nan")) for o in outcomes] for n in names}
        return cls(
            scores=scores, val_predictions=[o.val_predictions for o in outcomes],
            models=[o.model for o in outcomes], histories=[o.history for o in outcomes],
            plan=plan, task=task, info=info, fold_info=[o.info for o in outcomes], n_samples=n_samples,
            val_targets=[o.val_targets for o in outcomes],
        )

    @property
    def n_folds(self) -> int:
        return len(self.models)

    def mean(self, name: str) -> float:
        """Mean of metric `name` over the folds."""
        return float(np.mean(self._metric(name)))

    def std(self, name: str) -> float:
        """Standard deviation (ddof=0, as `np.std`) of metric `name` over the folds."""
        return float(np.std(self._metric(name)))

    def _metric(self, name):
        if name not in self.scores:
            raise KeyError(f"Unknown metric {name!r}. Available: {sorted(self.scores)}.")
        return np.asarray(self.scores[name], dtype="float64")

    def _columns(self):
        first = [n for n in ("accuracy", "precision", "recall", "f1", "mse", "mae", "r2") if n in self.scores]
        return first + [n for n in self.scores if n not in first]

    def summary(self) -> str:
        """A table: one row per fold, then mean ± std of every metric."""
        columns = self._columns()
        rows = [[f"{k + 1}"] + [f"{self.scores[c][k]:.4f}" for c in columns] for k in range(self.n_folds)]
        footer = ["mean ± std"] + [f"{self.mean(c):.4f} ± {self.std(c):.4f}" for c in columns]
        header = ["fold"] + columns
        widths = [max(len(r[i]) for r in [header, footer] + rows) for i in range(len(header))]

        def line(cells):
            return "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(line(header))
        out = [line(header), rule] + [line(r) for r in rows] + [rule, line(footer)]
        if self.test_scores:
            out.append("")
            out.append("held-out test (fold ensemble): " + "  ".join(
                f"{k} {v:.4f}" for k, v in self.test_scores.items()))
        return "\n".join(out)

    def to_dict(self) -> dict[str, np.ndarray]:
        """The result as `sklearn.model_selection.cross_validate` returns
        its own: `fit_time`, `score_time`, `test_<name>` and (with
        `return_train_score=True`) `train_<name>`, one value per fold.

        With `fit(..., scoring=...)` the names are those `cross_validate`
        gives that `scoring` (`test_score` for a single scorer); without,
        every score of the result (`test_loss`, `test_accuracy`, ...).

        Example:

        >>> result = cv.fit(x, y, scoring=["balanced_accuracy", "roc_auc_ovr"])
        >>> result.to_dict()["test_roc_auc_ovr"]
        """
        keys = self.info.get("scoring") or {
            name: name for name in self.scores if not name.startswith("train_")
        }
        out = {
            "fit_time": np.asarray([info.get("fit_time", np.nan) for info in self.fold_info], dtype="float64"),
            "score_time": np.asarray([info.get("score_time", np.nan) for info in self.fold_info], dtype="float64"),
        }
        for key, name in keys.items():
            out[f"test_{key}"] = self._metric(name)
        for key, name in keys.items():
            if f"train_{name}" in self.scores:
                out[f"train_{key}"] = self._metric(f"train_{name}")
        return out

    def to_frame(self):
        """Per-fold scores as a pandas DataFrame (index `fold`). Needs pandas."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError("CVResult.to_frame() needs pandas: pip install pandas") from error
        frame = pd.DataFrame({c: self.scores[c] for c in self._columns()})
        frame.index.name = "fold"
        return frame

    def __repr__(self) -> str:
        main = next((c for c in ("accuracy", "r2", "loss") if c in self.scores), None)
        detail = f", {main}={self.mean(main):.4f}±{self.std(main):.4f}" if main else ""
        return f"CVResult(n_folds={self.n_folds}, task={self.task!r}{detail})"

    # ---------------------------------------------------------- ensembles

    def ensemble(self, method: str = "mean") -> keras.Model:
        """One `keras.Model` whose output combines every fold model.

        Args:
            method: `"mean"` averages the fold outputs (probabilities or
                values); `"vote"` (classification only) returns, for every
                class, the fraction of folds that predict it, so its argmax
                is the majority class.

        Returns:
            An uncompiled functional `keras.Model` computing all folds in one
            graph; it saves as `.keras` and loads back.
        """
        from tfcv.layers.ensemble import FoldVote

        methods = ("mean", "vote")
        if method not in methods:
            raise ValueError(f"Invalid value for argument `method`. Received: method={method!r}. Expected one of {methods}.")
        if method == "vote" and self.task != "classification":
            raise ValueError("method='vote' needs a classification result; this result is a regression.")
        first = self.models[0]
        inputs = keras.Input(tuple(first.inputs[0].shape[1:]), dtype=first.inputs[0].dtype, name="inputs")
        outputs = []
        for k, model in enumerate(self.models):
            model.name = f"fold_{k}"
            outputs.append(model(inputs))
        if len(outputs) == 1:
            combined = outputs[0]
        elif method == "mean":
            combined = keras.layers.Average(name="fold_mean")(outputs)
        else:
            combined = FoldVote(name="fold_vote")(outputs)
        return keras.Model(inputs, combined, name=f"fold_ensemble_{method}")

    def predict(self, x: Any, *, batch_size: int = 256) -> np.ndarray:
        """Mean prediction of the fold models on `x`."""
        return np.asarray(self.ensemble("mean").predict(array_batches(np.asarray(x), batch_size), verbose=0))

    def evaluate(self, x: Any, y: Any, *, batch_size: int = 256) -> dict[str, float]:
        """Scores the mean fold ensemble on held-out data, stores the scores
        in `test_scores` and returns them."""
        predictions = self.predict(x, batch_size=batch_size)
        self.test_scores = score_predictions(np.asarray(y), predictions, self.task)
        return dict(self.test_scores)

    def calibration(self, x: Any = None, y: Any = None, *, randomized: Any = None,
                    n_bins: int = 15) -> dict[str, dict]:
        """Temperatures fitted on the out-of-fold predictions, and what they do.

        For every predictor `tfcv.export.export_saved_model` serves, a
        temperature `T` is fitted by minimizing the negative log-likelihood
        of `softmax(log(p) / T)` on out-of-fold predictions made the way that
        predictor predicts: for `serving_default`, each fold model's plain
        predictions on its own validation fold; for `predict_randomized`
        (when `randomized` and the training data are given), each fold model
        randomized as the signature randomizes it, on its own validation
        fold (the temperature applies to the mean of the draws, as the
        signature applies it). No row is predicted by a
        model that trained on it. These are the temperatures
        `export_saved_model(..., calibration="temperature")` applies.

        Args:
            x: The inputs the cross-validation ran on (needed for
                `predict_randomized` only).
            y: The targets the cross-validation ran on (checked with `x`
                against the plan's fingerprint).
            randomized: A `tfcv.export.Randomized`, or `None` to calibrate
                `serving_default` only. Defaults to `None`.
            n_bins: `int`. Equal-width bins of the reported ECE. Defaults
                to `15`.

        Returns:
            `{predictor: {"temperature", "n", "before": {...}, "after":
            {...}}}`, `before`/`after` holding the out-of-fold `accuracy`,
            `nll`, `brier` and `ece`.

        Example:

        >>> result.calibration()["serving_default"]["temperature"]
        0.81
        """
        from tfcv import _calibration

        if self.task != "classification":
            raise ValueError("CVResult.calibration() fits temperatures of classifiers; this result is a regression.")
        report = {}
        for name, (target, draws, _) in _calibration.oof_outputs(self, x, y, randomized=randomized).items():
            temperature = _calibration.fit_temperature(target, draws)
            report[name] = {
                "temperature": temperature,
                "n": int(draws.shape[1]),
                "before": _calibration.classification_report(target, draws.mean(axis=0), n_bins=n_bins),
                "after": _calibration.classification_report(
                    target, _calibration.mean_draws(draws, temperature), n_bins=n_bins),
            }
        return report

    # --------------------------------------------------------- persistence

    def save(self, run_dir: str | os.PathLike) -> str:
        """Writes the result to `run_dir` (each fold atomically).

        Layout: `manifest.json`, `plan.json`, `fold_<k>/` (`model.keras`,
        `history.json`, `scores.json`, `info.json`, `val_predictions.npy`,
        `val_targets.npy`), `result.json` and `oof_predictions.npy`. Folds
        already present (written by `fit` with this `run_dir`) are kept, so
        saving the result of such a run only rewrites `result.json` and
        `oof_predictions.npy`.

        Returns:
            The path of `run_dir`.
        """
        from tfcv import _run_dir

        return _run_dir.save_result(self, run_dir)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> CVResult:
        """Reads a result written by `save` (or by `fit` with `run_dir`).

        Models are loaded with `safe_mode=True`: a run directory holding a
        Lambda layer or an unregistered class is refused with a clear error.
        """
        from tfcv import _run_dir

        return _run_dir.load_result(run_dir)


def _out_of_fold(plan, val_predictions, n_samples):
    positions = _val_positions(plan)
    if positions is None:
        # Folds from a callable: no shared index, so the folds' validation
        # predictions are stacked in fold order.
        return np.concatenate([np.asarray(p, dtype="float32") for p in val_predictions])
    if n_samples is None:
        n_samples = (plan.fingerprint or {}).get("n_samples") or 1 + max(int(p.max()) for p in positions)
    first = np.asarray(val_predictions[0])
    total = np.zeros((n_samples,) + first.shape[1:], dtype="float64")
    counts = np.zeros(n_samples, dtype="int64")
    for val_idx, predictions in zip(positions, val_predictions):
        np.add.at(total, val_idx, np.asarray(predictions, dtype="float64"))
        np.add.at(counts, val_idx, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shape = (n_samples,) + (1,) * (total.ndim - 1)
        oof = total / counts.reshape(shape)
    oof[counts == 0] = np.nan
    return oof.astype("float32")


def _val_positions(plan):
    """Each fold's validation positions in the data, or None when unknown."""
    if plan.uses_indices:
        return [val for _, val in plan.folds]
    if (plan.source or {}).get("kind") == "tfds":
        from tfcv import data as tfcv_data

        return [tfcv_data.fold_indices(plan, k)[1] for k in range(len(plan))]
    return None
