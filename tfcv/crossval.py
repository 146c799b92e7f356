"""CrossValidator and CVResult: the cross-validation training loop."""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tfcv import _atomic
from tfcv._stacked import state_variables
from tfcv.callbacks import FoldCallback, FoldProgress
from tfcv.folds import (
    FoldPlan,
    _is_splitter,
    check_folds,
    class_labels,
    data_fingerprint,
    is_classification_target,
)

__all__ = ["CrossValidator", "CVResult"]

_TASKS = ("auto", "classification", "regression")
_STRATEGIES = ("sequential", "stacked", "auto")
_MANIFEST = "manifest.json"
_PLAN = "plan.json"
_RESULT = "result.json"
_OOF = "oof_predictions.npy"


def fold_seeds(seed: int, n_folds: int) -> list[int]:
    """Independent per-fold seeds derived from one seed (stable across runs)."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(n_folds)]


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
            can be stacked and `n_jobs`/`distribute` are not used, and
            otherwise trains sequentially (with a warning when the model is
            the reason). Defaults to `"sequential"`.

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
        strategy: str = "sequential",
    ):
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
        if task not in _TASKS:
            raise ValueError(f"Invalid value for argument `task`. Received: task={task!r}. Expected one of {_TASKS}.")
        if strategy not in _STRATEGIES:
            raise ValueError(
                f"Invalid value for argument `strategy`. Received: strategy={strategy!r}. Expected one of {_STRATEGIES}."
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"Invalid value for argument `seed`. Received: seed={seed!r}. Expected an int.")
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
    ) -> CVResult:
        """Trains and scores one fresh model per fold.

        Every fold builds a new model with `build_fn`, seeded with a per-fold
        seed derived from `seed`, adapts its data-dependent preprocessing
        layers (`keras.layers.Normalization`, `Discretization`) on the fold's
        training split only, trains on the training split while validating on
        the held-out split, then scores and predicts the held-out split.

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

        Returns:
            A `CVResult`.
        """
        epochs = _positive_int("epochs", epochs)
        batch_size = _positive_int("batch_size", batch_size)
        if verbose not in ("auto", 0, 1, 2):
            raise ValueError(f"Invalid value for argument `verbose`. Received: verbose={verbose!r}. Expected 'auto', 0, 1 or 2.")
        if distribute is not None and not hasattr(distribute, "scope"):
            raise TypeError(
                f"Invalid value for argument `distribute`. Received: distribute={distribute!r}. "
                "Expected a tf.distribute.Strategy such as tf.distribute.MirroredStrategy()."
            )
        if distribute is not None and n_jobs not in (None, 1):
            raise ValueError("Use either `n_jobs` (folds in parallel) or `distribute` (replicas inside a fold), not both.")
        self._strategy = distribute
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1):
            raise ValueError(f"Invalid value for argument `n_jobs`. Received: n_jobs={n_jobs!r}. Expected None, -1 or an int >= 1.")
        source = _fold_source(self.folds, x, y, groups, seed=self.seed, batch_size=batch_size, pipeline=pipeline)
        plan = source.plan
        task = self.task if self.task != "auto" else source.task()
        if self.deterministic:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()

        seeds = fold_seeds(self.seed, len(plan))
        check_model = self._build(seeds[0])
        strategy = self._resolve_strategy(check_model, n_jobs, distribute)
        config = {
            "seed": self.seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "task": task,
            "data": source.fingerprint(),
            "model": model_fingerprint(check_model),
        }
        store = _RunStore(run_dir) if run_dir is not None else None
        finished: dict[int, _FoldOutcome] = {}
        if store is not None:
            store.prepare(config, plan)
            finished = store.load_finished(len(plan))

        fold_cbs, plain_cbs = _split_callbacks(callbacks, verbose)
        snapshots = [_snapshot(cb) for cb in plain_cbs]
        for cb in fold_cbs:
            cb.num_folds = len(plan)
            cb.histories = {k: outcome.history for k, outcome in finished.items()}
        _call(fold_cbs, "on_cv_begin", {"num_folds": len(plan), "epochs": epochs, "finished_folds": sorted(finished)})

        todo = [k for k in range(len(plan)) if k not in finished]
        # The model built to fingerprint the run is fold 0's (same seed).
        prebuilt = {0: check_model} if todo and todo[0] == 0 else {}
        del check_model
        if strategy == "stacked" and len(todo) > 1:
            trained = self._fit_stacked(
                todo, seeds, source, task, epochs=epochs, batch_size=batch_size, fold_cbs=fold_cbs,
                plain_cbs=plain_cbs, snapshots=snapshots, store=store, prebuilt=prebuilt,
            )
        elif n_jobs not in (None, 1) and len(todo) > 1:
            trained = self._fit_folds_in_parallel(
                todo, seeds, source, task, epochs=epochs, batch_size=batch_size,
                fold_cbs=fold_cbs, plain_cbs=plain_cbs, store=store, n_jobs=int(n_jobs),
            )
        else:
            trained = {}
        reuse = _TracedModelReuse() if self._strategy is None else None
        outcomes: list[_FoldOutcome] = []
        for k in range(len(plan)):
            for cb in fold_cbs:
                cb.fold = k
            if k in finished:
                outcome = finished[k]
                _call(fold_cbs, "on_fold_end", k, {**outcome.scores, "loaded": True})
            elif k in trained:
                outcome = trained[k]
            else:
                for cb, snapshot in zip(plain_cbs, snapshots):
                    _restore(cb, snapshot)
                outcome = self._fit_fold(
                    k, seeds[k], source, task,
                    epochs=epochs, batch_size=batch_size, callbacks=fold_cbs + plain_cbs,
                    backup_dir=None if store is None else store.backup_dir(k),
                    model=prebuilt.pop(k, None), reuse=reuse,
                )
                self._fold_done(k, outcome, store, fold_cbs)
            outcomes.append(outcome)

        result = CVResult._from_outcomes(
            outcomes, plan, task, n_samples=source.n_samples, info={**config, "seeds": seeds, "strategy": strategy}
        )
        if store is not None:
            store.finish(result)
        _call(fold_cbs, "on_cv_end", {name: result.mean(name) for name in result.scores})
        return result

    def _fold_done(self, k, outcome, store, fold_cbs):
        if store is not None:
            store.save_fold(k, outcome)
        for cb in fold_cbs:
            cb.fold = k
            cb.histories[k] = outcome.history
        _call(fold_cbs, "on_fold_end", k, {**outcome.scores, "loaded": False})

    def _fit_folds_in_parallel(self, todo, seeds, source, task, *, epochs, batch_size, fold_cbs, plain_cbs, store, n_jobs):
        import cloudpickle
        import joblib

        try:
            cloudpickle.dumps(self.build_fn)
        except Exception as error:
            raise TypeError(
                f"n_jobs={n_jobs} runs folds in other processes, but `build_fn` ({self.build_fn!r}) cannot be "
                f"pickled: {error}. Use a module-level function or a tfcv.ModelBuilder(spec) as build_fn."
            ) from error
        # Progress displays stay in this process: a worker's output would interleave.
        worker_cbs = [cb for cb in fold_cbs if not isinstance(cb, FoldProgress)] + plain_cbs
        n_workers = min(len(todo), joblib.effective_n_jobs(n_jobs))
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        settings = {"build_fn": self.build_fn, "seed": self.seed, "task": self.task, "deterministic": self.deterministic}
        tasks = (
            joblib.delayed(_fit_fold_in_worker)(
                settings, k, seeds[k], source, task, epochs, batch_size, worker_cbs,
                None if store is None else store.backup_dir(k), threads,
            )
            for k in todo
        )
        # Save each fold as soon as it ends where the backend can stream results
        # (local processes); Ray's backend returns them all at the end.
        backend, _ = joblib.parallel.get_active_backend()
        return_as = "generator_unordered" if getattr(backend, "supports_return_generator", False) else "list"
        trained = {}
        for k, payload in joblib.Parallel(n_jobs=n_jobs, return_as=return_as)(tasks):
            model = self._build(seeds[k])
            model.set_weights(payload.pop("weights"))
            # The optimizer's state too, so that the saved fold model is whole.
            _build_optimizer(model)
            for variable, value in zip(model.optimizer.variables, payload.pop("optimizer")):
                variable.assign(value)
            outcome = _FoldOutcome(model, **payload)
            self._fold_done(k, outcome, store, fold_cbs)
            trained[k] = outcome
        return trained

    _strategy = None

    def _resolve_strategy(self, model, n_jobs, distribute) -> str:
        from tfcv._stacked import stacking_problem

        if self.strategy == "sequential":
            return "sequential"
        parallel = n_jobs not in (None, 1)
        if self.strategy == "stacked":
            if parallel or distribute is not None:
                raise ValueError(
                    f"strategy='stacked' trains every fold in one graph in this process; it does not combine "
                    f"with {'n_jobs=' + repr(n_jobs) if parallel else 'distribute=' + repr(distribute)}. "
                    "Use strategy='sequential' with n_jobs or distribute."
                )
            problem = stacking_problem(model)
            if problem is not None:
                raise ValueError(
                    f"The model cannot be stacked: {problem}. Use strategy='sequential' (or strategy='auto', "
                    "which falls back to it)."
                )
            return "stacked"
        if parallel or distribute is not None:
            return "sequential"
        problem = stacking_problem(model)
        if problem is not None:
            warnings.warn(
                f"strategy='auto': training the folds one after the other because the model cannot be stacked: {problem}.",
                UserWarning,
                stacklevel=3,
            )
            return "sequential"
        return "stacked"

    def _fit_stacked(self, todo, seeds, source, task, *, epochs, batch_size, fold_cbs, plain_cbs, snapshots, store, prebuilt):
        """Trains the folds in `todo` side by side in one graph (see
        `tfcv._stacked`); returns their outcomes."""
        from tfcv import _stacked

        arrays = isinstance(source, _ArraySource)
        models, fold_data, mixers = [], [], []
        for k in todo:
            model = prebuilt.pop(k, None) or self._build(seeds[k])
            # In-memory arrays are fed by _stacked.array_datasets below.
            data = source.fold(k, seeds[k], pipelines=False) if arrays else source.fold(k, seeds[k])
            # Each copy's normalization statistics come from its own training split.
            adapt_preprocessing(model, data.adapt_input, batch_size=max(batch_size, 256))
            _build_optimizer(model)
            models.append(model)
            fold_data.append(data)
            mixers.append(self._batch_mixer(seeds[k]))
        _check_independent(models, todo)

        backup_dir = None if store is None else store.backup_dir("stacked-" + "-".join(map(str, todo)))
        initial_epoch, previous = 0, [{} for _ in todo]
        epoch_log = None
        if backup_dir is not None:
            epoch_log = _EpochLog(os.path.join(backup_dir, "epochs.json"))
            initial_epoch = _backed_up_epoch(backup_dir)
            logged = epoch_log.read(initial_epoch)
            epoch_log.logs = list(logged)
            previous = [[epoch[str(k)] for epoch in logged if str(k) in epoch] for k in todo]
        # A fold whose log ends before the backed-up epoch had stopped early.
        stopped = [i for i, logs in enumerate(previous) if initial_epoch and len(logs) < initial_epoch]

        val_batch_size = max(batch_size, 256)
        if arrays:
            train, steps, val = _stacked.array_datasets(
                source, todo, seeds, val_batch_size=val_batch_size, mixers=mixers, initial_epoch=initial_epoch
            )
        else:
            train, steps, val = _stacked.stream_datasets(
                fold_data, mixers=mixers, val_batch_size=val_batch_size, initial_epoch=initial_epoch
            )

        # Create every copy's metric variables now, so the copies share one
        # traced step (see _StackedFolds._shared_step).
        xs, ys = val.element_spec
        for i, model in enumerate(models):
            _build_metrics(model, (xs[i], ys[i]))
        stacked = _stacked._StackedFolds(models)
        own = [[_fold_copy(cb, snapshot) for cb, snapshot in zip(plain_cbs, snapshots)] for _ in todo]
        everything = fold_cbs + [cb for cbs in own for cb in cbs]
        stacked.compile(optimizer=None, steps_per_execution=1 if _any_needs_batch_hooks(everything) else steps)
        dispatcher = _stacked._FoldDispatcher(stacked, todo, fold_cbs, own, stopped=stopped, epoch_log=epoch_log)
        keras_callbacks = [dispatcher]
        if backup_dir is not None:
            keras_callbacks.append(keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True))

        for i, (k, data) in enumerate(zip(todo, fold_data)):
            for cb in fold_cbs:
                cb.fold = k
                cb.set_model(models[i])
                if previous[i]:
                    cb.histories[k] = _merge_history(previous[i], {})
            _call(fold_cbs, "on_fold_begin", k, {
                "seed": seeds[k], "n_train": data.n_train, "n_val": data.n_val, "initial_epoch": initial_epoch,
            })
        start = time.monotonic()
        stacked.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=steps, callbacks=keras_callbacks, shuffle=False,
                    verbose=0, initial_epoch=initial_epoch)
        seconds = time.monotonic() - start

        # Score every fold, including those that stopped early.
        stacked.active.assign([True] * len(todo))
        compiled = stacked.evaluate(val, verbose=0, return_dict=True)
        predictions = stacked.predict(val, verbose=0)
        outcomes = {}
        for i, (k, data) in enumerate(zip(todo, fold_data)):
            scores = {name: float(value) for name, value in _stacked.fold_logs(compiled, i).items()}
            val_predictions = np.asarray(predictions[i])
            scores.update(score_predictions(data.val_labels, val_predictions, task))
            history = _merge_history(previous[i], dispatcher.histories[i])
            outcome = _FoldOutcome(models[i], scores, val_predictions, history=history,
                                   val_targets=np.asarray(data.val_labels))
            outcome.info = {
                "fold": k, "seed": seeds[k], "seconds": seconds, "epochs": len(next(iter(history.values()), [])),
                "initial_epoch": initial_epoch, "strategy": "stacked", "stacked_folds": list(todo),
            }
            self._fold_done(k, outcome, store, fold_cbs)
            outcomes[k] = outcome
        if backup_dir is not None:
            import shutil

            shutil.rmtree(backup_dir, ignore_errors=True)
        return outcomes

    def _batch_mixer(self, seed):
        """MixUp/CutMix of a `ModelBuilder` whose spec asks for it: applied to
        training batches only, labels mixed with the images' weights."""
        spec = getattr(self.build_fn, "spec", None)
        if spec is not None and hasattr(spec, "batch_mixer"):
            return spec.batch_mixer(seed)
        return getattr(self.build_fn, "batch_mixer", None)

    def _build(self, seed: int) -> keras.Model:
        keras.utils.set_random_seed(seed)
        if self._strategy is not None:
            with self._strategy.scope():
                model = self.build_fn()
        else:
            model = self.build_fn()
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`build_fn` must return a keras.Model. Received: {model!r} of type {type(model).__name__}."
            )
        if not getattr(model, "compiled", False) or model.optimizer is None:
            raise ValueError(
                f"`build_fn` returned an uncompiled model ({model.name!r}). Expected a compiled "
                "keras.Model: call `model.compile(optimizer=..., loss=..., metrics=[...])` inside build_fn."
            )
        return model

    def _fit_fold(self, k, seed, source, task, *, epochs, batch_size, callbacks, backup_dir, model=None, reuse=None):
        model = model if model is not None else self._build(seed)
        data = source.fold(k, seed)
        adapt_preprocessing(model, data.adapt_input, batch_size=max(batch_size, 256))
        if self._strategy is not None:
            with self._strategy.scope():
                _build_optimizer(model)
        else:
            _build_optimizer(model)
        if reuse is not None:
            model = reuse.adopt(model)
        mixer = self._batch_mixer(seed)
        if mixer is not None:
            data = data.mixed(mixer)
        if self._strategy is None:
            _build_metrics(model, data.train.element_spec)
            # Under MirroredStrategy, Keras' multi-step loop fails to run
            # (TF 2.21: "You must feed a value for placeholder tensor").
            _run_epochs_per_call(model, _steps_per_epoch(data), callbacks)

        keras_callbacks = list(callbacks)
        initial_epoch = 0
        previous_logs: list[dict] = []
        if backup_dir is not None:
            epoch_log = _EpochLog(os.path.join(backup_dir, "epochs.json"))
            initial_epoch = _backed_up_epoch(backup_dir)
            previous_logs = epoch_log.read(initial_epoch)
            epoch_log.logs = list(previous_logs)
            # The epoch log goes before BackupAndRestore: a crash between the
            # two leaves one logged epoch too many, which the resume trims.
            keras_callbacks = [epoch_log, keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True)] + keras_callbacks

        fold_cbs = [cb for cb in callbacks if isinstance(cb, FoldCallback)]
        for cb in fold_cbs:
            cb.set_model(model)
            if previous_logs:
                cb.histories[k] = _merge_history(previous_logs, {})
        _call(fold_cbs, "on_fold_begin", k, {
            "seed": seed, "n_train": data.n_train, "n_val": data.n_val, "initial_epoch": initial_epoch,
        })
        start = time.monotonic()
        train = data.train
        if data.steps is not None and initial_epoch:
            # The resumed epochs continue the stream where the backup left it.
            train = train.skip(initial_epoch * data.steps)
        history = model.fit(
            train,
            validation_data=data.validation,
            epochs=epochs,
            steps_per_epoch=data.steps,
            callbacks=keras_callbacks,
            verbose=0,
            shuffle=False,  # the pipeline shuffles
        )
        seconds = time.monotonic() - start
        merged = _merge_history(previous_logs, history.history)
        outcome = _score_fold(model, data, task)
        outcome.history = merged
        outcome.info = {"fold": k, "seed": seed, "seconds": seconds, "epochs": len(next(iter(merged.values()), [])),
                        "initial_epoch": initial_epoch}
        if reuse is not None:
            reuse.trained(outcome)
        return outcome


def _fit_fold_in_worker(settings, k, seed, source, task, epochs, batch_size, callbacks, backup_dir, threads):
    """One fold in a joblib worker; returns plain data, not a pickled model."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # this worker already ran TensorFlow; its thread pools are fixed
    cv = CrossValidator(
        settings["build_fn"], 2, seed=settings["seed"], task=settings["task"], deterministic=settings["deterministic"]
    )
    if settings["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    for cb in callbacks:
        if isinstance(cb, FoldCallback):
            cb.fold = k
    outcome = cv._fit_fold(
        k, seed, source, task, epochs=epochs, batch_size=batch_size, callbacks=callbacks, backup_dir=backup_dir
    )
    return k, {
        "weights": outcome.model.get_weights(),
        "optimizer": [v.numpy() for v in outcome.model.optimizer.variables],
        "scores": outcome.scores,
        "val_predictions": outcome.val_predictions,
        "history": outcome.history,
        "info": outcome.info,
        "val_targets": outcome.val_targets,
    }


# ------------------------------------------------------- fast sequential


def _build_optimizer(model: keras.Model) -> None:
    """Creates the optimizer's variables now, so that a backup restores them
    and a reused model's state can be swapped in."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _steps_per_epoch(data: _FoldData) -> int | None:
    if data.steps is not None:
        return data.steps
    count = int(data.train.cardinality())
    return count if count > 0 else None


def _any_needs_batch_hooks(callbacks) -> bool:
    from tfcv.callbacks import _needs_batch_hooks

    return any(_needs_batch_hooks(cb) for cb in callbacks)


def _build_metrics(model: keras.Model, batch_spec) -> None:
    """Creates the compiled metrics' variables from the shapes of a training
    batch. Without a distribution strategy Keras creates them while it traces
    the first train step, which makes TensorFlow trace that step a second
    time (a `tf.function` that creates variables is traced again)."""
    if not hasattr(model, "_symbolic_build"):
        return
    try:
        model._symbolic_build(data_batch=batch_spec)
    except Exception:  # noqa: BLE001
        # A model Keras cannot build symbolically gets its metrics at the
        # first trace, as Keras does it, and the fit reports any real error.
        pass


def _run_epochs_per_call(model: keras.Model, steps: int | None, callbacks) -> None:
    """Runs a whole epoch per traced call (`steps_per_execution`) unless a
    callback needs to see every batch or the model was compiled with its own
    setting. Training is the same step for step; only the batch hooks fire
    once per epoch."""
    if steps is None or model.train_function is not None or getattr(model, "steps_per_execution", 1) != 1:
        return
    if not _any_needs_batch_hooks(callbacks):
        model.steps_per_execution = steps


class _TracedModelReuse:
    """Trains every fold of the same architecture on one model, so Keras traces
    its train, test and predict functions once.

    Each fold still builds its model with `build_fn` under the fold's seed;
    that model's initial state (weights, random-seed state, optimizer
    variables) is swapped into the traced model, which trains the fold. The
    next fold's swap moves the trained state back out into a model of its
    own, so every fold ends with an independent `keras.Model`.
    """

    def __init__(self):
        self.runner = None
        self.signature = None
        self.holder = None

    def adopt(self, fresh: keras.Model) -> keras.Model:
        signature = _reuse_signature(fresh)
        if signature is None or self.runner is None or signature != self.signature:
            self.runner, self.signature, self.holder = fresh, signature, None
            return fresh
        _swap_state(fresh, self.runner)
        # BackupAndRestore leaves the epoch it restored on the model, and
        # Model.fit starts every later fit there.
        if hasattr(self.runner, "_initial_epoch"):
            self.runner._initial_epoch = None
        if self.holder is not None:
            self.holder.model = fresh
            self.holder = None
        return self.runner

    def trained(self, outcome: _FoldOutcome) -> None:
        if outcome.model is self.runner:
            self.holder = outcome


def _reuse_signature(model):
    # Adapted preprocessing layers keep their statistics as traced constants,
    # not variables: those models are rebuilt and retraced per fold.
    if any(_contains_adaptable(layer) or isinstance(layer, (keras.layers.Normalization, keras.layers.Discretization))
           for layer in model.layers):
        return None
    if model.optimizer is None or not model.optimizer.built:
        return None
    return (
        model_fingerprint(model),
        type(model.optimizer).__name__,
        tuple((tuple(v.shape), str(v.dtype)) for v in state_variables(model)),
    )


def _swap_state(a: keras.Model, b: keras.Model) -> None:
    for x, y in zip(state_variables(a), state_variables(b)):
        value = x.numpy()
        x.assign(y.numpy())
        y.assign(value)


def _check_independent(models, folds) -> None:
    seen: dict[int, int] = {}
    for k, model in zip(folds, models):
        for variable in model.variables:
            owner = seen.setdefault(id(variable), k)
            if owner != k:
                raise ValueError(
                    f"`build_fn` returned models that share variable {variable.path!r} (folds {owner} and {k}). "
                    "Every fold needs a model of its own: build new layers inside build_fn on every call."
                )


def _fold_copy(cb, snapshot):
    """A copy of plain callback `cb` in its pre-run state, for one fold of a
    stacked run."""
    if snapshot is None:
        return cb
    twin = copy.copy(cb)
    vars(twin).update(copy.deepcopy(snapshot))
    return twin


# ------------------------------------------------------------ fold sources


class _FoldData:
    """What one fold trains and validates on, ready for `model.fit`.

    `train` is a batched `tf.data.Dataset` of `(x, y)`: for in-memory arrays
    it repeats forever, reshuffled every pass, and `steps` is the number of
    batches in one epoch; for streamed folds `steps` is `None` and an epoch is
    one pass. `validation` is a batched dataset of `(x, y)`.
    """

    def __init__(self, *, train, steps, validation, adapt_input, n_train, n_val, val_labels):
        self.train = train
        self.steps = steps
        self.validation = validation
        self.adapt_input = adapt_input
        self.n_train = n_train
        self.n_val = n_val
        self.val_labels = val_labels

    def mixed(self, mixer) -> _FoldData:
        """The same fold with `mixer` (a `tfcv.layers.BatchMixer`) applied to
        every training batch."""
        import tensorflow as tf

        train = self.train.map(lambda x, y, *rest: mixer(x, y), num_parallel_calls=tf.data.AUTOTUNE)
        return _FoldData(
            train=train.prefetch(tf.data.AUTOTUNE), steps=self.steps, validation=self.validation,
            adapt_input=self.adapt_input, n_train=self.n_train, n_val=self.n_val, val_labels=self.val_labels,
        )


class _ArraySource:
    """In-memory arrays and an index FoldPlan, fed through `tf.data`: every
    fold gathers its batches from one copy of the arrays."""

    def __init__(self, folds, x, y, groups, *, seed, batch_size):
        if x is None:
            raise ValueError("Invalid value for argument `x`. Received: x=None. Expected an array of samples.")
        if y is None:
            raise ValueError("Invalid value for argument `y`. Received: y=None. Expected an array of targets.")
        self.x = np.asarray(x)
        self.y = np.asarray(y)
        _check_finite(self.x)
        self.plan = check_folds(folds, self.x, self.y, groups, seed=seed)
        if not self.plan.uses_indices:
            raise ValueError(
                f"The FoldPlan holds split strings ({self.plan.folds[0][1]!r}), which index a TFDS dataset, "
                "not the arrays given as `x` and `y`. Pass x=None to stream the plan's dataset."
            )
        self.batch_size = batch_size
        self.n_samples = len(self.x)
        self._tensors = None

    def __getstate__(self):
        # Workers (n_jobs) rebuild the tensors from the arrays.
        return {**self.__dict__, "_tensors": None}

    def task(self) -> str:
        return "classification" if is_classification_target(self.y) else "regression"

    def fingerprint(self) -> dict:
        return data_fingerprint(self.x, self.y)

    def gather(self, indices):
        """The `(x, y)` rows at `indices` (inside a tf.data pipeline)."""
        import tensorflow as tf

        if self._tensors is None:
            with tf.init_scope():  # eager tensors, shared by every pipeline
                self._tensors = (tf.constant(self.x), tf.constant(self.y))
        x, y = self._tensors
        return tf.gather(x, indices), tf.gather(y, indices)

    def train_indices(self, k, seed):
        """Fold `k`'s training indices in batches, reshuffled with `seed` on
        every pass, repeating forever."""
        import tensorflow as tf

        train_idx = np.asarray(self.plan.folds[k][0])
        return (
            tf.data.Dataset.from_tensor_slices(train_idx)
            .shuffle(len(train_idx), seed=int(seed), reshuffle_each_iteration=True)
            .batch(self.batch_size)
            .repeat()
        )

    def fold(self, k, seed, *, pipelines=True) -> _FoldData:
        """Fold `k`'s data; with `pipelines=False` without its `train` and
        `validation` datasets (the stacked strategy builds its own)."""
        import tensorflow as tf

        train_idx, val_idx = self.plan.folds[k]
        train = validation = None
        if pipelines:
            train = self.train_indices(k, seed).map(self.gather, num_parallel_calls=tf.data.AUTOTUNE)
            train = train.prefetch(tf.data.AUTOTUNE)
            validation = tf.data.Dataset.from_tensor_slices(np.asarray(val_idx)).batch(max(self.batch_size, 256))
            validation = validation.map(self.gather).prefetch(tf.data.AUTOTUNE)
        return _FoldData(
            train=train, steps=max(1, -(-len(train_idx) // self.batch_size)), validation=validation,
            adapt_input=self.x[train_idx], n_train=len(train_idx), n_val=len(val_idx), val_labels=self.y[val_idx],
        )


class _DatasetSource:
    """`tf.data` folds: a TFDS FoldPlan streamed from disk, or a callable
    `fold -> (train_ds, val_ds)` of batched datasets of `(x, y)`."""

    def __init__(self, folds, make_datasets, *, batch_size, pipeline):
        self.batch_size = batch_size
        self.pipeline = pipeline
        self.make_datasets = make_datasets
        # The out-of-fold array's size comes from the plan (see _out_of_fold).
        self.n_samples = None
        if make_datasets is None:
            self.plan = folds
        else:
            if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)):
                raise TypeError(
                    f"Invalid value for argument `folds`. Received: folds={folds!r}. With a callable "
                    "`fold -> (train_ds, val_ds)` as `x`, `folds` must be the number of folds (an int >= 2)."
                )
            name = getattr(make_datasets, "__qualname__", type(make_datasets).__name__)
            self.plan = FoldPlan(
                [(f"{name}({k}):train", f"{name}({k}):val") for k in range(int(folds))],
                splitter=f"callable {name}", source={"kind": "callable", "name": name},
            )

    def fingerprint(self) -> dict:
        return {"source": self.plan.source, "folds": [list(map(_describe, pair)) for pair in self.plan.folds]}

    def task(self) -> str:
        return "classification" if is_classification_target(self.fold(0, 0).val_labels) else "regression"

    def fold(self, k, seed) -> _FoldData:
        if self.make_datasets is None:
            from tfcv import data as tfcv_data

            train_ds, val_ds = tfcv_data.fold_datasets(
                self.plan, k, batch_size=self.batch_size, seed=int(seed), pipeline=self.pipeline
            )
        else:
            datasets = self.make_datasets(k)
            if not (isinstance(datasets, tuple) and len(datasets) == 2):
                raise TypeError(
                    f"The callable passed as `x` must return a (train_ds, val_ds) pair of tf.data.Dataset. "
                    f"Received for fold {k}: {type(datasets).__name__}."
                )
            train_ds, val_ds = datasets
        import tensorflow as tf

        for name, ds in (("train_ds", train_ds), ("val_ds", val_ds)):
            if not isinstance(ds, tf.data.Dataset):
                raise TypeError(f"Fold {k}: `{name}` must be a tf.data.Dataset of (x, y) batches. Received: {type(ds).__name__}.")
        val_labels = np.concatenate([
            np.asarray(batch) for batch in val_ds.map(lambda *element: element[1]).as_numpy_iterator()
        ])
        return _FoldData(
            train=train_ds, steps=None, validation=val_ds,
            adapt_input=train_ds.map(lambda *element: element[0]),
            n_train=None, n_val=len(val_labels), val_labels=val_labels,
        )


def _describe(part):
    return part if isinstance(part, str) else f"{len(part)} indices"


def _fold_source(folds, x, y, groups, *, seed, batch_size, pipeline):
    if callable(x) and not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a callable returning (train_ds, val_ds): the datasets hold the targets.")
        return _DatasetSource(folds, x, batch_size=batch_size, pipeline=pipeline)
    if x is None and isinstance(folds, FoldPlan) and (folds.source or {}).get("kind") == "tfds":
        if y is not None:
            raise ValueError("`y` must be None when the FoldPlan streams a TFDS dataset: the dataset holds the labels.")
        return _DatasetSource(folds, None, batch_size=batch_size, pipeline=pipeline)
    if pipeline is not None:
        raise ValueError("`pipeline` applies to TFDS plans only; transform in-memory arrays before calling fit.")
    return _ArraySource(folds, x, y, groups, seed=seed, batch_size=batch_size)


# --------------------------------------------------------------- one fold


class _FoldOutcome:
    def __init__(self, model, scores, val_predictions, history=None, info=None, val_targets=None):
        self.model = model
        self.scores = scores
        self.val_predictions = val_predictions
        self.val_targets = val_targets
        self.history = history or {}
        self.info = info or {}


def _score_fold(model, data: _FoldData, task) -> _FoldOutcome:
    compiled = model.evaluate(data.validation, verbose=0, return_dict=True)
    predictions = np.asarray(model.predict(data.validation, verbose=0))
    scores = {name: float(value) for name, value in compiled.items()}
    scores.update(score_predictions(data.val_labels, predictions, task))
    return _FoldOutcome(model, scores, predictions, val_targets=np.asarray(data.val_labels))


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


def adapt_preprocessing(model: keras.Model, x: Any, *, batch_size: int = 256) -> list[str]:
    """Adapts data-dependent preprocessing layers on `x` only.

    Every `keras.layers.Normalization` without a fixed mean and variance and
    every `keras.layers.Discretization` without fixed bin boundaries is
    adapted on what reaches it when `x` is fed to the model (so a
    `Rescaling` in front of it is taken into account), in graph order and
    also inside nested models.

    Returns:
        The names of the adapted layers.
    """
    adapted: list[str] = []
    # Streamed folds pass a tf.data.Dataset, which Keras adapts and predicts on as it is.
    _adapt_recursive(model, x if hasattr(x, "element_spec") else np.asarray(x), batch_size, adapted)
    return adapted


def _needs_adapt(layer) -> bool:
    if isinstance(layer, keras.layers.Normalization):
        return layer.input_mean is None
    if isinstance(layer, keras.layers.Discretization):
        return getattr(layer, "bin_boundaries", None) is None
    return False


def _contains_adaptable(layer) -> bool:
    if _needs_adapt(layer):
        return True
    return isinstance(layer, keras.Model) and any(_contains_adaptable(inner) for inner in layer.layers)


def _adapt_recursive(model, data, batch_size, adapted):
    for layer in model.layers:
        if not _contains_adaptable(layer):
            continue
        feed = data
        if layer.input is not model.inputs[0]:
            probe = keras.Model(model.inputs, layer.input)
            feed = np.asarray(probe.predict(data, batch_size=batch_size, verbose=0))
        if _needs_adapt(layer):
            layer.adapt(feed, batch_size=batch_size) if _accepts_batch_size(layer) else layer.adapt(feed)
            adapted.append(layer.name)
        else:
            _adapt_recursive(layer, feed, batch_size, adapted)


def _accepts_batch_size(layer) -> bool:
    import inspect

    return "batch_size" in inspect.signature(layer.adapt).parameters


# ------------------------------------------------------------ callbacks


def _split_callbacks(callbacks, verbose):
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, keras.callbacks.Callback):
            raise TypeError(
                f"Invalid value in argument `callbacks`. Received: {cb!r} of type {type(cb).__name__}. "
                "Expected keras.callbacks.Callback instances."
            )
    fold_cbs = [cb for cb in callbacks if isinstance(cb, FoldCallback)]
    plain_cbs = [cb for cb in callbacks if not isinstance(cb, FoldCallback)]
    if verbose in ("auto", 1, 2) and not any(isinstance(cb, FoldProgress) for cb in fold_cbs):
        fold_cbs.insert(0, FoldProgress(dynamic=False if verbose == 2 else None))
    return fold_cbs, plain_cbs


_UNSNAPSHOTTED = ("_model", "model")


def _snapshot(cb):
    state = {k: v for k, v in vars(cb).items() if k not in _UNSNAPSHOTTED}
    try:
        return copy.deepcopy(state)
    except Exception as error:  # noqa: BLE001 - any un-copyable state
        warnings.warn(
            f"Cannot snapshot the state of callback {type(cb).__name__} ({error}); its state will "
            "carry over from one fold to the next. Use a FoldCallback to control per-fold state.",
            UserWarning,
            stacklevel=3,
        )
        return None


def _restore(cb, snapshot):
    if snapshot is not None:
        vars(cb).update(copy.deepcopy(snapshot))


def _call(callbacks, hook, *args):
    for cb in callbacks:
        getattr(cb, hook)(*args)


class _EpochLog(keras.callbacks.Callback):
    """Appends each epoch's logs to a JSON file, so a resumed fold keeps its
    full history (Keras' History only sees the epochs after the resume)."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.logs: list[dict] = []

    def read(self, n_epochs: int) -> list[dict]:
        if n_epochs == 0 or not os.path.exists(self.path):
            return []
        return _atomic.read_json(self.path)[:n_epochs]

    def on_epoch_end(self, epoch, logs=None):
        self.append({k: float(v) for k, v in (logs or {}).items()})

    def append(self, entry: dict) -> None:
        self.logs.append(entry)
        _atomic.write_json(self.path, self.logs)


def _backed_up_epoch(backup_dir) -> int:
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    try:
        return int(_atomic.read_json(path)["epoch"])
    except (ValueError, KeyError, json.JSONDecodeError):
        return 0


def _merge_history(previous: list[dict], history: dict) -> dict:
    merged: dict[str, list[float]] = {}
    for logs in previous:
        for name, value in logs.items():
            merged.setdefault(name, []).append(float(value))
    for name, values in history.items():
        merged.setdefault(name, []).extend(float(v) for v in values)
    return merged


# ------------------------------------------------------------- validation


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Invalid value for argument `{name}`. Received: {name}={value!r}. Expected an int >= 1.")
    return int(value)


def _check_finite(x) -> None:
    if np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.integer):
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(len(x), -1))[0])
            kinds = []
            if np.isnan(x).any():
                kinds.append("NaN")
            if np.isinf(x).any():
                kinds.append("infinite")
            raise ValueError(
                f"Invalid value for argument `x`: it holds {' and '.join(kinds)} values in "
                f"{len(rows)} samples (first rows: {rows[:5].tolist()}). Expected finite numbers; "
                "impute or drop those samples first."
            )


def model_fingerprint(model: keras.Model) -> str:
    """A digest of a model's architecture and compile settings, independent
    of the auto-generated layer names Keras assigns."""
    import hashlib

    def scrub(obj):
        if isinstance(obj, dict):
            return {k: scrub(v) for k, v in sorted(obj.items()) if k not in ("name", "seed")}
        if isinstance(obj, (list, tuple)):
            return [scrub(v) for v in obj]
        return obj

    parts = []
    for layer in _all_layers(model):
        try:
            config = layer.get_config()
        except NotImplementedError:
            config = {}
        parts.append([type(layer).__name__, scrub(config)])
    parts.append([[list(w.shape), str(w.dtype)] for w in model.weights])
    try:
        parts.append(scrub(model.get_compile_config()))
    except Exception:  # noqa: BLE001 - custom compile settings may not serialize
        pass
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


# ------------------------------------------------------------- run dir


class _RunStore:
    """The on-disk layout of a run directory.

    run_dir/manifest.json            what the run is (data, model, settings)
    run_dir/plan.json                the FoldPlan
    run_dir/fold_<k>/                a finished fold, published atomically
    run_dir/.backup/fold_<k>/        the running fold's per-epoch backup
    run_dir/result.json, oof_predictions.npy   written when all folds end
    """

    def __init__(self, run_dir):
        self.run_dir = os.path.abspath(os.fspath(run_dir))

    def backup_dir(self, k) -> str:
        return os.path.join(self.run_dir, ".backup", f"fold_{k}")

    def prepare(self, config: dict, plan: FoldPlan) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        _atomic.remove_leftovers(self.run_dir)
        manifest_path = os.path.join(self.run_dir, _MANIFEST)
        plan_path = os.path.join(self.run_dir, _PLAN)
        if os.path.exists(manifest_path):
            stored = _atomic.read_json(manifest_path)
            differences = [
                _describe_difference(key, stored.get(key), value)
                for key, value in config.items()
                if _normalize_json(stored.get(key)) != _normalize_json(value)
            ]
            if os.path.exists(plan_path) and FoldPlan.load(plan_path) != plan:
                differences.append("the fold plan differs from the one stored")
            if differences:
                raise ValueError(
                    f"Run directory {self.run_dir!r} holds a different run: "
                    + "; ".join(differences)
                    + ". Refusing to mix results: use a new run_dir, or delete this one to start over."
                )
        else:
            from tfcv import __version__

            _atomic.write_json(manifest_path, {**config, "tfcv_version": __version__})
        if not os.path.exists(plan_path):
            plan.save(plan_path)

    def load_finished(self, n_folds) -> dict[int, _FoldOutcome]:
        finished = {}
        for k in range(n_folds):
            fold_dir = os.path.join(self.run_dir, f"fold_{k}")
            if os.path.isdir(fold_dir):
                finished[k] = _load_fold(fold_dir)
        return finished

    def save_fold(self, k, outcome: _FoldOutcome) -> None:
        _save_fold(os.path.join(self.run_dir, f"fold_{k}"), outcome)
        import shutil

        shutil.rmtree(self.backup_dir(k), ignore_errors=True)

    def finish(self, result: CVResult) -> None:
        result._write_summary(self.run_dir)


def _describe_difference(key, stored, received) -> str:
    if key == "data":
        return (
            f"the data differs (stored shape {tuple((stored or {}).get('x_shape', ()))}, "
            f"received shape {tuple(received['x_shape'])}, content digests differ)"
            if stored and stored.get("x_shape") == received["x_shape"]
            else f"the data differs (stored shape {tuple((stored or {}).get('x_shape', ()))}, received {tuple(received['x_shape'])})"
        )
    if key == "model":
        return "the model (architecture or compile settings) differs"
    return f"{key} differs (stored {key}={stored!r}, received {key}={received!r})"


def _normalize_json(value):
    return json.loads(json.dumps(value, default=_atomic._json_default))


def _save_fold(fold_dir, outcome: _FoldOutcome, *, overwrite=False) -> None:
    with _atomic.directory(fold_dir, overwrite=overwrite) as tmp:
        outcome.model.save(os.path.join(tmp, "model.keras"))
        _atomic.write_json(os.path.join(tmp, "history.json"), outcome.history)
        _atomic.write_json(os.path.join(tmp, "scores.json"), outcome.scores)
        _atomic.write_json(os.path.join(tmp, "info.json"), outcome.info)
        np.save(os.path.join(tmp, "val_predictions.npy"), outcome.val_predictions)
        if outcome.val_targets is not None:
            np.save(os.path.join(tmp, "val_targets.npy"), outcome.val_targets)


def _load_fold(fold_dir) -> _FoldOutcome:
    model = load_model_safely(os.path.join(fold_dir, "model.keras"))
    targets_path = os.path.join(fold_dir, "val_targets.npy")
    return _FoldOutcome(
        model,
        _atomic.read_json(os.path.join(fold_dir, "scores.json")),
        np.load(os.path.join(fold_dir, "val_predictions.npy"), allow_pickle=False),
        history=_atomic.read_json(os.path.join(fold_dir, "history.json")),
        info=_atomic.read_json(os.path.join(fold_dir, "info.json")),
        val_targets=np.load(targets_path, allow_pickle=False) if os.path.exists(targets_path) else None,
    )


def load_model_safely(path) -> keras.Model:
    """`keras.saving.load_model` with `safe_mode=True`, and an error that
    says which file refused to load and why."""
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:
        raise ValueError(
            f"Cannot load the model in {os.fspath(path)!r} safely: {error}. tfcv only loads models "
            "whose layers are Keras' own or registered with keras.saving.register_keras_serializable; "
            "Lambda layers and unregistered classes are refused (safe_mode=True)."
        ) from error


# --------------------------------------------------------------- result


class CVResult:
    """What a cross-validation run produced.

    Attributes:
        scores: `dict` mapping each metric name to its list of per-fold
            values: the model's compiled metrics on the validation fold plus,
            for classifiers, `accuracy` and macro `precision`, `recall` and
            `f1` (scikit-learn), for regressors `mse`, `mae` and `r2`.
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
        return np.asarray(self.ensemble("mean").predict(np.asarray(x), batch_size=batch_size, verbose=0))

    def evaluate(self, x: Any, y: Any, *, batch_size: int = 256) -> dict[str, float]:
        """Scores the mean fold ensemble on held-out data, stores the scores
        in `test_scores` and returns them."""
        predictions = self.predict(x, batch_size=batch_size)
        self.test_scores = score_predictions(np.asarray(y), predictions, self.task)
        return dict(self.test_scores)

    # --------------------------------------------------------- persistence

    def save(self, run_dir: str | os.PathLike) -> str:
        """Writes the result to `run_dir` (each fold atomically).

        Layout: `plan.json`, `fold_<k>/` (`model.keras`, `history.json`,
        `scores.json`, `val_predictions.npy`), `result.json` and
        `oof_predictions.npy`. Folds already present (written by `fit`) are
        kept.

        Returns:
            The path of `run_dir`.
        """
        run_dir = os.path.abspath(os.fspath(run_dir))
        os.makedirs(run_dir, exist_ok=True)
        self.plan.save(os.path.join(run_dir, _PLAN))
        if not os.path.exists(os.path.join(run_dir, _MANIFEST)):
            _atomic.write_json(os.path.join(run_dir, _MANIFEST), self.info)
        for k in range(self.n_folds):
            fold_dir = os.path.join(run_dir, f"fold_{k}")
            if not os.path.isdir(fold_dir):
                outcome = _FoldOutcome(
                    self.models[k], {n: v[k] for n, v in self.scores.items()}, self.val_predictions[k],
                    history=self.histories[k], info=self.fold_info[k],
                    val_targets=None if self.val_targets is None else self.val_targets[k],
                )
                _save_fold(fold_dir, outcome)
        self._write_summary(run_dir)
        return run_dir

    def _write_summary(self, run_dir) -> None:
        _atomic.write_json(os.path.join(run_dir, _RESULT), {
            "task": self.task,
            "n_folds": self.n_folds,
            "scores": self.scores,
            "mean": {n: self.mean(n) for n in self.scores},
            "std": {n: self.std(n) for n in self.scores},
            "test_scores": self.test_scores,
            "info": self.info,
        })
        buffer_path = os.path.join(run_dir, _OOF)
        import io

        buffer = io.BytesIO()
        np.save(buffer, self.oof_predictions)
        _atomic.write_bytes(buffer_path, buffer.getvalue())

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> CVResult:
        """Reads a result written by `save` (or by `fit` with `run_dir`).

        Models are loaded with `safe_mode=True`: a run directory holding a
        Lambda layer or an unregistered class is refused with a clear error.
        """
        run_dir = os.fspath(run_dir)
        plan_path = os.path.join(run_dir, _PLAN)
        if not os.path.exists(plan_path):
            raise FileNotFoundError(f"{run_dir!r} is not a tfcv run directory: it has no {_PLAN}.")
        plan = FoldPlan.load(plan_path)
        missing = [k for k in range(len(plan)) if not os.path.isdir(os.path.join(run_dir, f"fold_{k}"))]
        if missing:
            raise ValueError(
                f"Run directory {run_dir!r} is unfinished: folds {missing} of {len(plan)} have not been "
                "trained. Resume it by running the same fit (or `tfcv run`) with this run_dir."
            )
        outcomes = [_load_fold(os.path.join(run_dir, f"fold_{k}")) for k in range(len(plan))]
        summary_path = os.path.join(run_dir, _RESULT)
        summary = _atomic.read_json(summary_path) if os.path.exists(summary_path) else {}
        manifest_path = os.path.join(run_dir, _MANIFEST)
        info = summary.get("info") or (_atomic.read_json(manifest_path) if os.path.exists(manifest_path) else {})
        task = summary.get("task") or info.get("task", "classification")
        result = cls._from_outcomes(outcomes, plan, task, n_samples=None, info=info)
        result.test_scores = summary.get("test_scores")
        return result


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
