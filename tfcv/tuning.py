"""Tuning inside the folds: KerasTuner trials that are cross-validations, and
nested cross-validation.

`CVTuner` is a KerasTuner `Tuner` whose every trial is a tfcv
cross-validation of the trial's model (tfcv's fold plan, per-fold
adaptation, callbacks and strategies): the objective is the folds' mean of a
score, and its standard deviation is recorded beside it. Any KerasTuner
oracle chooses the trials (`RandomSearchOracle`, `BayesianOptimizationOracle`,
...). `nested_cv` tunes inside each outer training split and scores the
chosen model on the outer validation split only, so the outer scores are an
estimate the tuning has not seen.

Needs KerasTuner: `pip install 'tfcv[tune]'`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

try:
    import keras_tuner
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("tfcv.tuning needs KerasTuner: pip install 'tfcv[tune]'") from error

from tfcv.crossval import CrossValidator
from tfcv.folds import FoldPlan, check_folds, data_fingerprint

__all__ = ["CVTuner", "NestedCVResult", "nested_cv", "objective"]

# Scores for which lower is better; every other score is maximized.
_LOWER_IS_BETTER = ("loss", "mse", "mae", "error", "crossentropy")


def objective(metric: str = "accuracy") -> keras_tuner.Objective:
    """The KerasTuner objective of a `CVTuner` that maximizes (or, for
    losses and errors, minimizes) the folds' mean of `metric`."""
    lower = any(word in metric for word in _LOWER_IS_BETTER) and not metric.startswith("neg_")
    return keras_tuner.Objective(metric, direction="min" if lower else "max")


class _TrialModel:
    """The `build_fn` of one trial: the hypermodel built with the trial's
    hyperparameters (picklable, for `n_jobs`)."""

    def __init__(self, hypermodel, hyperparameters):
        self.hypermodel = hypermodel
        self.hyperparameters = hyperparameters

    def __call__(self):
        return self.hypermodel.build(self.hyperparameters)


class CVTuner(keras_tuner.Tuner):
    """A KerasTuner tuner whose every trial is a tfcv cross-validation.

    `search(x, y, **fit_kwargs)` runs the oracle's trials; each trial
    cross-validates the hypermodel built with the trial's hyperparameters
    with `tfcv.CrossValidator(folds=folds, seed=seed, strategy=strategy)`
    and `fit(x, y, **fit_kwargs)` (`epochs`, `batch_size`, `callbacks`,
    `scoring`, ...), every trial on the same folds. The trial's objective is
    the folds' mean of `metric`; `<metric>_std` is recorded beside it, and
    every trial's per-fold scores are in `cv_scores`.

    Args:
        oracle: A KerasTuner oracle whose objective is `metric` (for
            example `keras_tuner.oracles.RandomSearchOracle(
            objective=tfcv.tuning.objective("accuracy"), max_trials=10)`).
        hypermodel: A `keras_tuner.HyperModel` or a function `hp -> compiled
            keras.Model`.
        folds: Folds of every trial, as `CrossValidator` takes them.
            Defaults to `3`.
        seed: `int`. Seed of the fold plan and of every fold. Defaults to
            `0`.
        strategy: `CrossValidator`'s strategy. Defaults to `"auto"`.
        **kwargs: KerasTuner's `Tuner` arguments (`directory`,
            `project_name`, `overwrite`, ...).

    Example:

    >>> tuner = tfcv.tuning.CVTuner(
    ...     keras_tuner.oracles.RandomSearchOracle(objective=tfcv.tuning.objective("accuracy"), max_trials=5),
    ...     build_model, folds=3, directory="tuning", project_name="digits")
    >>> tuner.search(x, y, epochs=5)
    >>> tuner.get_best_hyperparameters()[0].values
    """

    def __init__(self, oracle, hypermodel=None, *, folds: Any = 3, seed: int = 0, strategy: str = "auto", **kwargs):
        super().__init__(oracle, hypermodel, **kwargs)
        self.folds = folds
        self.seed = seed
        self.strategy = strategy
        self.cv_scores: dict[str, dict[str, list[float]]] = {}

    @property
    def metric(self) -> str:
        return self.oracle.objective.name

    def run_trial(self, trial, x=None, y=None, **fit_kwargs):
        fit_kwargs.setdefault("verbose", 0)
        build_fn = _TrialModel(self.hypermodel, trial.hyperparameters)
        cv = CrossValidator(build_fn, folds=self.folds, seed=self.seed, strategy=self.strategy)
        result = cv.fit(x, y, **fit_kwargs)
        if self.metric not in result.scores:
            raise ValueError(
                f"The tuner's objective {self.metric!r} is not a score of the cross-validation. "
                f"Available: {sorted(result.scores)}."
            )
        self.cv_scores[trial.trial_id] = dict(result.scores)
        return {self.metric: result.mean(self.metric), f"{self.metric}_std": result.std(self.metric)}

    def cv_summary(self, trial) -> dict[str, float]:
        """`{"mean": ..., "std": ..., "scores": [...]}` of a trial's
        objective (a trial or its id)."""
        trial_id = getattr(trial, "trial_id", trial)
        scores = np.asarray(self.cv_scores[trial_id][self.metric], dtype="float64")
        return {"mean": float(scores.mean()), "std": float(scores.std()), "scores": scores.tolist()}

    # A trial keeps no model: it is a cross-validation of K of them.
    def save_model(self, trial_id, model, step=0):
        return None

    def load_model(self, trial):
        raise NotImplementedError(
            "A CVTuner trial is a cross-validation and keeps no single model: build one with "
            "tuner.hypermodel.build(tuner.get_best_hyperparameters()[0]), or run "
            "tfcv.CrossValidator(..., ).fit(..., refit=True) with those hyperparameters."
        )


class NestedCVResult:
    """What `nested_cv` produced.

    Attributes:
        metric: `str`. The tuned and reported score.
        outer_scores: The chosen model's `metric` on each outer validation
            split (never seen by the tuning).
        best_hyperparameters: The hyperparameters chosen inside each outer
            training split (`dict`s).
        inner_means, inner_stds: The chosen trial's inner cross-validation
            mean and std of `metric`, per outer fold (optimistic: the tuning
            picked them).
        outer_results: Per outer fold, the one-fold `CVResult` of the chosen
            model (trained on the outer training split, scored on the outer
            validation split).
        plan: The outer `FoldPlan`.
    """

    def __init__(self, metric, outer_results, best_hyperparameters, inner_means, inner_stds, plan):
        self.metric = metric
        self.outer_results = list(outer_results)
        self.outer_scores = [float(r.scores[metric][0]) for r in self.outer_results]
        self.best_hyperparameters = list(best_hyperparameters)
        self.inner_means = list(inner_means)
        self.inner_stds = list(inner_stds)
        self.plan = plan

    def mean(self) -> float:
        return float(np.mean(self.outer_scores))

    def std(self) -> float:
        return float(np.std(self.outer_scores))

    def summary(self) -> str:
        lines = [f"outer fold  {self.metric} (outer)  {self.metric} (inner, tuned)  hyperparameters"]
        for k, (score, mean, hp) in enumerate(zip(self.outer_scores, self.inner_means, self.best_hyperparameters)):
            lines.append(f"{k + 1:>10}  {score:15.4f}  {mean:23.4f}  {hp}")
        lines.append(f"nested CV estimate: {self.mean():.4f} ± {self.std():.4f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"NestedCVResult(metric={self.metric!r}, outer={self.mean():.4f}±{self.std():.4f})"


def nested_cv(
    hypermodel: Any,
    x: Any,
    y: Any,
    *,
    oracle: Any = "random",
    max_trials: int = 5,
    metric: str = "accuracy",
    outer_folds: Any = 3,
    inner_folds: Any = 3,
    seed: int = 0,
    strategy: str = "auto",
    directory: str | os.PathLike = "nested_cv",
    project_name: str = "tfcv",
    **fit_kwargs: Any,
) -> NestedCVResult:
    """Nested cross-validation: tuning on the inner folds of every outer
    training split, scoring the chosen model on the outer validation split.

    For each outer fold, a `CVTuner` searches `max_trials` hyperparameter
    sets, each cross-validated on `inner_folds` folds of the outer training
    split only; the best set is trained on the whole outer training split
    and scored on the outer validation split. The mean of those outer scores
    estimates how well "tune, then train" generalizes; no outer validation
    row is seen by the tuning.

    Args:
        hypermodel: A `keras_tuner.HyperModel` or a function `hp -> compiled
            keras.Model`.
        x, y: In-memory arrays.
        oracle: `"random"`, `"bayesian"`, or a callable `() -> oracle`
            making a fresh KerasTuner oracle for every outer fold. Defaults
            to `"random"`.
        max_trials: `int`. Trials per outer fold (with a named oracle).
            Defaults to `5`.
        metric: `str`. The score tuned and reported. Defaults to
            `"accuracy"`.
        outer_folds, inner_folds: Folds as `CrossValidator` takes them.
            Default to `3`.
        seed: `int`. Seed of the folds, trials and models. Defaults to `0`.
        strategy: `CrossValidator`'s strategy. Defaults to `"auto"`.
        directory, project_name: Where KerasTuner keeps its trials
            (`<directory>/<project_name>_outer_<k>`).
        **fit_kwargs: Passed to every `fit` (`epochs`, `batch_size`, ...).

    Returns:
        A `NestedCVResult`.

    Example:

    >>> nested = tfcv.nested_cv(build_model, x, y, max_trials=10, epochs=5)
    >>> print(nested.summary())
    """
    x, y = np.asarray(x), np.asarray(y)
    plan = check_folds(outer_folds, x, y, seed=seed)
    outer_results, chosen, inner_means, inner_stds = [], [], [], []
    for k, (train, val) in enumerate(plan.folds):
        tuner = CVTuner(
            _make_oracle(oracle, metric, max_trials, seed + k), hypermodel, folds=inner_folds, seed=seed,
            strategy=strategy, directory=os.fspath(directory), project_name=f"{project_name}_outer_{k}",
            overwrite=True,
        )
        tuner.search(x[train], y[train], **fit_kwargs)
        best = tuner.oracle.get_best_trials(1)[0]
        summary = tuner.cv_summary(best)
        # One fold: train on the outer training split, score its validation split.
        outer = FoldPlan([(train, val)], fingerprint=data_fingerprint(x, y), splitter=f"outer fold {k} of {plan.splitter}")
        cv = CrossValidator(_TrialModel(tuner.hypermodel, best.hyperparameters), folds=outer, seed=seed + k,
                            strategy="sequential")
        outer_results.append(cv.fit(x, y, **{"verbose": 0, **fit_kwargs}))
        chosen.append(dict(best.hyperparameters.values))
        inner_means.append(summary["mean"])
        inner_stds.append(summary["std"])
    return NestedCVResult(metric, outer_results, chosen, inner_means, inner_stds, plan)


def _make_oracle(oracle, metric, max_trials, seed):
    if callable(oracle):
        return oracle()
    kinds = {
        "random": keras_tuner.oracles.RandomSearchOracle,
        "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
    }
    if oracle not in kinds:
        raise ValueError(f"Invalid value for argument `oracle`. Received: oracle={oracle!r}. "
                         f"Expected one of {sorted(kinds)} or a callable returning a KerasTuner oracle.")
    return kinds[oracle](objective=objective(metric), max_trials=int(max_trials), seed=int(seed))
