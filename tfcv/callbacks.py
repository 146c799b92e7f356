"""Fold-aware Keras callbacks.

`FoldCallback` is a `keras.callbacks.Callback` that the cross-validator also
tells about folds: `on_cv_begin`, `on_fold_begin`, `on_fold_end`,
`on_cv_end`. Plain Keras callbacks passed to `CrossValidator.fit` work too:
their state is reset before every fold so nothing leaks between folds.
"""

from __future__ import annotations

import copy
import csv
import os
import re
import sys
import time
import warnings
from typing import IO, Any

import keras
import numpy as np

from tfcv import _compat

__all__ = ["FoldCallback", "FoldProgress", "FoldModelCheckpoint", "FoldTensorBoard", "FoldCSVLogger"]


class FoldCallback(keras.callbacks.Callback):
    """Base class of fold-aware callbacks.

    During cross-validation `self.fold` is the index of the fold being
    trained (from 0) and `self.num_folds` the number of folds. Every Keras
    hook (`on_epoch_end`, ...) is called as usual inside each fold; the
    cross-validator adds four hooks around them.

    Example:

    ```python
    class PrintFolds(tfcv.callbacks.FoldCallback):
        def on_fold_end(self, fold, logs=None):
            print(f"fold {fold + 1}/{self.num_folds}: {logs['accuracy']:.3f}")
    ```
    """

    def __init__(self):
        super().__init__()
        self.fold: int | None = None
        self.num_folds: int | None = None
        # fold -> History.history of every fold finished so far (including
        # folds loaded from a run directory and the epochs a resumed fold
        # already ran), kept up to date by the cross-validator.
        self.histories: dict[int, dict[str, list[float]]] = {}

    def on_cv_begin(self, logs: dict | None = None) -> None:
        """Called once before the first fold. `logs` holds `num_folds`,
        `epochs` and `finished_folds` (folds loaded from a run directory)."""

    def on_fold_begin(self, fold: int, logs: dict | None = None) -> None:
        """Called before fold `fold` trains. `logs` holds `seed`, `n_train`,
        `n_val` and `initial_epoch` (above 0 when resuming)."""

    def on_fold_end(self, fold: int, logs: dict | None = None) -> None:
        """Called after fold `fold` is scored. `logs` holds the fold's
        validation scores and `loaded` (`True` if read from a run directory
        instead of trained)."""

    def on_cv_end(self, logs: dict | None = None) -> None:
        """Called once after the last fold. `logs` maps each metric to its
        mean over the folds."""


def _format_seconds(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class FoldProgress(FoldCallback):
    """One progress display across folds x epochs, with time left.

    On a terminal it redraws one line per fold while the fold trains; when
    output is not a terminal (a log file, CI) it prints one plain line per
    epoch. Both show the fold, the epoch, the latest metrics, the elapsed
    time and an estimate of the time left (from the epochs done so far).

    Args:
        stream: File to write to. Defaults to `sys.stdout`.
        dynamic: `bool` or `None`. Redraw one line (`True`) or print plain
            lines (`False`). Defaults to `None`: redraw only on a terminal.
        metrics: Metric names to show. Defaults to `None`: `loss` and every
            `val_` metric.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        dynamic: bool | None = None,
        metrics: list[str] | None = None,
    ):
        super().__init__()
        self.stream = stream
        self.dynamic = dynamic
        self.metrics = metrics
        self._epochs = 1
        self._steps = None

    # The stream is resolved lazily so that a pickled or deep-copied
    # callback never holds a file object.
    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdout

    def _is_dynamic(self) -> bool:
        if self.dynamic is not None:
            return self.dynamic
        out = self._out()
        return bool(getattr(out, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"

    def on_cv_begin(self, logs=None):
        logs = logs or {}
        self._epochs = int(logs.get("epochs", 1))
        finished = len(logs.get("finished_folds", []))
        self._todo = max((self.num_folds - finished) * self._epochs, 1)
        self._done = 0
        self._start = time.monotonic()
        if logs.get("strategy"):
            self._write(f"Strategy: {logs['strategy']} ({logs.get('strategy_reason', '')}).\n")
        if finished:
            self._write(f"Resuming: {finished} of {self.num_folds} folds already finished.\n")

    def on_fold_begin(self, fold, logs=None):
        logs = logs or {}
        initial = int(logs.get("initial_epoch", 0))
        if initial:
            self._todo = max(self._todo - initial, 1)
            self._write(f"Fold {fold + 1}/{self.num_folds}: resuming at epoch {initial + 1}.\n")

    def on_train_begin(self, logs=None):
        self._steps = self.params.get("steps") if self.params else None

    def needs_batch_hooks(self, hooks) -> bool:
        # Redrawing once per epoch is enough when batches run in one call.
        return False

    def on_train_batch_end(self, batch, logs=None):
        if self._is_dynamic() and self._steps:
            fraction = (batch + 1) / self._steps
            self._line(self._epoch, logs or {}, fraction, final=False)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._done += 1
        self._line(epoch, logs or {}, 1.0, final=not self._is_dynamic())

    def on_fold_end(self, fold, logs=None):
        logs = dict(logs or {})
        loaded = logs.pop("loaded", False)
        shown = _format_logs(logs, [k for k in ("accuracy", "f1", "loss", "mse", "mae") if k in logs])
        end = "\n"
        prefix = "\r\033[K" if self._is_dynamic() and not loaded else ""
        status = "loaded from run directory" if loaded else "done"
        self._write(f"{prefix}Fold {fold + 1}/{self.num_folds} {status}: {shown}{end}")

    def on_cv_end(self, logs=None):
        self._write(f"Cross-validation finished in {_format_seconds(time.monotonic() - self._start)}.\n")

    def _line(self, epoch, logs, fraction, *, final):
        elapsed = time.monotonic() - self._start
        done = self._done - 1 + fraction if fraction < 1 else self._done
        eta = elapsed / done * (self._todo - done) if done > 0 else float("nan")
        names = self.metrics or ["loss"] + [k for k in logs if k.startswith("val_")]
        width = 20
        filled = int(round(width * min(done / self._todo, 1.0)))
        bar = "#" * filled + "." * (width - filled)
        eta_text = _format_seconds(eta) if eta == eta else "?"
        text = (
            f"fold {self.fold + 1}/{self.num_folds} epoch {epoch + 1}/{self._epochs} "
            f"[{bar}] {100 * done / self._todo:3.0f}% {_format_logs(logs, names)} "
            f"elapsed {_format_seconds(elapsed)} left {eta_text}"
        )
        if final:
            self._write(text + "\n")
        else:
            self._write("\r\033[K" + text)

    def _write(self, text: str) -> None:
        out = self._out()
        out.write(text)
        out.flush()


def _format_logs(logs: dict[str, Any], names: list[str]) -> str:
    parts = []
    for name in names:
        value = logs.get(name)
        if isinstance(value, (int, float)) or hasattr(value, "__float__"):
            parts.append(f"{name} {float(value):.4f}")
    return " ".join(parts)


TEST_BATCH_HOOKS = ("on_test_batch_begin", "on_test_batch_end")
BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end", *TEST_BATCH_HOOKS)

# Keras callbacks that override the batch hooks but only act on them when
# asked to act per batch.
_EPOCH_LEVEL = {
    keras.callbacks.ModelCheckpoint: lambda cb: cb.save_freq == "epoch",
    keras.callbacks.BackupAndRestore: lambda cb: cb.save_freq == "epoch",
    keras.callbacks.TensorBoard: lambda cb: cb.update_freq == "epoch" and not _compat.tensorboard_profiles_batches(cb),
}


def _needs_batch_hooks(cb: keras.callbacks.Callback, hooks=BATCH_HOOKS) -> bool:
    """Whether `cb` must see every training or validation batch (every call
    of one of `hooks`). When no callback does, the cross-validator runs a
    whole epoch per `steps_per_execution` call (one graph call instead of
    one per batch), and Keras then calls the batch hooks once per call.

    A callback may answer for itself with a `needs_batch_hooks(hooks)`
    method (the progress bar redraws once per epoch; a per-fold wrapper
    answers for the Keras callback it wraps)."""
    if hasattr(cb, "needs_batch_hooks"):
        return bool(cb.needs_batch_hooks(hooks))
    for cls, epoch_level in _EPOCH_LEVEL.items():
        if isinstance(cb, cls):
            return not epoch_level(cb)
    return overrides_any(cb, hooks)


def overrides_any(cb: keras.callbacks.Callback, hooks) -> bool:
    """Whether `cb`'s class overrides any of the Keras callback `hooks`."""
    return any(getattr(type(cb), hook) is not getattr(keras.callbacks.Callback, hook) for hook in hooks)


_KERAS_HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)


class _PerFoldKerasCallback(FoldCallback):
    """Runs a fresh Keras callback in every fold, so nothing leaks between
    folds (best values, counters, writers), and forwards the Keras hooks.
    A resumed fold's Keras callback gets its state back from the fold's
    backup (see `keras_states`)."""

    def _make(self, fold: int) -> keras.callbacks.Callback:
        raise NotImplementedError

    # One inner callback per fold, so that folds trained side by side (the
    # stacked strategy) each keep their own; `fold` selects which one a hook
    # reaches.
    @property
    def _inner(self):
        return self.keras_callback(self.fold)

    def on_fold_begin(self, fold, logs=None):
        inner = self._make(fold)
        inner.set_model(self.model)
        inner.set_params(self.params or {})
        self.__dict__.setdefault("_inners", {})[fold] = inner

    def keras_callback(self, fold: int) -> keras.callbacks.Callback | None:
        """The Keras callback of fold `fold` (`None` before the fold begins)."""
        return self.__dict__.get("_inners", {}).get(fold)

    def needs_batch_hooks(self, hooks) -> bool:
        return _needs_batch_hooks(self._make(0), hooks)

    def set_params(self, params):
        super().set_params(params)
        if getattr(self, "_inner", None) is not None:
            self._inner.set_params(params)

    def set_model(self, model):
        super().set_model(model)
        if getattr(self, "_inner", None) is not None:
            self._inner.set_model(model)


def _forward(hook):
    def method(self, *args, **kwargs):
        inner = getattr(self, "_inner", None)
        if inner is not None:
            getattr(inner, hook)(*args, **kwargs)

    method.__name__ = hook
    return method


for _hook in _KERAS_HOOKS:
    setattr(_PerFoldKerasCallback, _hook, _forward(_hook))

_FOLD_FIELD = re.compile(r"\{fold(:[^}]*)?\}")


def _format_fold(template: str, fold: int) -> str:
    """Fills `{fold}` (and `{fold:02d}`, ...) and leaves every other
    placeholder, such as Keras' `{epoch}`, for Keras to fill."""
    return _FOLD_FIELD.sub(lambda m: format(fold, (m.group(1) or ":")[1:]), template)


class FoldModelCheckpoint(_PerFoldKerasCallback):
    """`keras.callbacks.ModelCheckpoint` per fold.

    `filepath` may contain `{fold}` (0-based; `{fold:02d}` works too) and
    every placeholder Keras' `ModelCheckpoint` fills (`{epoch}`,
    `{val_loss:.3f}`, ...). The best value tracked by `save_best_only`
    starts afresh in every fold, and a fold resumed from a run directory
    continues from the best value of its epochs already done.

    Args:
        filepath: `str`. Where to save; must end in `.keras` (whole model)
            or `.weights.h5` (with `save_weights_only=True`).
        **kwargs: Any `keras.callbacks.ModelCheckpoint` argument (`monitor`,
            `save_best_only`, `mode`, `save_freq`, ...).

    Example:

    ```python
    ckpt = tfcv.callbacks.FoldModelCheckpoint(
        "ckpt/fold{fold}/best.keras", monitor="val_accuracy", save_best_only=True)
    cv.fit(x, y, epochs=20, callbacks=[ckpt])
    ```
    """

    def __init__(self, filepath: str, **kwargs):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.kwargs = kwargs
        # Let Keras validate the arguments now, before any training.
        keras.callbacks.ModelCheckpoint(_format_fold(self.filepath, 0), **kwargs)

    def _make(self, fold):
        return keras.callbacks.ModelCheckpoint(_format_fold(self.filepath, fold), **self.kwargs)

    def __repr__(self):
        return f"FoldModelCheckpoint(filepath={self.filepath!r}, {', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"


class FoldTensorBoard(_PerFoldKerasCallback):
    """`keras.callbacks.TensorBoard` per fold, plus a cross-validation run.

    Fold `k` logs to `log_dir/fold_k` (Keras' `train` and `validation`
    runs), so TensorBoard overlays the folds' curves. When the last fold
    ends, `log_dir/cv` receives, for every validation metric, its mean and
    standard deviation over the folds at each epoch (`val_accuracy_mean`,
    `val_accuracy_std`, ...; an epoch counts the folds that reached it).

    Args:
        log_dir: `str`. Root directory of the logs.
        **kwargs: Any `keras.callbacks.TensorBoard` argument.
    """

    def __init__(self, log_dir: str = "logs", **kwargs):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.kwargs = kwargs

    def _make(self, fold):
        return keras.callbacks.TensorBoard(os.path.join(self.log_dir, f"fold_{fold}"), **self.kwargs)

    def on_cv_end(self, logs=None):
        import tensorflow as tf

        histories = [self.histories[k] for k in sorted(self.histories)]
        names = sorted({n for h in histories for n in h if n.startswith("val_")})
        writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "cv"))
        with writer.as_default():
            for name in names:
                curves = [h[name] for h in histories if name in h]
                for epoch in range(max(len(c) for c in curves)):
                    values = [c[epoch] for c in curves if epoch < len(c)]
                    tf.summary.scalar(f"{name}_mean", float(np.mean(values)), step=epoch)
                    tf.summary.scalar(f"{name}_std", float(np.std(values)), step=epoch)
        writer.close()


class FoldCSVLogger(FoldCallback):
    """Streams every epoch of every fold to one CSV file with a `fold` column.

    Columns: `fold`, `epoch`, then the metrics of the first epoch logged
    (sorted). Rows of folds loaded from a run directory, and the epochs a
    resumed fold already ran, are written from their stored history. When
    the folds train one after the other, the file holds one block per fold
    in fold order; with `strategy="stacked"` they train side by side and
    their rows interleave epoch by epoch (sort by `fold`, `epoch` for
    blocks).

    Args:
        filename: `str`. Path of the CSV file (rewritten at the start of
            every cross-validation).
        separator: `str`. Field separator. Defaults to `","`.
    """

    def __init__(self, filename: str, separator: str = ","):
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self._keys: list[str] | None = None

    def on_cv_begin(self, logs=None):
        directory = os.path.dirname(os.path.abspath(self.filename))
        os.makedirs(directory, exist_ok=True)
        self._keys = None
        with open(self.filename, "w", newline="", encoding="utf-8"):
            pass
        self._written_folds: set[int] = set()

    def on_fold_begin(self, fold, logs=None):
        self._written_folds.add(fold)
        for epoch, row in enumerate(_rows(self.histories.get(fold, {}))):
            self._append(fold, epoch, row)

    def on_epoch_end(self, epoch, logs=None):
        self._append(self.fold, epoch, logs or {})

    def on_fold_end(self, fold, logs=None):
        if fold not in self._written_folds:
            self._written_folds.add(fold)
            for epoch, row in enumerate(_rows(self.histories.get(fold, {}))):
                self._append(fold, epoch, row)

    def _append(self, fold, epoch, logs):
        if self._keys is None:
            self._keys = sorted(logs)
            new_file = True
        else:
            new_file = False
        with open(self.filename, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if new_file:
                writer.writerow(["fold", "epoch", *self._keys])
            writer.writerow([fold, epoch, *(_csv_value(logs.get(k, "")) for k in self._keys)])


def _rows(history: dict[str, list[float]]) -> list[dict[str, float]]:
    n = max((len(v) for v in history.values()), default=0)
    return [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(n)]


def _csv_value(value):
    return float(value) if isinstance(value, (int, float, np.floating, np.integer)) or hasattr(value, "__float__") else value


# ------------------------------------------- callbacks across the folds
# How the cross-validator hands callbacks to the folds: fold-aware ones get
# the fold hooks; plain Keras ones start every fold from their pre-run state.


def split_callbacks(callbacks, verbose):
    if isinstance(callbacks, keras.callbacks.Callback):
        # Keras' fit takes one callback as well as a list.
        callbacks = [callbacks]
    try:
        callbacks = list(callbacks or [])
    except TypeError:
        raise TypeError(
            f"Invalid value for argument `callbacks`. Received: callbacks={callbacks!r} of type "
            f"{type(callbacks).__name__}. Expected a list of keras.callbacks.Callback instances."
        ) from None
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


def snapshot_state(cb):
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


def restore_state(cb, snapshot):
    if snapshot is not None:
        vars(cb).update(copy.deepcopy(snapshot))


def call_hook(callbacks, hook, *args):
    for cb in callbacks:
        getattr(cb, hook)(*args)


def fold_copy(cb, snapshot):
    """A copy of plain callback `cb` in its pre-run state, for one fold of a
    stacked run."""
    if snapshot is None:
        return cb
    twin = copy.copy(cb)
    vars(twin).update(copy.deepcopy(snapshot))
    return twin


def holds_keras_state(cb) -> bool:
    """Whether `cb`'s Keras state (best values, counters, ...) decides the
    rest of a fold, and so is backed up with it: plain Keras callbacks and
    the per-fold Keras callbacks (`FoldModelCheckpoint`, ...)."""
    return not isinstance(cb, FoldCallback) or isinstance(cb, _PerFoldKerasCallback)


def keras_states(callbacks, fold: int) -> list:
    """The Keras callbacks whose state a backup of fold `fold` holds, in
    `callbacks`' order: each plain Keras callback itself, and the fold's own
    Keras callback inside each per-fold one."""
    states = []
    for cb in callbacks:
        if isinstance(cb, _PerFoldKerasCallback):
            inner = cb.keras_callback(fold)
            if inner is not None:
                states.append(inner)
        elif not isinstance(cb, FoldCallback):
            states.append(cb)
    return states


def any_needs_batch_hooks(callbacks, hooks=BATCH_HOOKS) -> bool:
    """Whether any of `callbacks` must see every call of one of the batch
    `hooks` (`TEST_BATCH_HOOKS`: every validation batch)."""
    return any(_needs_batch_hooks(cb, hooks) for cb in callbacks)
