"""Fold-aware Keras callbacks.

`FoldCallback` is a `keras.callbacks.Callback` that the cross-validator also
tells about folds: `on_cv_begin`, `on_fold_begin`, `on_fold_end`,
`on_cv_end`. Plain Keras callbacks passed to `CrossValidator.fit` work too:
their state is reset before every fold so nothing leaks between folds.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

import keras

__all__ = ["FoldCallback", "FoldProgress"]


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
