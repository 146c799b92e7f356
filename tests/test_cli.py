"""`tfcv run` end to end, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import tfcv


def run_tfcv(*args, cwd=None, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "tfcv.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_tfcv_run_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_tfcv("run", "--epochs", "1", "--folds", "2", "--run-dir", str(run_dir), "--verbose", "2", "--test-size", "0.2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "fold 1/2 epoch 1/1" in out and "fold 2/2 epoch 1/1" in out
    assert "left" in out and "elapsed" in out
    assert "mean ± std" in out
    result = tfcv.CVResult.load(run_dir)
    assert result.n_folds == 2
    assert set(result.scores) >= {"accuracy", "precision", "recall", "f1", "loss"}
    # 20% of 1797 digits held out before the folds; the fold ensemble is scored on them.
    assert len(result.oof_predictions) == 1437
    assert "held-out test (fold ensemble): accuracy" in out
    assert set(result.test_scores) == {"accuracy", "precision", "recall", "f1"}
    for name in ("confusion_matrix", "fold_scores", "learning_curves_loss", "learning_curves_accuracy"):
        assert (run_dir / "plots" / f"{name}.png").stat().st_size > 1000
    summary = json.loads((run_dir / "result.json").read_text())
    assert summary["n_folds"] == 2 and summary["info"]["epochs"] == 1


@pytest.mark.slow
def test_tfcv_run_yaml_config_and_flags_win(tmp_path):
    config = tmp_path / "experiment.yaml"
    config.write_text("folds: 3\nepochs: 4\nbatch-size: 64\nseed: 5\nname: yamlrun\nstrategy: stacked\n")
    proc = run_tfcv("run", str(config), "--folds", "2", "--verbose", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 folds x 4 epochs, batch size 64, seed 5" in proc.stdout
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.startswith("yamlrun-")
    manifest = json.loads((run_dirs[0] / "manifest.json").read_text())
    assert manifest["batch_size"] == 64 and manifest["seed"] == 5
    # Four epochs of the reference CNN learn the digits far above chance (0.1).
    result = tfcv.CVResult.load(run_dirs[0])
    assert result.mean("accuracy") > 0.8
    assert result.info["strategy"] == "stacked"


def test_bad_config_key_is_a_clear_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("epoch: 3\n")
    proc = run_tfcv("run", str(config))
    assert proc.returncode == 2
    assert "unknown keys" in proc.stderr and "'epoch'" in proc.stderr and "epochs" in proc.stderr


def test_bad_flag_value_is_a_clear_error(tmp_path):
    proc = run_tfcv("run", "--folds", "1", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "folds=1" in proc.stderr and "Expected an int >= 2" in proc.stderr


def test_unknown_backend_is_a_clear_error(tmp_path):
    proc = run_tfcv("run", "--n-jobs", "2", "--backend", "spark", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "backend='spark'" in proc.stderr and "'loky', 'ray'" in proc.stderr


def test_unknown_strategy_is_a_clear_error(tmp_path):
    proc = run_tfcv("run", "--strategy", "fast", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "strategy='fast'" in proc.stderr and "'sequential', 'stacked', 'auto'" in proc.stderr
