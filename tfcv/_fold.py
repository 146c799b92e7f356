"""One fold, start to finish: the function every strategy runs per split.

As scikit-learn's `cross_validate` hands every split to `_fit_and_score`,
whichever joblib backend runs it, tfcv's strategies hand every fold to
`fit_and_score` (sequential folds and joblib workers) or to its parts
(`prepare_fold`, `finish_fold`) when the stacked strategy trains several
folds in one graph. A fold builds a fresh model under its own seed, adapts
its data-fitted layers on its training split, trains, then scores and
predicts its validation split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfcv import _compat
from tfcv._run_dir import FoldCheckpoint, _merge_history
from tfcv.callbacks import (
    FoldCallback,
    any_needs_batch_hooks,
    call_hook,
    holds_keras_state,
    keras_states,
)
from tfcv.metrics import scalar_scores, score_predictions, score_with
from tfcv.preprocessing import adapt_preprocessing
from tfcv.result import _FoldOutcome


@dataclasses.dataclass(frozen=True)
class FoldSettings:
    """What every fold of one run shares. Picklable (for joblib workers)
    unless `distribute` is set, which runs in this process only."""

    build_fn: Callable[[], keras.Model]
    task: str
    epochs: int
    batch_size: int
    deterministic: bool = True
    distribute: Any = None
    # `tfcv.metrics.check_scoring(scoring)[0]`: scorers by score name, or None.
    scorers: Any = None
    return_train_score: bool = False

    @property
    def adapt_batch_size(self) -> int:
        return max(self.batch_size, 256)


def fold_seeds(seed: int, n_folds: int) -> list[int]:
    """Independent per-fold seeds derived from one seed (stable across runs)."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(n_folds)]


def build_fold_model(build_fn: Callable[[], keras.Model], seed: int, distribute: Any = None) -> keras.Model:
    """Calls `build_fn` under `seed` (and `distribute`'s scope) and checks
    that it returned a compiled `keras.Model`."""
    keras.utils.set_random_seed(seed)
    if distribute is not None:
        with distribute.scope():
            model = build_fn()
    else:
        model = build_fn()
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


def prepare_fold(settings: FoldSettings, k: int, seed: int, source, *, model=None, pipelines: bool = True):
    """Fold `k`'s model (built unless given) with its data-fitted layers
    adapted on the fold's training split and its optimizer built, and the
    fold's data. With `pipelines=False` an in-memory source skips the
    per-fold `tf.data` pipelines (the stacked strategy builds its own)."""
    if model is None:
        model = build_fold_model(settings.build_fn, seed, settings.distribute)
    data = source.fold(k, seed) if pipelines else source.fold(k, seed, pipelines=False)
    adapt_preprocessing(model, data.adapt_input, batch_size=settings.adapt_batch_size)
    if settings.distribute is not None:
        with settings.distribute.scope():
            build_optimizer(model)
    else:
        build_optimizer(model)
    return model, data


def batch_mixer(build_fn, seed: int):
    """MixUp/CutMix of a `ModelBuilder` whose spec asks for it: applied to
    training batches only, labels mixed with the images' weights."""
    spec = getattr(build_fn, "spec", None)
    if spec is not None and hasattr(spec, "batch_mixer"):
        return spec.batch_mixer(seed)
    return getattr(build_fn, "batch_mixer", None)


def fit_and_score(
    settings: FoldSettings, k: int, seed: int, source, *, callbacks, backup_dir=None, model=None, reuse=None
) -> _FoldOutcome:
    """Trains and scores fold `k`; resumes from `backup_dir` when it holds a
    backup of this fold.

    Args:
        settings: The run's `FoldSettings`.
        k: `int`. The fold index.
        seed: `int`. The fold's seed.
        source: The run's fold source (`tfcv._fold_sources`).
        callbacks: Keras callbacks for this fold (fold-aware ones get
            `on_fold_begin`; the caller sends `on_fold_end`).
        backup_dir: `str` or `None`. Where the fold is backed up each epoch.
        model: A model already built for this fold under `seed`, or `None`.
        reuse: A `tfcv._sequential.TracedModelReuse`, or `None`.

    Returns:
        The fold's `_FoldOutcome`.
    """
    callbacks = list(callbacks) + fault_injection()
    model, data = prepare_fold(settings, k, seed, source, model=model)
    # Every fold, streamed or not, trains on one repeating stream cut into
    # epochs of `data.steps` batches, so a resumed fold can skip the epochs
    # done (see `_FoldData.repeated`).
    data = data.repeated(k)
    if settings.distribute is None:
        # Under MirroredStrategy, Keras' multi-step loop fails to run
        # (TF 2.21: "You must feed a value for placeholder tensor").
        run_epochs_per_call(model, data.steps, callbacks)
    if reuse is not None:
        model = reuse.adopt(model)
    mixer = batch_mixer(settings.build_fn, seed)
    if mixer is not None:
        data = data.mixed(mixer)
    if settings.distribute is None:
        build_metrics(model, data.train.element_spec)

    fold_cbs = [cb for cb in callbacks if isinstance(cb, FoldCallback)]
    stateful = [cb for cb in callbacks if holds_keras_state(cb)]
    keras_callbacks = list(callbacks)
    initial_epoch = 0
    previous_logs: list[dict] = []
    checkpoint = None
    if backup_dir is not None:
        checkpoint = FoldCheckpoint(backup_dir, state_variables(model), lambda: keras_states(stateful, k), model=model)
        initial_epoch = checkpoint.restore(max_epochs=settings.epochs)
        previous_logs = list(checkpoint.logs)
        # After the callbacks whose state it saves, so that their end-of-epoch
        # state is what is saved; before the other fold-aware ones, so that
        # an epoch reported done (FoldProgress) is an epoch backed up.
        keras_callbacks = stateful + [checkpoint] + [cb for cb in callbacks if not holds_keras_state(cb)]

    begin_fold(fold_cbs, k, model, seed, data, initial_epoch, previous_logs)
    start = time.monotonic()
    train = data.train
    if initial_epoch:
        # The resumed epochs continue the stream where the backup left it.
        train = train.skip(initial_epoch * data.steps)
    # A fold that had stopped still ends its training: no epoch runs, but the
    # callbacks get their state back and end as they would have
    # (EarlyStopping's restore_best_weights).
    stopped = checkpoint is not None and checkpoint.stopped
    last_validation = LastValidation()
    new_logs = model.fit(
        train,
        validation_data=data.validation,
        epochs=initial_epoch if stopped else settings.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=data.steps,
        # First, so that it sees the weights the validation saw; after the
        # logs are made scalars, which every callback and History then see.
        callbacks=[ScalarLogs(), last_validation] + keras_callbacks,
        verbose=0,
        shuffle=False,  # the pipeline shuffles
    ).history
    seconds = time.monotonic() - start
    compiled = last_validation.logs_if_unchanged(model)
    if compiled is None:
        compiled = model.evaluate(data.validation, verbose=0, return_dict=True)
    predictions = np.asarray(model.predict(data.validation, verbose=0))
    outcome = finish_fold(
        k, seed, model, data, settings, compiled, predictions,
        history=_merge_history(previous_logs, new_logs),
        info={"seconds": seconds, "initial_epoch": initial_epoch, "predict_seconds": time.monotonic() - start - seconds},
    )
    if reuse is not None:
        reuse.trained(outcome)
    return outcome


class ScalarLogs(keras.callbacks.Callback):
    """Rewrites the logs of a metric whose result is not a scalar into one
    entry per element (`tfcv.metrics.scalar_scores`), in place: Keras passes
    the same logs to every callback after this one and to its `History`
    (as `ReduceLROnPlateau` adds `learning_rate`), so callbacks, history and
    backups all see scalars. Logs of scalars only are left as they are."""

    def on_epoch_end(self, epoch, logs=None):
        _make_scalar(logs)

    def on_test_end(self, logs=None):
        _make_scalar(logs)

    def on_train_end(self, logs=None):
        _make_scalar(logs)


def _make_scalar(logs) -> None:
    if logs and any(np.ndim(value) for value in logs.values()):
        scalars = scalar_scores(logs)
        logs.clear()
        logs.update(scalars)


class LastValidation(keras.callbacks.Callback):
    """Keeps the last epoch's validation logs and a digest of the weights
    they were computed with: when no callback changed the weights after it
    (restoring the best weights, an optimizer's moving average), the last
    validation pass is the fold's final score, and `evaluate` need not run
    it again."""

    def __init__(self):
        super().__init__()
        self.logs = None
        self.digest = None

    def on_test_end(self, logs=None):
        # The weights the validation ran with: this callback comes first, so
        # a callback that swapped others in for validating at on_test_begin
        # (SwapEMAWeights) has not swapped them back yet.
        self.digest = weights_digest(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.logs = {name[len("val_"):]: value for name, value in (logs or {}).items() if name.startswith("val_")}

    def logs_if_unchanged(self, model: keras.Model) -> dict | None:
        """The last validation's logs if `model`'s weights are those it saw,
        else `None`."""
        if not self.logs or self.digest != weights_digest(model):
            return None
        return dict(self.logs)


def weights_digest(model: keras.Model) -> bytes:
    """A digest of every weight of `model`: equal digests, equal weights."""
    digest = hashlib.blake2b(digest_size=16)
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).view(np.uint8))
    return digest.digest()


def refit_epochs(histories, epochs: int, callbacks) -> int:
    """How long `fit(..., refit=True)` trains on all the data: the folds'
    median best epoch when an EarlyStopping callback ran (the epoch its
    monitored value was best), else `epochs`."""
    stoppers = [cb for cb in callbacks or () if isinstance(cb, keras.callbacks.EarlyStopping)]
    if not stoppers:
        return epochs
    stopper = stoppers[0]
    name = stopper.monitor
    mode = stopper.mode
    if mode not in ("min", "max"):
        mode = "max" if any(word in name for word in ("acc", "auc", "precision", "recall", "f1")) else "min"
    best = [
        int(np.argmax(h[name]) if mode == "max" else np.argmin(h[name])) + 1
        for h in histories if h.get(name)
    ]
    return max(1, int(round(float(np.median(best))))) if best else epochs


def refit_result(result, settings: FoldSettings, seed: int, source, callbacks, store) -> None:
    """Sets `result.refit_model` (`fit(..., refit=True)`): read back from
    the run directory when it holds one, else trained and saved there."""
    stored = None if store is None else store.load_refit()
    if stored is not None:
        result.refit_model, result.info["refit_epochs"] = stored
        return
    epochs = refit_epochs(result.histories, settings.epochs, callbacks)
    refit_seed = int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])
    result.refit_model = fit_refit(settings, refit_seed, source, epochs)
    result.info["refit_epochs"] = epochs
    if store is not None:
        store.save_refit(result.refit_model, {"epochs": epochs, "seed": refit_seed})
        store.finish(result)


def fit_refit(settings: FoldSettings, seed: int, source, epochs: int) -> keras.Model:
    """One more model, built and adapted as a fold's is, trained on all the
    data for `epochs` (`fit(..., refit=True)`)."""
    if not hasattr(source, "everything"):
        raise ValueError("refit=True trains on all the data at once: it works with in-memory arrays, not streamed folds.")
    model = build_fold_model(settings.build_fn, seed, settings.distribute)
    data = source.everything(seed)
    adapt_preprocessing(model, data.adapt_input, batch_size=settings.adapt_batch_size)
    mixer = batch_mixer(settings.build_fn, seed)
    if mixer is not None:
        data = data.mixed(mixer)
    model.fit(data.train, epochs=epochs, steps_per_epoch=data.steps, verbose=0, shuffle=False)
    return model


def begin_fold(fold_cbs, k, model, seed, data, initial_epoch, previous_logs) -> None:
    """Tells the fold-aware callbacks that fold `k` starts (after a resume,
    with the epochs already done in their histories)."""
    for cb in fold_cbs:
        cb.fold = k
        cb.set_model(model)
        if previous_logs:
            cb.histories[k] = _merge_history(previous_logs, {})
    call_hook(fold_cbs, "on_fold_begin", k, {
        "seed": seed, "n_train": data.n_train, "n_val": data.n_val, "initial_epoch": initial_epoch,
    })


def finish_fold(k, seed, model, data, settings, compiled, predictions, *, history, info) -> _FoldOutcome:
    """The outcome of fold `k` from its compiled metrics and its predictions
    on the validation split, scored with scikit-learn: the default metrics
    and `settings.scorers`, and with `return_train_score` the same on the
    training split (`train_<name>`).

    `fit_time` and `score_time` are `cross_validate`'s: seconds spent
    training, and seconds spent evaluating, predicting and scoring. Folds
    trained side by side (stacked) share their seconds equally."""
    start = time.monotonic()
    scores = scalar_scores(compiled)
    scores.update(_scikit_learn_scores(settings, data.val_labels, predictions, data.val_weights))
    if settings.return_train_score:
        if data.train_rows is None:
            raise ValueError(
                "return_train_score=True needs the training rows in a fixed order: it works with in-memory "
                "arrays, not with streamed folds."
            )
        rows, labels, weights = data.train_rows
        train_predictions = np.asarray(model.predict(rows, verbose=0))
        scores.update({
            f"train_{name}": value
            for name, value in _scikit_learn_scores(settings, labels, train_predictions, weights).items()
        })
    epochs = len(next(iter(history.values()), []))
    sharing = len(info.get("stacked_folds", [k]))
    seconds = info.pop("seconds")
    score_time = info.pop("predict_seconds", 0.0) + time.monotonic() - start
    return _FoldOutcome(
        model, scores, predictions, history=history, val_targets=np.asarray(data.val_labels),
        info={"fold": k, "seed": seed, "seconds": seconds, "epochs": epochs, "fit_time": seconds / sharing,
              "score_time": score_time, **info},
    )


def _scikit_learn_scores(settings, labels, predictions, weights) -> dict[str, float]:
    scores = score_predictions(labels, predictions, settings.task, sample_weight=weights)
    if settings.scorers:
        scores.update(score_with(settings.scorers, labels, predictions, settings.task, sample_weight=weights))
    return scores


def publish_fold(k, outcome, store, fold_cbs) -> None:
    """Writes a finished fold to the run directory (if any) and sends
    `on_fold_end`."""
    if store is not None:
        store.save_fold(k, outcome)
    for cb in fold_cbs:
        cb.fold = k
        cb.histories[k] = outcome.history
    call_hook(fold_cbs, "on_fold_end", k, {**outcome.scores, "loaded": False})


# ------------------------------------------------- one graph call per epoch


def build_optimizer(model: keras.Model) -> None:
    """Creates the optimizer's variables now, so that a backup restores them
    and a reused model's state can be swapped in."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def build_metrics(model: keras.Model, batch_spec) -> None:
    """Creates the compiled metrics' variables before the first traced train
    step (see `tfcv._compat.symbolic_build`), so that step is traced once."""
    _compat.symbolic_build(model, batch_spec)


def run_epochs_per_call(model: keras.Model, steps: int, callbacks) -> None:
    """Runs a whole epoch per traced call (`steps_per_execution`) unless a
    callback needs to see every batch or the model was compiled with its own
    setting. Training is the same step for step; only the batch hooks fire
    once per epoch. A traced model runs `steps_per_execution` steps per call
    whatever the epoch's length: only a fold of as many steps may reuse it
    (`tfcv._sequential.TracedModelReuse`)."""
    if model.train_function is not None or getattr(model, "steps_per_execution", 1) != 1:
        return
    if not any_needs_batch_hooks(callbacks):
        model.steps_per_execution = steps


def state_variables(model: keras.Model, *, metrics: bool = False) -> list:
    """Everything a training step reads and writes: weights, random-seed
    state, optimizer variables and (optionally) metric variables."""
    optimizer = [] if model.optimizer is None else list(model.optimizer.variables)
    return list(model.variables) + optimizer + (list(model.metrics_variables) if metrics else [])


# ------------------------------------------------------------ fault tests

# Private fault injection for the resume tests: TFCV_FAULT="epoch=2,batch=3"
# (or "epoch=2,test_batch=0", optionally with "fold=1") SIGKILLs this process
# after that batch of that epoch (1-based epochs, 0-based batches), so a test
# can kill a run mid-epoch or mid-validation exactly.
_FAULT_ENV = "TFCV_FAULT"


def fault_injection() -> list:
    spec = os.environ.get(_FAULT_ENV)
    if not spec:
        return []
    return [_KillAt(**{key: int(value) for key, value in (part.split("=") for part in spec.split(","))})]


class _KillAt(FoldCallback):
    def __init__(self, epoch, batch=None, test_batch=None, fold=None):
        super().__init__()
        self.at_epoch, self.at_batch, self.at_test_batch, self.at_fold = epoch, batch, test_batch, fold
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def _kill_if(self, batch, wanted):
        if wanted == batch and self.epoch == self.at_epoch and self.at_fold in (None, self.fold):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, batch, logs=None):
        self._kill_if(batch, self.at_batch)

    def on_test_batch_end(self, batch, logs=None):
        self._kill_if(batch, self.at_test_batch)
