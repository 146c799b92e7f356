"""Fold-aware callbacks, and plain Keras callbacks used per fold."""

from __future__ import annotations

import csv
import glob
import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcv
from tests.conftest import tiny_classifier
from tfcv.callbacks import (
    FoldCallback,
    FoldCSVLogger,
    FoldModelCheckpoint,
    FoldProgress,
    FoldTensorBoard,
)


class Recorder(FoldCallback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_cv_begin(self, logs=None):
        self.events.append(("cv_begin", self.num_folds, logs["epochs"]))

    def on_fold_begin(self, fold, logs=None):
        self.events.append(("fold_begin", fold, self.fold, self.model is not None))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch", self.fold, epoch))

    def on_fold_end(self, fold, logs=None):
        self.events.append(("fold_end", fold, round(logs["accuracy"], 6), logs["loaded"]))

    def on_cv_end(self, logs=None):
        self.events.append(("cv_end", round(logs["accuracy"], 6)))


@pytest.fixture(scope="module")
def xy(small_digits):
    x, y = small_digits
    return x[:300], y[:300]


def test_fold_hooks_are_called_in_order(xy):
    x, y = xy
    rec = Recorder()
    cv = tfcv.CrossValidator(tiny_classifier, folds=2, strategy="sequential")
    result = cv.fit(x, y, epochs=2, callbacks=[rec], verbose=0)
    acc = [round(a, 6) for a in result.scores["accuracy"]]
    assert rec.events == [
        ("cv_begin", 2, 2),
        ("fold_begin", 0, 0, True), ("epoch", 0, 0), ("epoch", 0, 1), ("fold_end", 0, acc[0], False),
        ("fold_begin", 1, 1, True), ("epoch", 1, 0), ("epoch", 1, 1), ("fold_end", 1, acc[1], False),
        ("cv_end", round(result.mean("accuracy"), 6)),
    ]


class StopAfterTotalEpochs(keras.callbacks.Callback):
    """A plain Keras callback whose counter would leak across folds if its
    state were not reset: it never resets itself in on_train_begin."""

    def __init__(self, n):
        super().__init__()
        self.n = n
        self.seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen >= self.n:
            self.model.stop_training = True



def test_one_callback_is_taken_as_keras_fit_takes_it_and_a_non_list_is_refused(xy):
    x, y = xy
    rec = Recorder()
    tfcv.CrossValidator(tiny_classifier, folds=2, strategy="sequential").fit(x, y, epochs=1, callbacks=rec, verbose=0)
    assert [e[0] for e in rec.events if e[0] != "epoch"] == ["cv_begin", "fold_begin", "fold_end", "fold_begin", "fold_end", "cv_end"]
    with pytest.raises(TypeError, match="callbacks=5 of type int. Expected a list of keras.callbacks.Callback"):
        tfcv.CrossValidator(tiny_classifier, folds=2).fit(x, y, epochs=1, callbacks=5, verbose=0)

def test_plain_callback_state_never_leaks_between_folds(xy):
    x, y = xy
    stopper = StopAfterTotalEpochs(2)
    result = tfcv.CrossValidator(tiny_classifier, folds=3).fit(x, y, epochs=5, callbacks=[stopper], verbose=0)
    assert [len(h["loss"]) for h in result.histories] == [2, 2, 2]


def test_early_stopping_in_fold_0_does_not_stop_fold_1(xy):
    x, y = xy
    # Fold 0 trains on one class only, so its val_loss on all ten classes
    # gets worse and EarlyStopping stops it; fold 1 trains on everything and
    # keeps improving.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    val0, val1 = order[:100], order[100:200]
    train0 = np.setdiff1d(np.nonzero(y == 0)[0], val0)
    train1 = np.setdiff1d(np.arange(len(x)), val1)
    plan = tfcv.FoldPlan([(train0, val0), (train1, val1)], fingerprint=tfcv.folds.data_fingerprint(x, y))
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)

    def slow_learner():
        model = tiny_classifier()
        model.optimizer.learning_rate.assign(3e-4)
        return model

    result = tfcv.CrossValidator(slow_learner, folds=plan).fit(x, y, epochs=6, callbacks=[stopper], verbose=0)
    epochs_run = [len(h["loss"]) for h in result.histories]
    assert epochs_run[0] < 6, epochs_run
    assert epochs_run[1] == 6, epochs_run


def test_fold_model_checkpoint_writes_and_loads_per_fold(xy, tmp_path):
    x, y = xy
    ckpt = FoldModelCheckpoint(str(tmp_path / "ckpt" / "fold{fold}" / "e{epoch:02d}.keras"))
    best = FoldModelCheckpoint(str(tmp_path / "best_{fold:02d}.keras"), monitor="val_accuracy", mode="max", save_best_only=True)
    result = tfcv.CrossValidator(tiny_classifier, folds=2).fit(x, y, epochs=2, callbacks=[ckpt, best], verbose=0)
    for k in range(2):
        files = sorted(os.listdir(tmp_path / "ckpt" / f"fold{k}"))
        assert files == ["e01.keras", "e02.keras"]
        model = keras.saving.load_model(tmp_path / f"best_{k:02d}.keras")
        acc = (model.predict(x[result.plan.folds[k][1]], verbose=0).argmax(1) == y[result.plan.folds[k][1]]).mean()
        assert acc == pytest.approx(max(result.histories[k]["val_accuracy"]), abs=1e-6)
    with pytest.raises(ValueError, match="filepath"):
        FoldModelCheckpoint(str(tmp_path / "bad.txt"))


def _scalars(event_dir):
    values = {}
    for path in glob.glob(os.path.join(event_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                array = tf.make_ndarray(v.tensor)
                if array.dtype.kind == "f" and array.ndim == 0:  # scalars, not the model-config text
                    values.setdefault(v.tag, {})[event.step] = float(array)
    return values


def test_fold_tensorboard_logs_each_fold_and_the_cv_mean(xy, tmp_path):
    x, y = xy
    log_dir = tmp_path / "tb"
    result = tfcv.CrossValidator(tiny_classifier, folds=2).fit(
        x, y, epochs=3, callbacks=[FoldTensorBoard(str(log_dir))], verbose=0
    )
    for k in range(2):
        val = _scalars(log_dir / f"fold_{k}" / "validation")
        np.testing.assert_allclose(
            [val["epoch_accuracy"][e] for e in range(3)], result.histories[k]["val_accuracy"], rtol=1e-6
        )
        assert "epoch_loss" in _scalars(log_dir / f"fold_{k}" / "train")
    cv = _scalars(log_dir / "cv")
    expected = np.mean([h["val_accuracy"] for h in result.histories], axis=0)
    np.testing.assert_allclose([cv["val_accuracy_mean"][e] for e in range(3)], expected, rtol=1e-6)
    assert set(cv["val_accuracy_std"]) == {0, 1, 2}


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_fold_csv_logger_has_one_row_per_fold_and_epoch(xy, tmp_path, strategy):
    x, y = xy
    path = tmp_path / "log.csv"
    cv = tfcv.CrossValidator(tiny_classifier, folds=3, strategy=strategy)
    result = cv.fit(x, y, epochs=2, callbacks=[FoldCSVLogger(str(path))], verbose=0)
    rows = list(csv.DictReader(path.open()))
    order = [(int(r["fold"]), int(r["epoch"])) for r in rows]
    blocks = [(k, e) for k in range(3) for e in range(2)]
    # One block per fold when the folds train in turn; side by side, epoch by epoch.
    assert order == (blocks if strategy == "sequential" else sorted(blocks, key=lambda ke: (ke[1], ke[0])))
    for r in rows:
        assert float(r["val_accuracy"]) == pytest.approx(result.histories[int(r["fold"])]["val_accuracy"][int(r["epoch"])])


def test_fold_progress_plain_lines_with_time_left(xy):
    x, y = xy
    out = io.StringIO()
    cv = tfcv.CrossValidator(tiny_classifier, folds=2, strategy="sequential")
    cv.fit(x, y, epochs=2, callbacks=[FoldProgress(out)], verbose=0)
    lines = out.getvalue().splitlines()
    epoch_lines = [line for line in lines if line.startswith("fold ")]
    assert [line.split(" [")[0] for line in epoch_lines] == [
        "fold 1/2 epoch 1/2", "fold 1/2 epoch 2/2", "fold 2/2 epoch 1/2", "fold 2/2 epoch 2/2",
    ]
    assert all("elapsed" in line and "left" in line and "val_accuracy" in line for line in epoch_lines)
    assert "100%" in epoch_lines[-1] and "left 0:00" in epoch_lines[-1]
    assert any(line.startswith("Fold 2/2 done: accuracy") for line in lines)
    assert "\r" not in out.getvalue()


def test_fold_progress_redraws_on_a_terminal(xy):
    x, y = xy
    out = io.StringIO()
    tfcv.CrossValidator(tiny_classifier, folds=2).fit(x, y, epochs=1, callbacks=[FoldProgress(out, dynamic=True)], verbose=0)
    assert "\r\033[K" in out.getvalue()


# --------------------------------------------- callbacks across a resume


class _Crash(FoldCallback):
    """Raises once: at the end of epoch `epoch` of fold `fold`, or (with
    `epoch=None`) when fold `fold`'s training ends, after its last backup."""

    def __init__(self, fold, epoch):
        super().__init__()
        self.at = (fold, epoch)
        self.crashed = False

    def _maybe_crash(self, epoch):
        if not self.crashed and (self.fold, epoch) == self.at:
            self.crashed = True
            raise RuntimeError("simulated crash")

    def on_epoch_end(self, epoch, logs=None):
        self._maybe_crash(epoch)

    def on_train_end(self, logs=None):
        self._maybe_crash(None)


def _fit_with_stateful_callbacks(x, y, strategy, run_dir, extra=()):
    # mode="max" on val_loss: the first epoch sets a best value that no later
    # epoch beats (val_loss falls), so a callback that forgot it on resume
    # acts at once: EarlyStopping keeps training (and restores other
    # weights), ModelCheckpoint overwrites the best file.
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="max", patience=2, restore_best_weights=True)
    best = FoldModelCheckpoint(str(run_dir) + "-best{fold}.weights.h5", monitor="val_loss", mode="max",
                               save_best_only=True, save_weights_only=True)
    cv = tfcv.CrossValidator(tiny_classifier, folds=2, seed=0, strategy=strategy)
    return cv.fit(x, y, epochs=5, run_dir=run_dir, callbacks=[stopper, best, *extra], verbose=0)


def _best_weights(path):
    model = tiny_classifier()
    model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return model.get_weights()


@pytest.fixture(scope="module")
def uninterrupted(small_digits, tmp_path_factory):
    x, y = small_digits[0][:150], small_digits[1][:150]
    runs = {}
    for strategy in ("sequential", "stacked"):
        run_dir = tmp_path_factory.mktemp("straight") / strategy
        runs[strategy] = (_fit_with_stateful_callbacks(x, y, strategy, run_dir), run_dir)
    return x, y, runs


@pytest.mark.parametrize(("strategy", "epoch"), [("sequential", 1), ("stacked", 1), ("sequential", None)])
def test_keras_callback_state_survives_a_resume(uninterrupted, tmp_path, strategy, epoch):
    x, y, runs = uninterrupted
    straight, straight_dir = runs[strategy]
    assert [len(h["loss"]) for h in straight.histories] == [3, 3]  # EarlyStopping stopped both folds
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit_with_stateful_callbacks(x, y, strategy, run_dir, extra=[_Crash(1, epoch)])
    resumed = _fit_with_stateful_callbacks(x, y, strategy, run_dir)
    assert resumed.fold_info[1]["initial_epoch"] == {1: 2 if strategy == "sequential" else 1, None: 3}[epoch]
    # FoldModelCheckpoint's best value: the best file is the uninterrupted run's.
    for k in range(2):
        got, want = (_best_weights(f"{d}-best{k}.weights.h5") for d in (run_dir, straight_dir))
        assert all(np.array_equal(a, b) for a, b in zip(got, want)), f"fold {k}'s best file was overwritten"
    # EarlyStopping's counters (when it stops) and best weights (what it restores).
    assert resumed.histories == straight.histories
    assert resumed.scores == straight.scores
    np.testing.assert_array_equal(resumed.oof_predictions, straight.oof_predictions)
