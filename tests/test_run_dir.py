"""The run directory: exact resume after a kill at any point, files checked
before they are trusted, no writes through links, one writer at a time, the
user's umask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfcv
from tests.conftest import tfcv_in_process, tiny_classifier
from tfcv._run_dir import _DirectoryLock, load_test_set, save_test_set
from tfcv.layers import BatchMixer
from tfcv.metrics import ClassAccuracy, ClassCrossentropy

# A run with every source of randomness a fold checkpoint must carry:
# augmentation and dropout draw from random generators, BatchNormalization
# keeps moving statistics, Adam keeps moments, the data order is reshuffled
# every epoch.
SCRIPT = textwrap.dedent('''
    import json, sys
    import keras, numpy as np
    import tfcv

    def build():
        inputs = keras.Input((8, 8, 1))
        h = tfcv.layers.Augmentation([{"rotate": 0.05}, {"translate": 0.1}], seed=1)(inputs)
        h = keras.layers.Conv2D(8, 3, padding="same")(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Activation("relu")(h)
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dropout(0.3)(h)
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    x, y = tfcv.datasets.load_digits()
    result = tfcv.CrossValidator(build, folds=3, seed=3, strategy=sys.argv[2]).fit(
        x[:360], y[:360], epochs=3, batch_size=32, run_dir=sys.argv[1], verbose=2)
    np.save(sys.argv[1] + "-oof.npy", result.oof_predictions)
    print("DONE", json.dumps(result.scores), flush=True)
''')


def run_script(tmp_path, run_dir, strategy, *, fault=None, kill_on=None):
    script = tmp_path / "cv_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("TFCV_FAULT", None)
    if fault:
        env["TFCV_FAULT"] = fault
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), strategy], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_on and line.startswith(kill_on):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=600)
    return proc.returncode, "".join(lines), proc.stderr.read()


def scores_of(out):
    done = [line for line in out.splitlines() if line.startswith("DONE ")]
    assert done, out
    return json.loads(done[-1][5:])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """`uninterrupted(strategy)`: the scores and out-of-fold predictions of
    the script run to the end, run once per strategy for all the kills."""
    runs = {}

    def run(strategy):
        if strategy not in runs:
            directory = tmp_path_factory.mktemp(f"uninterrupted-{strategy}")
            code, out, err = run_script(directory, directory / "run", strategy)
            assert code == 0, err
            runs[strategy] = scores_of(out), np.load(f"{directory / 'run'}-oof.npy")
        return runs[strategy]

    return run


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "fault", "kill_on"), [
    ("sequential", None, "Fold 1/3 done"),                  # between folds
    ("sequential", "fold=1,epoch=2,batch=3", None),         # in the middle of an epoch
    ("sequential", "fold=1,epoch=2,test_batch=0", None),    # during validation
    ("stacked", "epoch=2,batch=2", None),                   # all folds mid-epoch
])
def test_a_run_killed_at_any_point_resumes_to_the_scores_of_an_uninterrupted_run(
    tmp_path, uninterrupted, strategy, fault, kill_on
):
    straight, straight_oof = uninterrupted(strategy)
    killed = tmp_path / "killed"
    code, out, err = run_script(tmp_path, killed, strategy, fault=fault, kill_on=kill_on)
    assert code == -signal.SIGKILL, out + err
    code, out, err = run_script(tmp_path, killed, strategy)
    assert code == 0, err
    if strategy == "sequential" and fault:
        # The killed epoch is redone from the backup of the epoch before it.
        assert "Fold 2/3: resuming at epoch 2." in out
    if kill_on:
        # The finished fold is loaded, not trained again.
        assert "Fold 1/3 loaded from run directory" in out
    # Bit for bit: every per-fold score and every out-of-fold prediction.
    assert scores_of(out) == straight
    np.testing.assert_array_equal(np.load(f"{killed}-oof.npy"), straight_oof)
    assert straight["accuracy"] and min(straight["accuracy"]) > 0.5


class _CrashAt(tfcv.callbacks.FoldCallback):
    def __init__(self, fold, epoch):
        super().__init__()
        self.at = (fold, epoch)

    def on_epoch_end(self, epoch, logs=None):
        if (self.fold, epoch) == self.at:
            raise RuntimeError("simulated crash")


@pytest.fixture()
def small(small_digits):
    x, y = small_digits
    return x[:150], y[:150]


def crash_in_fold_1(run_dir, x, y, epochs=3):
    with pytest.raises(RuntimeError, match="simulated crash"):
        tfcv.CrossValidator(tiny_classifier, folds=3, seed=0, strategy="sequential").fit(
            x, y, epochs=epochs, run_dir=run_dir, callbacks=[_CrashAt(1, 1)], verbose=0
        )
    return run_dir / ".backup" / "fold_1" / "checkpoint.npz"


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_an_unreadable_backup_restarts_its_fold_from_scratch_with_a_notice(tmp_path, small, damage):
    x, y = small
    backup = crash_in_fold_1(tmp_path / "run", x, y)
    data = backup.read_bytes()
    backup.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint"}[damage])
    with pytest.warns(UserWarning, match=r"checkpoint.npz cannot be read .*starts over from its first epoch"):
        result = tfcv.CrossValidator(tiny_classifier, folds=3, seed=0, strategy="sequential").fit(
            x, y, epochs=3, run_dir=tmp_path / "run", verbose=0)
    assert result.fold_info[1]["initial_epoch"] == 0
    assert [len(h["loss"]) for h in result.histories] == [3, 3, 3]


def test_the_resume_epoch_is_the_one_restored(tmp_path, small):
    x, y = small
    crash_in_fold_1(tmp_path / "run", x, y)
    result = tfcv.CrossValidator(tiny_classifier, folds=3, seed=0, strategy="sequential").fit(
        x, y, epochs=3, run_dir=tmp_path / "run", verbose=0)
    assert result.fold_info[1]["initial_epoch"] == 2
    assert [len(h["loss"]) for h in result.histories] == [3, 3, 3]



def test_a_run_resumed_with_the_other_strategy_is_refused(tmp_path, small):
    # Stacked training draws other batches than sequential: the unfinished
    # folds would train as neither uninterrupted run did.
    x, y = small
    crash_in_fold_1(tmp_path / "run", x, y)
    with pytest.raises(ValueError, match=r"strategy differs \(stored strategy='sequential', received strategy='stacked'"):
        tfcv.CrossValidator(tiny_classifier, folds=3, seed=0, strategy="stacked").fit(
            x, y, epochs=3, run_dir=tmp_path / "run", verbose=0)
    # A manifest written before tfcv recorded the strategy still resumes.
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    del manifest["strategy"]
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    result = tfcv.CrossValidator(tiny_classifier, folds=3, seed=0, strategy="sequential").fit(
        x, y, epochs=3, run_dir=tmp_path / "run", verbose=0)
    assert result.fold_info[1]["initial_epoch"] == 2

@pytest.fixture()
def finished_run(tmp_path, small):
    x, y = small
    run_dir = tmp_path / "run"
    tfcv.CrossValidator(tiny_classifier, folds=3, seed=0).fit(x, y, epochs=1, run_dir=run_dir, verbose=0)
    return run_dir, x, y


def refit(run_dir, x, y, epochs=1):
    return tfcv.CrossValidator(tiny_classifier, folds=3, seed=0).fit(x, y, epochs=epochs, run_dir=run_dir, verbose=0)



def test_saving_a_result_into_another_runs_directory_is_refused(finished_run, tmp_path):
    # It used to keep the other run's folds under this result's result.json.
    run_dir, x, y = finished_run
    other = refit(tmp_path / "other", x, y, epochs=2)
    before = {name: (run_dir / name).read_bytes() for name in ("result.json", "plan.json", "manifest.json")}
    with pytest.raises(ValueError, match=r"holds a different run: epochs differs \(stored epochs=1, received epochs=2\)"):
        other.save(run_dir)
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    # The run's own result saves into it (as tfcv run --test-size does after fit).
    own = tfcv.CVResult.load(run_dir)
    own.save(run_dir)
    assert tfcv.CVResult.load(run_dir).scores == own.scores

def test_incomplete_scores_are_refused_on_load_and_on_resume(finished_run):
    run_dir, x, y = finished_run
    (run_dir / "fold_1" / "scores.json").write_text("{}")
    with pytest.raises(ValueError, match=r"fold_1/scores.json lacks the scores .*delete .*fold_1 to retrain fold 1"):
        tfcv.CVResult.load(run_dir)
    with pytest.raises(ValueError, match=r"scores.json lacks the scores"):
        refit(run_dir, x, y)


def test_a_fold_linked_to_another_folds_directory_is_refused(finished_run):
    run_dir, x, y = finished_run
    os.rename(run_dir / "fold_0", run_dir / "fold_0.old")
    os.symlink(run_dir / "fold_1", run_dir / "fold_0")
    with pytest.raises(ValueError, match=r"fold_0 is a symbolic link"):
        tfcv.CVResult.load(run_dir)
    with pytest.raises(ValueError, match=r"fold_0 is a symbolic link"):
        refit(run_dir, x, y)


def test_a_fold_copied_into_the_wrong_place_is_refused(finished_run):
    run_dir, x, y = finished_run
    import shutil

    shutil.rmtree(run_dir / "fold_0")
    shutil.copytree(run_dir / "fold_1", run_dir / "fold_0")
    with pytest.raises(ValueError, match=r"fold_0/info.json is for fold 1, not fold 0"):
        refit(run_dir, x, y)


def test_predictions_of_the_wrong_length_are_refused(finished_run):
    run_dir, x, y = finished_run
    predictions = np.load(run_dir / "fold_2" / "val_predictions.npy")
    np.save(run_dir / "fold_2" / "val_predictions.npy", predictions[:-1])
    with pytest.raises(ValueError, match=rf"holds {len(predictions) - 1} rows, fold 2 validates {len(predictions)}"):
        tfcv.CVResult.load(run_dir)


def test_folds_without_a_manifest_are_never_adopted(finished_run):
    run_dir, x, y = finished_run
    os.remove(run_dir / "manifest.json")
    with pytest.raises(ValueError, match=r"holds fold_0, fold_1, fold_2 but no manifest.json"):
        refit(run_dir, x, y, epochs=2)


def test_a_truncated_model_file_is_reported_as_corrupt(finished_run):
    run_dir, _, _ = finished_run
    model = run_dir / "fold_0" / "model.keras"
    model.write_bytes(model.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"model.keras' is corrupt or truncated"):
        tfcv.CVResult.load(run_dir)


def test_nothing_is_written_or_deleted_through_a_link_out_of_the_run_directory(tmp_path, small):
    x, y = small
    outside = tmp_path / "outside"
    (outside / "fold_0").mkdir(parents=True)
    (outside / "fold_0" / "precious.txt").write_text("keep me")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.symlink(outside, run_dir / ".backup")
    with pytest.raises(ValueError, match=r"\.backup' is a symbolic link"):
        refit(run_dir, x, y)
    assert (outside / "fold_0" / "precious.txt").read_text() == "keep me"
    assert sorted(os.listdir(outside)) == ["fold_0"]


@pytest.mark.slow
def test_a_second_run_on_a_directory_in_use_fails_at_once_naming_the_holder(tmp_path, small):
    x, y = small
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tfcv", "run", "--run-dir", str(run_dir), "--verbose", "2", "--epochs", "50",
           "--strategy", "sequential"]
    holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        for line in holder.stdout:
            if line.startswith("fold 1/5 epoch 1/"):
                break
        with pytest.raises(RuntimeError, match=rf"in use by another tfcv run \(pid {holder.pid}\)"):
            refit(run_dir, x, y)
    finally:
        holder.kill()
        holder.wait()
    # The lock dies with its holder: the directory is usable again (and
    # refuses this different run for what it is).
    with pytest.raises(ValueError, match="holds a different run"):
        refit(run_dir, x, y)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_run_directories_are_created_with_the_users_umask(tmp_path, small, mask, file_mode, dir_mode):
    x, y = small
    previous = os.umask(mask)
    try:
        refit(tmp_path / "run", x, y)
    finally:
        os.umask(previous)
    for directory, _dirs, files in os.walk(tmp_path / "run"):
        assert os.stat(directory).st_mode & 0o777 == dir_mode, directory
        for name in files:
            assert os.stat(os.path.join(directory, name)).st_mode & 0o777 == file_mode, os.path.join(directory, name)


def test_file_system_errors_reach_cli_users_as_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err = tfcv_in_process(capsys, "run", "--run-dir", str(blocker / "run"), "--epochs", "1")
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("tfcv run: error:")]
    assert len(errors) == 1 and str(blocker) in errors[0], err


def test_the_kept_test_set_is_read_back_with_checks(finished_run):
    run_dir, x, y = finished_run
    assert load_test_set(run_dir) is None  # the run held nothing out
    save_test_set(run_dir, x[:10], y[:10])
    got_x, got_y = load_test_set(run_dir)
    np.testing.assert_array_equal(got_x, x[:10])
    np.testing.assert_array_equal(got_y, y[:10])
    # Written under the directory's lock: a run holding it keeps its test set.
    holder = _DirectoryLock(os.path.realpath(run_dir))
    try:
        with pytest.raises(RuntimeError, match=rf"in use by another tfcv run \(pid {os.getpid()}\)"):
            save_test_set(run_dir, x[10:20], y[10:20])
    finally:
        holder.release()
    np.testing.assert_array_equal(load_test_set(run_dir)[0], x[:10])
    path = run_dir / "test_set.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"test_set\.npz cannot be read .*--test-size"):
        load_test_set(run_dir)
    path.unlink()
    os.symlink(run_dir.parent / "elsewhere.npz", path)
    with pytest.raises(ValueError, match="is a symbolic link"):
        save_test_set(run_dir, x[:10], y[:10])
    assert not (run_dir.parent / "elsewhere.npz").exists()


class _MixingClassifier:
    """A build_fn whose spec mixes training batches (MixUp), as a
    `ModelBuilder`'s does: a fresh `BatchMixer` per fold, seeded by the fold."""

    class spec:  # noqa: N801 - stands for ModelBuilder.spec
        @staticmethod
        def batch_mixer(seed=None):
            return BatchMixer(mixup=0.4, num_classes=10, seed=seed)

    def __call__(self):
        inputs = keras.Input((8, 8, 1))
        hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
        model.compile(keras.optimizers.Adam(3e-3), ClassCrossentropy(), metrics=[ClassAccuracy()])
        return model


def test_a_resumed_stacked_run_mixes_the_batches_of_an_uninterrupted_run(tmp_path, small):
    # The epochs done are skipped after mixing, so the mixers' random draws
    # continue where the crashed run's were.
    x, y = small
    cv = tfcv.CrossValidator(_MixingClassifier(), folds=2, seed=0, strategy="stacked")
    straight = cv.fit(x, y, epochs=3, run_dir=tmp_path / "straight", verbose=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cv.fit(x, y, epochs=3, run_dir=tmp_path / "run", callbacks=[_CrashAt(1, 1)], verbose=0)
    resumed = cv.fit(x, y, epochs=3, run_dir=tmp_path / "run", verbose=0)
    assert resumed.fold_info[1]["initial_epoch"] == 1
    assert resumed.histories == straight.histories
    np.testing.assert_array_equal(resumed.oof_predictions, straight.oof_predictions)


def streamed_digits(x, y, *, known_length=True, repeat=False):
    """A callable `fold -> (train_ds, val_ds)` over in-memory arrays, as a
    user's `tf.data` pipeline is: the training data reshuffles every pass
    (`reshuffle_each_iteration`), the three folds differ in size (7, 7 and 6
    batches of training data), and every call builds new datasets."""
    import tensorflow as tf

    folds = np.split(np.arange(len(x)), [40, 90])

    def digits_folds(k):
        train = np.concatenate([f for i, f in enumerate(folds) if i != k])
        train_ds = tf.data.Dataset.from_tensor_slices((x[train], y[train]))
        if not known_length:
            train_ds = train_ds.filter(lambda *_: True)
        train_ds = train_ds.shuffle(len(train), seed=7, reshuffle_each_iteration=True).batch(16)
        if repeat:
            train_ds = train_ds.repeat()
        return train_ds, tf.data.Dataset.from_tensor_slices((x[folds[k]], y[folds[k]])).batch(64)

    return digits_folds


@pytest.mark.parametrize("known_length", [True, False], ids=["cardinality", "counted"])
def test_a_resumed_streamed_fold_trains_on_the_batches_of_an_uninterrupted_run(tmp_path, small, known_length):
    # A streamed fold is repeated and cut into epochs as in-memory folds are,
    # so the resumed epoch 3 skips epochs 1 and 2 and draws epoch 3's order.
    # The crash and the resume share this process: the resumed fold calls
    # the callable again, so its datasets are new, as in a new process.
    x, y = small
    folds = streamed_digits(x, y, known_length=known_length)
    cv = tfcv.CrossValidator(tiny_classifier, folds=3, seed=0, strategy="sequential")
    straight = cv.fit(folds, epochs=3, run_dir=tmp_path / "straight", verbose=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cv.fit(folds, epochs=3, run_dir=tmp_path / "run", callbacks=[_CrashAt(1, 1)], verbose=0)
    resumed = cv.fit(folds, epochs=3, run_dir=tmp_path / "run", verbose=0)
    assert resumed.fold_info[1]["initial_epoch"] == 2
    assert resumed.histories == straight.histories
    assert resumed.scores == straight.scores
    np.testing.assert_array_equal(resumed.oof_predictions, straight.oof_predictions)
    # Every epoch is one pass, also for the fold whose length differs from
    # the first's (it cannot reuse a model traced to run 7 steps per call).
    assert [int(model.optimizer.iterations) for model in straight.models] == [3 * 7, 3 * 7, 3 * 6]


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_a_streamed_training_set_that_repeats_forever_is_refused(small, strategy):
    x, y = small
    with pytest.raises(ValueError, match=r"Fold 0: `train_ds` repeats forever.*remove the `.repeat\(\)`"):
        tfcv.CrossValidator(tiny_classifier, folds=3, seed=0, strategy=strategy).fit(
            streamed_digits(x, y, repeat=True), epochs=1, verbose=0)
