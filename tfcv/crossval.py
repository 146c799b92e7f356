"""`CrossValidator`: k-fold cross-validation of Keras models, orchestrated.

The cross-validator checks its arguments, makes the fold plan, fixes the
run's identity (data, model, settings) in the run directory, and hands the
folds to a strategy: `_sequential` (one after the other), `_stacked` (all in
one graph) or `_parallel` (joblib workers). Every strategy trains each fold
with the same per-fold function (`tfcv._fold`); the outcomes become a
`tfcv.result.CVResult`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tfcv import _checks, _compat, _parallel, _sequential, _stacked, _stacking
from tfcv._fold import FoldSettings, build_fold_model, fold_seeds, refit_result
from tfcv._fold_sources import fold_source
from tfcv._run_dir import _RunStore, model_fingerprint, weights_fingerprint
from tfcv._targets import check_against_model
from tfcv.callbacks import call_hook, snapshot_state, split_callbacks
from tfcv.folds import FoldPlan, _is_splitter
from tfcv.metrics import check_scoring
from tfcv.result import CVResult, _FoldOutcome

__all__ = ["CrossValidator"]

_TASKS = ("auto", "classification", "regression")
_STRATEGIES = ("sequential", "stacked", "auto")


class CrossValidator:
    """K-fold cross-validation of Keras models, one fresh model per fold.

    Args:
        build_fn: Callable with no arguments that returns a fresh, compiled
            `keras.Model` (for example `tfcv.ModelBuilder(spec)` or
            `lambda: tfcv.models.reference_cnn((8, 8, 1), 10)`).
        folds: An int >= 2 (`StratifiedKFold` with shuffling for class
            labels, `KFold` with shuffling otherwise), any scikit-learn
            splitter, or a `FoldPlan`. Defaults to `5`.
        seed: `int`. Seeds the fold plan and, through per-fold seeds derived
            from it, each fold's weights, shuffling and dropout. Defaults
            to `0`.
        task: `"auto"`, `"classification"` or `"regression"`. Which
            scikit-learn metrics are reported. `"auto"` picks
            classification for integer, boolean or one-hot labels.
        deterministic: `bool`. Enables TensorFlow op determinism so that two
            runs with the same seed on CPU give the same scores. This is a
            process-wide TensorFlow setting. Defaults to `True`.
        strategy: How the folds are trained. `"sequential"` trains one fold
            after the other; when every fold's model has the same
            architecture, one model's traced train, test and predict
            functions serve every fold (weights and optimizer state are
            re-initialised in place from the fold's freshly built model).
            `"stacked"` builds the K fold models once and trains them side
            by side in one Keras graph with a single `fit`: every step feeds
            each copy a batch drawn from its own fold's training split only,
            and each copy keeps its own weights, optimizer state, metrics,
            callbacks and early stopping. `"auto"` stacks when the model
            can be stacked, the K copies fit in memory side by side (an
            estimate from the weights and the activations of one batch) and
            `n_jobs`/`distribute` are not used, and otherwise trains
            sequentially; the choice and its reason (printed by
            `FoldProgress`) are in `result.info["strategy"]` and
            `result.info["strategy_reason"]`. Defaults to `"auto"`.

    Example:

    >>> x, y = tfcv.datasets.load_digits()
    >>> cv = tfcv.CrossValidator(lambda: tfcv.models.reference_cnn(), folds=5)
    >>> result = cv.fit(x, y, epochs=10)
    >>> print(result.summary())
    """

    def __init__(
        self,
        build_fn: Callable[[], keras.Model],
        folds: Any = 5,
        *,
        seed: int = 0,
        task: str = "auto",
        deterministic: bool = True,
        strategy: str = "auto",
    ):
        if isinstance(build_fn, keras.Model):
            # A model is callable, so it would pass for a build_fn until the
            # first fold called it without inputs, deep inside Keras.
            raise TypeError(
                f"Invalid value for argument `build_fn`. Received: the keras.Model {build_fn.name!r}. Expected a "
                "callable that returns a fresh compiled keras.Model (the function that builds and compiles it): "
                "every fold trains a model of its own."
            )
        if not callable(build_fn):
            raise TypeError(
                f"Invalid value for argument `build_fn`. Received: build_fn={build_fn!r}. "
                "Expected a callable that returns a fresh compiled keras.Model."
            )
        if isinstance(folds, bool) or (isinstance(folds, int) and folds < 2):
            raise ValueError(
                f"Invalid value for argument `folds`. Received: folds={folds}. "
                "Expected an int >= 2, a scikit-learn splitter or a FoldPlan."
            )
        if not isinstance(folds, (int, FoldPlan)) and not _is_splitter(folds):
            raise TypeError(
                f"Invalid value for argument `folds`. Received: folds={folds!r} of type "
                f"{type(folds).__name__}. Expected an int >= 2, a scikit-learn splitter or a FoldPlan."
            )
        _checks.check_choice("task", task, _TASKS)
        _checks.check_choice("strategy", strategy, _STRATEGIES)
        _checks.check_seed("seed", seed)
        self.build_fn = build_fn
        self.folds = folds
        self.seed = int(seed)
        self.task = task
        self.deterministic = bool(deterministic)
        self.strategy = strategy

    def __repr__(self) -> str:
        return (
            f"CrossValidator(build_fn={getattr(self.build_fn, '__name__', self.build_fn)!r}, "
            f"folds={self.folds!r}, seed={self.seed}, task={self.task!r}, strategy={self.strategy!r})"
        )

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        run_dir: str | os.PathLike | None = None,
        verbose: str | int = "auto",
        groups: Any = None,
        pipeline: Any = None,
        n_jobs: int | None = None,
        distribute: Any = None,
        scoring: Any = None,
        return_train_score: bool = False,
        sample_weight: Any = None,
        class_weight: Any = None,
        refit: bool = False,
    ) -> CVResult:
        """Trains and scores one fresh model per fold.

        Every fold builds a new model with `build_fn`, seeded with a per-fold
        seed derived from `seed`, adapts its data-fitted layers
        (`Normalization`, `Discretization`, `StringLookup`, `IntegerLookup`,
        `TextVectorization`; see `tfcv.preprocessing`) on the fold's
        training split only, trains on the training split while validating
        on the held-out split, then scores and predicts the held-out split.

        Args:
            x: Array of samples; or `None` when `folds` is a FoldPlan made by
                `tfcv.data.tfds_folds` (every fold then streams from disk);
                or a callable `fold -> (train_ds, val_ds)` returning batched
                `tf.data.Dataset`s of `(x, y)`, with `folds` the number of
                folds (out-of-fold predictions are then the folds'
                validation predictions in dataset order, fold after fold).
            y: Array of targets (class labels or regression values); `None`
                with datasets.
            epochs: `int`. Epochs per fold.
            batch_size: `int`. Defaults to `32`.
            callbacks: Keras callbacks. `FoldCallback`s also get the fold
                hooks; the state of plain Keras callbacks (EarlyStopping's
                counters, ...) is reset before every fold.
            run_dir: Directory that makes the run resumable: every finished
                fold is written there atomically as it ends and the running
                fold is backed up each epoch. Calling `fit` again with the
                same arguments skips finished folds and resumes the
                unfinished one. Defaults to `None` (nothing written).
            verbose: `"auto"` or `1` (one progress display across folds,
                redrawn on a terminal), `2` (one line per epoch) or `0`
                (silent). Defaults to `"auto"`.
            groups: Group labels for group splitters such as `GroupKFold`.
            pipeline: A `tfcv.data.Pipeline` (resize, rescale, cache, ...)
                applied to every fold of a TFDS plan.
            n_jobs: `int` or `None`. Folds trained at once through `joblib`,
                as in scikit-learn's `cross_validate(n_jobs=...)`: `None` or
                `1` trains them one after the other in this process, `-1`
                uses every core. Runs in the active joblib backend (local
                processes by default; Ray, Dask or Spark inside
                `joblib.parallel_backend(...)`). Each worker limits
                TensorFlow to its share of the cores and returns weights,
                history, scores and predictions; the fold plan and per-fold
                seeds are those of a sequential run. `build_fn`, the data
                and the callbacks must be picklable (cloudpickle).
            distribute: A `tf.distribute.Strategy` (for example
                `MirroredStrategy()` on one machine's devices, or
                `MultiWorkerMirroredStrategy()` across machines configured
                by `TF_CONFIG`). Each fold's model is built and trained under
                its scope; `batch_size` is the global batch size, split
                across the replicas. Defaults to `None`.
            scoring: What `sklearn.model_selection.cross_validate` takes: a
                scorer name (`"balanced_accuracy"`, `"roc_auc_ovr"`,
                `"neg_log_loss"`, ...), a callable `(estimator, X, y)`
                such as `sklearn.metrics.make_scorer(...)`, a list of names
                or a dict of names or callables. Each fold's validation
                predictions are scored (the scorer's estimator answers from
                them; nothing is predicted again), in addition to the
                default scores. `CVResult.to_dict()` keys them as
                `cross_validate` does. Defaults to `None`.
            return_train_score: `bool`. Also score each fold's training
                split (in-memory arrays), as `train_<name>`. Defaults to
                `False`.
            sample_weight: One weight per sample of `x` (in-memory arrays):
                each fold trains with its training rows' weights, and its
                loss, compiled metrics and scores are weighted by its
                validation rows' weights. Defaults to `None`.
            class_weight: `"balanced"` (weights `n / (n_classes *
                count)` computed on each fold's training split only) or a
                dict `{class: weight}`: multiplies the training weights, as
                scikit-learn's `class_weight` acts on fitting only.
                Defaults to `None`.
            refit: `bool`. After the folds, train one more model on all the
                data (in-memory arrays), for the folds' median best epoch
                when an EarlyStopping callback ran, else for `epochs`:
                `result.refit_model`, saved in `run_dir/refit/`. The fold
                ensemble stays available. Defaults to `False`.

        Returns:
            A `CVResult`.
        """
        epochs = _checks.positive_int("epochs", epochs)
        batch_size = _checks.positive_int("batch_size", batch_size)
        _checks.check_choice("verbose", verbose, ("auto", 0, 1, 2))
        if distribute is not None and not hasattr(distribute, "scope"):
            raise TypeError(
                f"Invalid value for argument `distribute`. Received: distribute={distribute!r}. "
                "Expected a tf.distribute.Strategy such as tf.distribute.MirroredStrategy()."
            )
        if distribute is not None and n_jobs not in (None, 1):
            raise ValueError("Use either `n_jobs` (folds in parallel) or `distribute` (replicas inside a fold), not both.")
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1):
            raise ValueError(f"Invalid value for argument `n_jobs`. Received: n_jobs={n_jobs!r}. Expected None, -1 or an int >= 1.")
        if run_dir is not None and not isinstance(run_dir, (str, os.PathLike)):
            raise _checks.invalid_argument("run_dir", run_dir, "a path (str or os.PathLike) or None", TypeError)
        scorers = check_scoring(scoring)
        source = fold_source(self.folds, x, y, groups, seed=self.seed, batch_size=batch_size, pipeline=pipeline,
                             sample_weight=sample_weight, class_weight=class_weight)
        plan = source.plan
        task = self.task if self.task != "auto" else source.task()
        if self.deterministic:
            _compat.enable_op_determinism()
        settings = FoldSettings(self.build_fn, task, epochs, batch_size, self.deterministic, distribute,
                                scorers=scorers and scorers[0], return_train_score=bool(return_train_score))

        seeds = fold_seeds(self.seed, len(plan))
        check_model = build_fold_model(self.build_fn, seeds[0], distribute)
        strategy, reason = self._choose_strategy(check_model, len(plan), batch_size, n_jobs, distribute)
        config = {
            "seed": self.seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "task": task,
            "data": source.fingerprint(),
            "model": model_fingerprint(check_model),
            # Sequential and stacked training draw batches differently: folds
            # of one do not resume or mix with the other's.
            "strategy": strategy,
        }
        config.update(check_against_model(source, check_model, task))
        # Only settings that were given, so that earlier run directories resume.
        config.update({key: value for key, value in (
            ("scoring", scorers and scorers[1]),
            ("return_train_score", bool(return_train_score) or None),
            ("sample_weight", weights_fingerprint(sample_weight)),
            ("class_weight", class_weight),
        ) if value is not None})
        store = _RunStore(run_dir) if run_dir is not None else None
        with store if store is not None else contextlib.nullcontext():
            finished: dict[int, _FoldOutcome] = {}
            if store is not None:
                store.prepare(config, plan)
                finished = store.load_finished(plan, task=task, seeds=seeds, epochs=epochs)
            result = self._run(
                settings, source, seeds, (strategy, reason), config, store, finished, prebuilt_model=check_model,
                callbacks=callbacks, verbose=verbose, n_jobs=n_jobs,
            )
            if refit:
                refit_result(result, settings, self.seed, source, callbacks, store)
            return result

    def _run(self, settings, source, seeds, strategy, config, store, finished, *, prebuilt_model, callbacks, verbose,
             n_jobs) -> CVResult:
        plan, epochs, task, distribute = source.plan, settings.epochs, settings.task, settings.distribute
        strategy, reason = strategy

        fold_cbs, plain_cbs = split_callbacks(callbacks, verbose)
        snapshots = [snapshot_state(cb) for cb in plain_cbs]
        for cb in fold_cbs:
            cb.num_folds = len(plan)
            cb.histories = {k: outcome.history for k, outcome in finished.items()}
        call_hook(fold_cbs, "on_cv_begin", {
            "num_folds": len(plan), "epochs": epochs, "finished_folds": sorted(finished),
            "strategy": strategy, "strategy_reason": reason,
        })

        todo = [k for k in range(len(plan)) if k not in finished]
        # The model built to fingerprint the run is fold 0's (same seed).
        prebuilt = {0: prebuilt_model} if todo and todo[0] == 0 else {}
        del prebuilt_model
        trained: dict[int, _FoldOutcome] = {}
        if strategy == "stacked" and len(todo) > 1:
            trained = _stacked.fit_folds(
                settings, todo, seeds, source, fold_cbs=fold_cbs, plain_cbs=plain_cbs, snapshots=snapshots,
                store=store, prebuilt=prebuilt,
            )
        elif n_jobs not in (None, 1) and len(todo) > 1:
            trained = _parallel.fit_folds(
                settings, todo, seeds, source, fold_cbs=fold_cbs, plain_cbs=plain_cbs, store=store, n_jobs=int(n_jobs),
            )
        reuse = _sequential.TracedModelReuse() if distribute is None else None
        outcomes: list[_FoldOutcome] = []
        for k in range(len(plan)):
            for cb in fold_cbs:
                cb.fold = k
            if k in finished:
                outcome = finished[k]
                call_hook(fold_cbs, "on_fold_end", k, {**outcome.scores, "loaded": True})
            elif k in trained:
                outcome = trained[k]
            else:
                outcome = _sequential.fit_fold(
                    settings, k, seeds[k], source, fold_cbs=fold_cbs, plain_cbs=plain_cbs, snapshots=snapshots,
                    store=store, model=prebuilt.pop(k, None), reuse=reuse,
                )
            outcomes.append(outcome)

        result = CVResult._from_outcomes(
            outcomes, plan, task, n_samples=source.n_samples, info={**config, "seeds": seeds, "strategy": strategy, "strategy_reason": reason}
        )
        if store is not None:
            store.finish(result)
        call_hook(fold_cbs, "on_cv_end", {name: result.mean(name) for name in result.scores})
        return result

    def _choose_strategy(self, model, n_folds, batch_size, n_jobs, distribute) -> tuple[str, str]:
        """The strategy that trains the folds, and why (for the run's info
        and the progress display)."""
        if self.strategy == "sequential":
            return "sequential", "strategy='sequential'"
        parallel = n_jobs not in (None, 1)
        if self.strategy == "stacked":
            if parallel or distribute is not None:
                raise ValueError(
                    f"strategy='stacked' trains every fold in one graph in this process; it does not combine "
                    f"with {'n_jobs=' + repr(n_jobs) if parallel else 'distribute=' + repr(distribute)}. "
                    "Use strategy='sequential' with n_jobs or distribute."
                )
            problem = _stacking.stacking_problem(model)
            if problem is not None:
                raise ValueError(
                    f"The model cannot be stacked: {problem}. Use strategy='sequential' (or strategy='auto', "
                    "which falls back to it)."
                )
            return "stacked", "strategy='stacked'"
        if parallel:
            return "sequential", f"n_jobs={n_jobs} trains the folds in joblib workers"
        if distribute is not None:
            return "sequential", "distribute= spreads each fold over replicas"
        problem = _stacking.stacking_problem(model)
        if problem is not None:
            # No warning: 'auto' is the default, and falling back is what it
            # is for. The reason is in the run's info and progress output.
            return "sequential", f"the model cannot be stacked: {problem}"
        needed, available = _stacking.memory_estimate(model, n_folds, batch_size), _stacking.available_memory()
        fits = available is None or needed <= available // 2
        where = f"about {_stacking.format_bytes(needed)} for {n_folds} copies" + (
            f", {_stacking.format_bytes(available)} available" if available is not None else ""
        )
        if not fits:
            return "sequential", f"the {n_folds} fold models side by side would not fit in memory ({where})"
        return "stacked", f"the {n_folds} fold models fit in memory side by side ({where})"
