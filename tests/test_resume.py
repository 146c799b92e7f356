"""Resume after interruption: SIGKILL a real `tfcv run`, run it again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfcv
from tests.conftest import tiny_classifier


def start_run(run_dir, *extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tfcv.cli", "run", "--run-dir", str(run_dir), "--verbose", "2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def kill_when(proc, prefix):
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            proc.kill()  # SIGKILL: no cleanup handlers run
            proc.wait()
            return seen
    proc.wait()
    raise AssertionError(f"the run ended before printing {prefix!r}:\n{''.join(seen)}")


def finish(proc):
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_sigkill_in_fold_3_of_5_resumes_from_the_last_epoch(tmp_path):
    run_dir = tmp_path / "run"
    args = ("--folds", "5", "--epochs", "4", "--strategy", "sequential")
    kill_when(start_run(run_dir, *args), "fold 3/5 epoch 2/4")
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("fold_")) == ["fold_0", "fold_1"]
    mtimes = {k: os.stat(run_dir / f"fold_{k}" / "model.keras").st_mtime_ns for k in (0, 1)}

    out = finish(start_run(run_dir, *args))
    assert "Fold 1/5 loaded from run directory" in out
    assert "Fold 2/5 loaded from run directory" in out
    assert "Fold 3/5: resuming at epoch 3." in out
    # Folds 1 and 2 were loaded, not retrained; fold 3 did not start over.
    assert not any(line.startswith(("fold 1/5 epoch", "fold 2/5 epoch", "fold 3/5 epoch 1/4", "fold 3/5 epoch 2/4"))
                   for line in out.splitlines())
    assert {k: os.stat(run_dir / f"fold_{k}" / "model.keras").st_mtime_ns for k in (0, 1)} == mtimes
    result = tfcv.CVResult.load(run_dir)
    assert result.n_folds == 5
    assert result.fold_info[2]["initial_epoch"] == 2
    assert all(len(h["loss"]) == 4 for h in result.histories)
    assert result.mean("accuracy") > 0.8
    assert not (run_dir / ".backup" / "fold_2").exists()


def test_run_dir_refuses_a_different_run(tmp_path, small_digits):
    x, y = small_digits
    x, y = x[:120], y[:120]
    run_dir = tmp_path / "run"
    cv = tfcv.CrossValidator(tiny_classifier, folds=2, seed=0)
    cv.fit(x, y, epochs=1, run_dir=run_dir, verbose=0)
    # The same call again loads everything.
    again = cv.fit(x, y, epochs=1, run_dir=run_dir, verbose=0)
    assert again.n_folds == 2
    with pytest.raises(ValueError, match="epochs differs \\(stored epochs=1, received epochs=2\\)"):
        cv.fit(x, y, epochs=2, run_dir=run_dir, verbose=0)
    other = x.copy()
    other[0] += 0.1
    with pytest.raises(ValueError, match="the data differs"):
        cv.fit(other, y, epochs=1, run_dir=run_dir, verbose=0)

    def wider():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Dense(64)(keras.layers.Flatten()(inputs))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    with pytest.raises(ValueError, match="the model \\(architecture or compile settings\\) differs"):
        tfcv.CrossValidator(wider, folds=2, seed=0).fit(x, y, epochs=1, run_dir=run_dir, verbose=0)
    with pytest.raises(ValueError, match="seed differs"):
        tfcv.CrossValidator(tiny_classifier, folds=2, seed=1).fit(x, y, epochs=1, run_dir=run_dir, verbose=0)


def test_a_crash_inside_a_fold_keeps_finished_folds(tmp_path, small_digits):
    x, y = small_digits
    x, y = x[:150], y[:150]

    class Crash(tfcv.callbacks.FoldCallback):
        def on_epoch_end(self, epoch, logs=None):
            if self.fold == 1 and epoch == 1:
                raise RuntimeError("simulated crash")

    run_dir = tmp_path / "run"
    cv = tfcv.CrossValidator(tiny_classifier, folds=3, seed=0, strategy="sequential")
    with pytest.raises(RuntimeError, match="simulated crash"):
        cv.fit(x, y, epochs=3, run_dir=run_dir, callbacks=[Crash()], verbose=0)
    assert (run_dir / "fold_0" / "scores.json").exists() and not (run_dir / "fold_1").exists()
    with np.load(run_dir / ".backup" / "fold_1" / "checkpoint.npz") as backup:
        assert json.loads(backup["meta"].tobytes())["epoch"] == 2
    with pytest.raises(ValueError, match="unfinished"):
        tfcv.CVResult.load(run_dir)
    result = cv.fit(x, y, epochs=3, run_dir=run_dir, verbose=0)
    assert result.fold_info[1]["initial_epoch"] == 2
    assert [len(h["loss"]) for h in result.histories] == [3, 3, 3]
    assert not any(name.startswith(".tfcv-tmp-") for name in os.listdir(run_dir))
    np.testing.assert_allclose(result.oof_predictions.sum(1), 1.0, atol=1e-4)
