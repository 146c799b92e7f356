"""The stacked strategy: every fold's model in one Keras graph, one `fit`.

`_StackedFolds` holds the K fold models side by side. Its input is a tuple
with one batch per fold, drawn from that fold's training indices only; its
train step runs each fold model's own `train_step` (own weights, optimizer
state and metrics) on that fold's batch; once a fold stops, the steps are
gated by a per-fold `active` flag so that a stopped fold trains no more. The
folds' steps are independent ops of one graph, so TensorFlow runs them
concurrently, and a whole epoch runs as one call of tfcv's own step loop
(`_StackedFolds._make_train_function`).

Validation is one pass that does what `evaluate` and `predict` would do in
two: every copy's compiled metrics are updated and its predictions kept
(`_StackedFolds.validate`), in one traced call over an iterator kept from
pass to pass (`_validation_pass`). The last epoch's pass is therefore also the
folds' final scores, unless a callback changed a copy's weights after it
(restoring the best weights, an optimizer's moving average): then the pass
runs once more.

`_FoldDispatcher` turns the stacked model's logs (`fold<i>:<metric>`) back
into per-fold logs and drives each fold's callbacks with them, so
EarlyStopping, ModelCheckpoint and the fold-aware callbacks behave per fold.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import keras
import numpy as np

from tfcv import _compat
from tfcv._fold import (
    batch_mixer,
    begin_fold,
    build_metrics,
    fault_injection,
    finish_fold,
    prepare_fold,
    publish_fold,
    state_variables,
    weights_digest,
)
from tfcv._fold_sources import _ArraySource
from tfcv._run_dir import FoldCheckpoint, _merge_history
from tfcv._stacked_data import array_datasets, stream_datasets
from tfcv.callbacks import TEST_BATCH_HOOKS, any_needs_batch_hooks, fold_copy, keras_states
from tfcv.metrics import scalar_scores

_PREFIX = "fold{}:"


class _StackedFolds(keras.Model):
    """The fold models side by side; see the module docstring."""

    def __init__(self, fold_models: Sequence[keras.Model], active=None):
        super().__init__(name="stacked_folds")
        import tensorflow as tf

        self.fold_models = list(fold_models)
        if active is None:
            active = tf.Variable([True] * len(self.fold_models), trainable=False, dtype=tf.bool, name="active")
        self.active = active
        self.gated = False
        # (logs, predictions, weight digests) of the last `validate`.
        self.last_validation = None
        self.built = True

    def gate(self):
        """Skips the train step of every fold whose `active` flag is off, from
        the next step on.

        Until a fold stops, the train step calls every copy's step
        unconditionally: K `tf.cond`s around the steps cost time to trace and
        instantiate (on the digits, about half a second of CPU of a 5-fold
        run). The first fold that stops retraces the train function once with
        the gates.
        """
        if not self.gated:
            self.gated = True
            self.make_train_function(force=True)

    def call(self, inputs, training=False):
        return tuple(model(x, training=training) for model, x in zip(self.fold_models, inputs))

    @property
    def metrics(self):
        # Keras skips the metrics of nested models; here they are the point.
        return [metric for model in self.fold_models for metric in model.metrics]

    # Grappler's graph rewrites take 1-2 s on a graph this size (K copies'
    # steps behind conds in one while loop) and did not make the epochs
    # measurably faster: 5 folds x 10 epochs of digits ran in 15.1 s instead
    # of 16.1 s (medians of 4). The setting is process-wide, so it is switched
    # off only while the stacked functions run.
    def make_train_function(self, force=False):
        return self._make_function_without_rewrites("train_function", self._make_train_function, force)

    def _make_train_function(self, force=True):
        """`steps_per_execution` train steps per call in one `tf.while_loop`.

        Keras' loop wraps every step in a nested `tf.function` and two
        `tf.cond`s over optionals, so that a finite dataset may end inside a
        call; every variable of the K copies is then threaded through each of
        them, which costs time to trace and instantiate. The stacked training
        data repeats forever, so the steps need none of it. The logs' shapes
        come from the shared train step; without one, Keras' loop runs."""
        import tensorflow as tf

        steps = self.steps_per_execution

        def multi_step(iterator):
            spec = iterator.element_spec
            shared = self._shared_step("train_step", tuple(part[0] for part in spec))
            outputs = None if shared is None else shared[0].structured_outputs
            if not isinstance(outputs, dict) or not all(t.shape.is_fully_defined() for t in outputs.values()):
                return None
            initial = {
                _PREFIX.format(i) + name: tf.zeros(t.shape, t.dtype)
                for i in range(len(self.fold_models)) for name, t in outputs.items()
            }

            def body(i, _):
                return i + 1, self.train_step(iterator.get_next())

            return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), initial))[1]

        function = tf.function(multi_step, autograph=False)

        def train_function(iterator):
            logs = function(iterator)
            if logs is None:  # traced once: the steps' logs have no fixed shape
                keras_loop = functools.partial(keras.Model.make_train_function, self)
                return self._make_function_without_rewrites("train_function", keras_loop, True)(iterator)
            return logs

        self.train_function = train_function

    def make_predict_function(self, force=False):
        return self._make_function_without_rewrites("predict_function", super().make_predict_function, force)

    def _make_function_without_rewrites(self, attribute, make, force):
        if getattr(self, attribute) is None or force:
            make(force=True)
            setattr(self, attribute, _compat.without_graph_rewrites(getattr(self, attribute)))
        return getattr(self, attribute)

    def train_step(self, data):
        return self._each_fold(data, "train_step", gated=self.gated)

    def predict_step(self, data):
        # Every copy's test step, which updates its compiled metrics, and the
        # predictions that step made: `validate` reads both after one pass.
        # Never gated: validating a stopped fold changes none of its weights
        # (its metrics are reset before every pass).
        return tuple(
            self._step(i, "validation_step", tuple(part[i] for part in data))[1]
            for i in range(len(self.fold_models))
        )

    def validate(self, dataset, callbacks=None):
        """One pass over the stacked validation `dataset`: every copy's
        compiled metrics (as `evaluate` gives them, under `fold<i>:` names)
        and its predictions, in the dataset's order.

        `callbacks` (a `keras.callbacks.CallbackList`, as `fit` passes to
        `evaluate`) get the test hooks `evaluate` would call.

        Returns:
            `(logs, predictions)`, one array of predictions per copy.
        """
        if callbacks is not None:
            callbacks.on_test_begin()
        # A callback that acts on test batches sees them through Keras' predict.
        wants_batches = callbacks is not None and any_needs_batch_hooks(callbacks.callbacks, TEST_BATCH_HOOKS)
        traced = None if wants_batches else self._validation_pass(dataset)
        if traced is None:
            self.reset_metrics()
            hooks = [] if callbacks is None else [_TestHooks(callbacks, self)]
            predictions, logs = self.predict(dataset, verbose=0, callbacks=hooks), self.metric_results()
        else:
            predictions, logs = traced
        predictions = [np.asarray(p) for p in predictions]
        # The weights the pass ran with: a callback may swap others in for
        # validating at on_test_begin and back at on_test_end (SwapEMAWeights).
        self.last_validation = (logs, predictions, self.weights_digests())
        if callbacks is not None:
            callbacks.on_test_end(logs)
        return logs, predictions

    def _validation_pass(self, dataset):
        """`(predictions, logs)` of one pass over `dataset` in one traced
        call with no per-batch Python: the metrics reset, the copies'
        `predict_step` over every batch, read from an iterator over the
        repeated dataset that is made once and kept, and the metrics' results.

        Keras' `predict` makes two `tf.data` iterators per call (about 8 ms
        each on the digits) and gathers every call's outputs in Python, and
        resetting and reading the metrics eagerly costs a few ms more; the
        stacked validation runs after every epoch. `None` for a dataset of
        unknown length (then `predict` runs the pass)."""
        import tensorflow as tf

        n_batches = int(dataset.cardinality())
        if n_batches < 1:
            return None
        state = self.__dict__.get("_validation_state")
        if state is None or state[0] is not dataset:
            loop = functools.partial(self._validation_loop, n_batches=n_batches)
            function = _compat.without_graph_rewrites(tf.function(loop, autograph=False))
            state = (dataset, iter(dataset.repeat()), function)
            self.__dict__["_validation_state"] = state
        _, iterator, function = state
        try:
            return function(iterator)
        except BaseException:
            # The iterator stands somewhere inside a pass: start afresh.
            self.__dict__.pop("_validation_state", None)
            raise

    def _validation_loop(self, iterator, n_batches):
        import tensorflow as tf

        for metric in self.metrics:
            metric.reset_state()
        # The predictions' structure from the shared validation step's trace,
        # so that the copies' steps are traced once, inside the loop; without
        # a shared step, from a first step outside it.
        shared = self._shared_step("validation_step", tuple(part[0] for part in iterator.element_spec))
        if shared is not None:
            structure, first = tuple(shared[0].structured_outputs[1] for _ in self.fold_models), None
        else:
            structure = self.predict_step(next(iterator))
            first = tf.nest.flatten(structure)
            if n_batches == 1:
                return structure, self.metric_results()
        remaining = n_batches - (first is not None)
        arrays = [
            tf.TensorArray(t.dtype, size=remaining, infer_shape=False, element_shape=[None, *t.shape[1:]])
            for t in tf.nest.flatten(structure)
        ]

        def body(i, arrays):
            outputs = tf.nest.flatten(self.predict_step(next(iterator)))
            return i + 1, [a.write(i, t) for a, t in zip(arrays, outputs)]

        _, arrays = tf.while_loop(lambda i, _: i < remaining, body, (tf.constant(0), arrays))
        flat = [a.concat() for a in arrays]
        if first is not None:
            flat = [tf.concat([t, rest], axis=0) for t, rest in zip(first, flat)]
        return tf.nest.pack_sequence_as(structure, flat), self.metric_results()

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False, **kwargs):
        # `fit` validates through `evaluate`; the stacked model validates
        # through `validate`, which keeps the predictions as well.
        logs, _ = self.validate(x, callbacks if isinstance(callbacks, keras.callbacks.CallbackList) else None)
        return logs if return_dict else list(logs.values())

    def final_validation(self, dataset):
        """`validate(dataset)`'s logs and predictions with the copies' final
        weights: the last validation pass's, when no weight changed since."""
        last = self.last_validation
        if last is not None and last[2] == self.weights_digests():
            return last[0], last[1]
        return self.validate(dataset)

    def weights_digests(self) -> list[bytes]:
        """`tfcv._fold.weights_digest` of every copy."""
        return [weights_digest(model) for model in self.fold_models]

    def metric_results(self) -> dict:
        """Every copy's compiled metrics now, under `fold<i>:` names."""
        return {
            _PREFIX.format(i) + name: value
            for i, model in enumerate(self.fold_models)
            for name, value in model.get_metrics_result().items()
        }

    def _step(self, i, step, batch):
        """Copy `i`'s `step` (`train_step` or `validation_step`)
        on its batch, `(x, y)` or `(x, y, sample_weight)`: through the shared
        traced step when there is one."""
        import tensorflow as tf

        shared = self._shared_step(step, batch)
        if shared is None:
            return _STEPS[step](self.fold_models[i], batch)
        function, order = shared
        captures = _captures(self.fold_models[i])
        flat = tf.nest.flatten(batch, expand_composites=True)
        return _compat.call_with_captures(function, flat, [captures[p] for p in order])

    def _each_fold(self, data, step, *, gated):
        import tensorflow as tf

        logs = {}
        for i in range(len(self.fold_models)):
            shapes = {}

            def run(i=i, shapes=shapes):
                out = self._step(i, step, tuple(part[i] for part in data))
                out = {name: tf.convert_to_tensor(value) for name, value in out.items()}
                shapes.update({name: (value.shape, value.dtype) for name, value in out.items()})
                return out

            def skip(shapes=shapes):
                # Traced after `run`, so the structure of its logs is known.
                return {name: tf.zeros(shape, dtype) for name, (shape, dtype) in shapes.items()}

            out = tf.cond(self.active[i], run, skip) if gated else run()
            logs.update({_PREFIX.format(i) + name: value for name, value in out.items()})
        return logs

    def _shared_step(self, step, batch):
        """Fold 0's `step`, traced once, with what it captures listed as
        positions in `_captures`: calling it with another copy's variables
        and layer constants (an adapted Normalization layer's statistics) in
        those positions runs that copy's step. `None` when the step captures
        anything else; then each copy is traced."""
        import tensorflow as tf

        cache = self.__dict__.setdefault("_shared_steps", {})
        if step in cache:
            return cache[step]
        first = self.fold_models[0]
        states = [state_variables(model, metrics=True) for model in self.fold_models]
        shared = None
        if all(_same_layout(states[0], other) for other in states[1:]):
            def spec(t):
                return tf.TensorSpec([None] + list(t.shape[1:]), t.dtype)

            function = tf.function(lambda *parts: _STEPS[step](first, parts), autograph=False, reduce_retracing=True)
            concrete = function.get_concrete_function(*tf.nest.map_structure(spec, batch))
            positions = {id(c): p for p, c in enumerate(_captures(first))}
            order = [positions.get(id(c)) for c in concrete.captured_inputs]
            if None not in order and _compat.can_call_with_captures(concrete):
                shared = (concrete, order)
        cache[step] = shared
        return shared


def validation_step(model: keras.Model, batch):
    """`model.test_step(batch)` and the predictions `model.predict` would
    give: `(logs, y_pred)`.

    Keras' `test_step` hands its predictions to `compute_metrics`; reading
    them there keeps the model's `compute_loss` and metrics as they are.
    Those are `predict`'s predictions only when neither step is the model's
    own (an overridden `test_step` may hand over augmented or post-processed
    predictions, an overridden `predict_step` may answer other than `call`):
    otherwise the predictions come from `predict_step`, a second forward pass.
    """
    if type(model).test_step is not keras.Model.test_step or type(model).predict_step is not keras.Model.predict_step:
        return model.test_step(batch), model.predict_step(batch)
    seen = []
    compute_metrics = model.compute_metrics

    def keep_predictions(x, y, y_pred, sample_weight=None):
        seen.append(y_pred)
        return compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    model.compute_metrics = keep_predictions
    try:
        logs = model.test_step(batch)
    finally:
        del model.compute_metrics
    return logs, seen[-1]


_STEPS = {
    "train_step": lambda model, batch: model.train_step(batch),
    "validation_step": validation_step,
}


class _TestHooks(keras.callbacks.Callback):
    """`predict`'s batch hooks, passed on as `evaluate`'s test batch hooks
    (with the metrics so far, as `evaluate` gives them)."""

    def __init__(self, callbacks, stacked):
        super().__init__()
        self.callbacks = callbacks
        self.stacked = stacked

    def on_predict_batch_begin(self, batch, logs=None):
        self.callbacks.on_test_batch_begin(batch)

    def on_predict_batch_end(self, batch, logs=None):
        self.callbacks.on_test_batch_end(batch, self.stacked.metric_results())


def _captures(model) -> list:
    """What a traced step of `model` may capture, in an order that is the
    same for every copy of one architecture: its state variables' handles,
    then the eager tensors its layers hold as attributes."""
    import tensorflow as tf

    tensors = [
        value
        for layer in _compat.flatten_layers(model, include_self=False)
        for _, value in sorted(vars(layer).items(), key=lambda item: item[0])
        if isinstance(value, tf.Tensor) and hasattr(value, "numpy")
    ]
    return [_handle(v) for v in state_variables(model, metrics=True)] + tensors


def _same_layout(a, b) -> bool:
    return len(a) == len(b) and all(tuple(x.shape) == tuple(y.shape) and x.dtype == y.dtype for x, y in zip(a, b))


def _handle(variable):
    value = getattr(variable, "value", variable)
    return getattr(value, "handle", value)


def fold_logs(logs: dict, i: int) -> dict:
    """Fold `i`'s entries of the stacked logs, under their plain names."""
    prefix = _PREFIX.format(i)
    out = {}
    for key, value in (logs or {}).items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
        elif key.startswith("val_" + prefix):
            out["val_" + key[len("val_" + prefix):]] = value
    return out


class _FoldDispatcher(keras.callbacks.Callback):
    """Runs each fold's callbacks with that fold's logs during a stacked fit.

    Args:
        stacked: The `_StackedFolds` being trained.
        folds: The fold index of every copy, in stacked order.
        fold_callbacks: Shared `FoldCallback`s; `fold` and `model` are set
            before every call.
        own_callbacks: Per copy, the callbacks that belong to that fold only
            (per-fold copies of plain Keras callbacks, the epoch log, ...).
        stopped: Copies already stopped (when resuming).
        epoch_log: Where each epoch's per-fold logs are appended (the
            `FoldCheckpoint`, for resuming), or `None`.
    """

    def __init__(self, stacked, folds, fold_callbacks, own_callbacks, *, stopped=(), epoch_log=None):
        super().__init__()
        self.stacked = stacked
        self.folds = list(folds)
        self.fold_callbacks = list(fold_callbacks)
        self.own_callbacks = [list(cbs) for cbs in own_callbacks]
        self.running = [i not in set(stopped) for i in range(len(self.folds))]
        self.histories: list[dict[str, list[float]]] = [{} for _ in self.folds]
        self.stopped_epoch: list[int | None] = [None] * len(self.folds)
        self.epoch_log = epoch_log

    def _callbacks(self, i):
        for cb in self.fold_callbacks:
            cb.fold = self.folds[i]
            cb.set_model(self.stacked.fold_models[i])
        for cb in self.own_callbacks[i]:
            cb.set_model(self.stacked.fold_models[i])
        return self.fold_callbacks + self.own_callbacks[i]

    def _each_running(self, hook, *args, logs=None, per_fold_logs=True):
        for i in range(len(self.folds)):
            if self.running[i]:
                for cb in self._callbacks(i):
                    if per_fold_logs:
                        getattr(cb, hook)(*args, fold_logs(logs, i) if logs is not None else None)
                    else:
                        getattr(cb, hook)(*args)

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.stacked.active.assign(tf.constant(self.running))
        if not all(self.running):
            self.stacked.gate()
        for i in range(len(self.folds)):
            self.stacked.fold_models[i].stop_training = False
            for cb in self._callbacks(i):
                cb.set_params(self.params)
        self._each_running("on_train_begin", logs=logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._each_running("on_epoch_begin", epoch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._each_running("on_train_batch_begin", batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self._each_running("on_train_batch_end", batch, logs=logs)

    def needs_batch_hooks(self, hooks) -> bool:
        everything = self.fold_callbacks + [cb for cbs in self.own_callbacks for cb in cbs]
        return any_needs_batch_hooks(everything, hooks)

    def on_test_begin(self, logs=None):
        self._each_running("on_test_begin", logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._each_running("on_test_batch_begin", batch, logs=logs)

    def on_test_batch_end(self, batch, logs=None):
        self._each_running("on_test_batch_end", batch, logs=None if logs is None else scalar_scores(logs))

    def on_test_end(self, logs=None):
        self._each_running("on_test_end", logs=None if logs is None else scalar_scores(logs))

    def on_epoch_end(self, epoch, logs=None):
        # A metric whose result is an array gets one entry per element, as
        # `tfcv._fold.ScalarLogs` gives a sequential fold's callbacks.
        per_fold = {i: scalar_scores(fold_logs(logs, i)) for i in range(len(self.folds)) if self.running[i]}
        if self.epoch_log is not None:
            self.epoch_log.append({str(self.folds[i]): own for i, own in per_fold.items()})
        for i, own in per_fold.items():
            for name, value in own.items():
                self.histories[i].setdefault(name, []).append(value)
            for cb in self._callbacks(i):
                cb.on_epoch_end(epoch, dict(own))
            if getattr(self.stacked.fold_models[i], "stop_training", False):
                self._stop(i, epoch, own)
        if not any(self.running):
            self.stacked.stop_training = True

    def on_train_end(self, logs=None):
        for i in range(len(self.folds)):
            if self.running[i]:
                self._finish(i, {name: values[-1] for name, values in self.histories[i].items()})

    def _stop(self, i, epoch, logs):
        self.running[i] = False
        self.stopped_epoch[i] = epoch
        self.stacked.active[i].assign(False)
        self.stacked.gate()
        self._finish(i, logs)

    def _finish(self, i, logs):
        model = self.stacked.fold_models[i]
        for cb in self._callbacks(i):
            cb.on_train_end(dict(logs))
        # What Model.fit does last (exponential moving averages, ...).
        if isinstance(model.optimizer, keras.optimizers.Optimizer):
            model.optimizer.finalize_variable_values(model.trainable_weights)


# ------------------------------------------------------------- the driver


def fit_folds(settings, todo, seeds, source, *, fold_cbs, plain_cbs, snapshots, store, prebuilt) -> dict:
    """Trains the folds in `todo` side by side in one graph; returns their
    outcomes, each published (run directory, `on_fold_end`)."""
    arrays = isinstance(source, _ArraySource)
    models, fold_data, mixers = [], [], []
    for k in todo:
        # In-memory arrays are fed by array_datasets below, not per-fold pipelines.
        model, data = prepare_fold(settings, k, seeds[k], source, model=prebuilt.pop(k, None), pipelines=not arrays)
        models.append(model)
        fold_data.append(data)
        mixers.append(batch_mixer(settings.build_fn, seeds[k]))
    _check_independent(models, todo)

    import tensorflow as tf

    active = tf.Variable([True] * len(todo), trainable=False, dtype=tf.bool, name="active")
    own = [[fold_copy(cb, snapshot) for cb, snapshot in zip(plain_cbs, snapshots)] for _ in todo]
    backup_dir = None if store is None else store.backup_dir("stacked-" + "-".join(map(str, todo)))
    initial_epoch, previous = 0, [[] for _ in todo]
    checkpoint = None
    if backup_dir is not None:
        variables = [v for model in models for v in state_variables(model)] + [active]
        checkpoint = FoldCheckpoint(
            backup_dir, variables, lambda: [cb for i, k in enumerate(todo) for cb in keras_states(own[i] + fold_cbs, k)],
            own_logs=False,
        )
        initial_epoch = checkpoint.restore(max_epochs=settings.epochs)
        previous = [[epoch[str(k)] for epoch in checkpoint.logs if str(k) in epoch] for k in todo]
    # The folds that had stopped before the backup stay stopped.
    stopped = [i for i, running in enumerate(active.numpy()) if not running]

    val_batch_size = settings.adapt_batch_size
    if arrays:
        train, steps, val = array_datasets(
            source, todo, seeds, val_batch_size=val_batch_size, mixers=mixers, initial_epoch=initial_epoch
        )
    else:
        train, steps, val = stream_datasets(
            fold_data, todo, mixers=mixers, val_batch_size=val_batch_size, initial_epoch=initial_epoch
        )

    # Create every copy's metric variables now, so the copies share one
    # traced step (see _StackedFolds._shared_step).
    xs, ys = val.element_spec[:2]
    specs = [(xs[i], ys[i]) for i in range(len(models))]
    if all(spec == specs[0] for spec in specs):
        _compat.symbolic_build_alike(models, specs[0])
    else:
        for model, spec in zip(models, specs):
            build_metrics(model, spec)
    stacked = _StackedFolds(models, active=active)
    extra = fault_injection()
    everything = fold_cbs + extra + [cb for cbs in own for cb in cbs]
    stacked.compile(optimizer=None, steps_per_execution=1 if any_needs_batch_hooks(everything) else steps)
    dispatcher = _FoldDispatcher(stacked, todo, fold_cbs, own, stopped=stopped, epoch_log=checkpoint)
    keras_callbacks = [dispatcher] + extra + ([checkpoint] if checkpoint is not None else [])

    for i, (k, data) in enumerate(zip(todo, fold_data)):
        begin_fold(fold_cbs, k, models[i], seeds[k], data, initial_epoch, previous[i])
    start = time.monotonic()
    stacked.fit(train, validation_data=val, epochs=settings.epochs, steps_per_epoch=steps, callbacks=keras_callbacks,
                shuffle=False, verbose=0, initial_epoch=initial_epoch)
    seconds = time.monotonic() - start

    # Score every fold, including those that stopped early (a stopped fold's
    # validation was never gated).
    compiled, predictions = stacked.final_validation(val)
    predict_seconds = (time.monotonic() - start - seconds) / len(todo)
    outcomes = {}
    for i, (k, data) in enumerate(zip(todo, fold_data)):
        outcome = finish_fold(
            k, seeds[k], models[i], data, settings, fold_logs(compiled, i), predictions[i],
            history=_merge_history(previous[i], dispatcher.histories[i]),
            info={"seconds": seconds, "initial_epoch": initial_epoch, "strategy": "stacked", "stacked_folds": list(todo),
                  "predict_seconds": predict_seconds},
        )
        publish_fold(k, outcome, store, fold_cbs)
        outcomes[k] = outcome
    if store is not None:
        store.remove_backup("stacked-" + "-".join(map(str, todo)))
    return outcomes


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
