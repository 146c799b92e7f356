"""tfcv.plots figures of a cross-validation result, and the run directory's PNGs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from matplotlib.figure import Figure

import tfcv


def test_learning_curves_draw_every_fold_and_the_mean(cv_result):
    fig = tfcv.plots.learning_curves(cv_result, "accuracy")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    # 3 folds x (train, val) thin lines + 2 mean lines.
    assert len(ax.lines) == 8
    val_mean = [line for line in ax.lines if line.get_label().startswith("validation mean")][0]
    np.testing.assert_allclose(val_mean.get_ydata(), np.mean([h["val_accuracy"] for h in cv_result.histories], axis=0))
    with pytest.raises(ValueError, match="metric='auc'"):
        tfcv.plots.learning_curves(cv_result, "auc")


def test_fold_scores_show_each_folds_value(cv_result):
    fig = tfcv.plots.fold_scores(cv_result)
    ax = fig.axes[0]
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    expected = np.concatenate([cv_result.scores[m] for m in ("accuracy", "precision", "recall", "f1")])
    np.testing.assert_allclose(np.sort(points), np.sort(expected))
    with pytest.raises(ValueError, match="unknown metrics \\['auc'\\]"):
        tfcv.plots.fold_scores(cv_result, ["auc"])


def test_confusion_matrix_counts_every_sample_once(cv_result, small_digits):
    _, y = small_digits
    np.testing.assert_array_equal(cv_result.oof_targets, y)
    fig = tfcv.plots.confusion_matrix(cv_result)
    texts = [t for t in fig.axes[0].texts if t.get_text().strip()]
    assert sum(int(t.get_text()) for t in texts) == len(y)
    assert "accuracy" in fig.axes[0].get_title()


def test_predicted_vs_true_for_regression():
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3)).astype("float32")
    y = x.sum(axis=1)

    def build():
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        model.compile(keras.optimizers.Adam(0.1), "mse")
        return model

    result = tfcv.CrossValidator(build, folds=3).fit(x, y, epochs=5, verbose=0)
    fig = tfcv.plots.predicted_vs_true(result)
    offsets = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(y), rtol=1e-5)
    with pytest.raises(ValueError, match="classification"):
        tfcv.plots.confusion_matrix(result)


def test_save_run_plots_writes_pngs(cv_result, tmp_path):
    paths = tfcv.plots.save_run_plots(cv_result, str(tmp_path))
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == ["confusion_matrix.png", "fold_scores.png", "learning_curves_accuracy.png", "learning_curves_loss.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_save_run_plots_writes_nothing_through_a_link_out_of_the_run_directory(cv_result, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "run").mkdir()
    os.symlink(outside, tmp_path / "run" / "plots")
    with pytest.raises(ValueError, match=r"plots' is a symbolic link"):
        tfcv.plots.save_run_plots(cv_result, str(tmp_path / "run"))
    assert os.listdir(outside) == []
