"""`tfcv.compare`: the Nadeau–Bengio corrected resampled t-test on two runs
over the same folds, `tfcv compare`, and `tfcv.plots.compare`."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from scipy import stats
from sklearn.model_selection import KFold, RepeatedKFold

import tfcv
from tests.conftest import tiny_classifier
from tfcv.folds import FoldPlan


def result_with(plan, accuracy):
    """A CVResult holding these per-fold scores on `plan` (no models)."""
    return tfcv.CVResult(
        scores={"accuracy": accuracy}, val_predictions=[np.zeros((len(val), 1)) for _, val in plan.folds],
        models=[None] * len(plan), histories=[{}] * len(plan), plan=plan, task="classification",
    )


def kfold_plan(splitter, n=100):
    x = np.zeros((n, 1))
    return FoldPlan([(train, val) for train, val in splitter.split(x)], splitter=repr(splitter),
                    fingerprint={"n_samples": n})


def test_corrected_t_test_matches_a_hand_computed_reference():
    plan = kfold_plan(KFold(5))  # n_test / n_train = 20 / 80 = 0.25
    a = [0.80, 0.81, 0.79, 0.80, 0.82]
    b = [0.82, 0.84, 0.80, 0.84, 0.82]  # differences 0.02, 0.03, 0.01, 0.04, 0.00
    comparison = tfcv.compare(result_with(plan, a), result_with(plan, b), metric="accuracy")

    np.testing.assert_allclose(comparison.differences, [0.02, 0.03, 0.01, 0.04, 0.00], atol=1e-12)
    assert comparison.mean_difference == pytest.approx(0.02)
    # var(d, ddof=1) = (0 + 1e-4 + 1e-4 + 4e-4 + 4e-4) / 4 = 2.5e-4
    # corrected variance of the mean = (1/5 + 0.25) * 2.5e-4 = 1.125e-4
    assert comparison.test_train_ratio == pytest.approx(0.25)
    assert comparison.t == pytest.approx(0.02 / math.sqrt(1.125e-4))  # 1.8856
    assert comparison.t == pytest.approx(1.885618083, abs=1e-8)
    assert comparison.df == 4
    assert comparison.p_value == pytest.approx(2 * stats.t.sf(1.885618083, 4), abs=1e-8)  # 0.1324
    assert comparison.p_value == pytest.approx(0.13244, abs=1e-4)
    half = 2.776445105 * math.sqrt(1.125e-4)  # t_{4, 0.975} * se
    assert comparison.ci == pytest.approx((0.02 - half, 0.02 + half), abs=1e-8)
    # The naive paired t-test would call it significant (t = 2.83, p = 0.047).
    assert comparison.naive_t == pytest.approx(0.02 / math.sqrt(2.5e-4 / 5))
    assert comparison.naive_p_value < 0.05 < comparison.p_value
    assert not comparison.significant
    assert "within the folds' noise" in comparison.summary()
    assert "+0.0200" in comparison.summary()


def test_a_clear_difference_is_called_larger_than_the_noise():
    plan = kfold_plan(KFold(5))
    comparison = tfcv.compare(result_with(plan, [0.8] * 5), result_with(plan, [0.90, 0.91, 0.89, 0.90, 0.90]))
    assert comparison.significant and comparison.p_value < 0.01
    assert comparison.ci[0] > 0
    assert comparison.summary().startswith("B's accuracy is higher than A's, by more than the folds' noise")


def test_repeated_splitters_use_every_repetition():
    plan = kfold_plan(RepeatedKFold(n_splits=4, n_repeats=3, random_state=0))
    rng = np.random.default_rng(0)
    a = rng.uniform(0.7, 0.8, 12)
    d = rng.normal(0.01, 0.01, 12)
    comparison = tfcv.compare(result_with(plan, a), result_with(plan, a + d))
    assert comparison.df == 11 and len(comparison.differences) == 12
    se = math.sqrt((1 / 12 + 25 / 75) * np.var(d, ddof=1))
    assert comparison.t == pytest.approx(np.mean(d) / se)


def test_different_folds_are_refused_naming_why():
    plan = kfold_plan(KFold(5))
    other = kfold_plan(KFold(5, shuffle=True, random_state=1))
    with pytest.raises(ValueError, match="fold 0 validates different rows"):
        tfcv.compare(result_with(plan, [0.8] * 5), result_with(other, [0.8] * 5))
    with pytest.raises(ValueError, match="result_a has 5 folds, result_b has 4"):
        tfcv.compare(result_with(plan, [0.8] * 5), result_with(kfold_plan(KFold(4)), [0.8] * 4))
    with pytest.raises(ValueError, match="100 samples, result_b on 90"):
        tfcv.compare(result_with(plan, [0.8] * 5), result_with(kfold_plan(KFold(5), n=90), [0.8] * 5))
    with pytest.raises(ValueError, match="metric='f1'"):
        tfcv.compare(result_with(plan, [0.8] * 5), result_with(plan, [0.8] * 5), metric="f1")


@pytest.fixture(scope="module")
def two_runs(small_digits, tmp_path_factory):
    """Two real runs on the same folds: the tiny CNN and a linear model."""
    x, y = small_digits
    x, y = x[:300], y[:300]

    def linear():
        inputs = keras.Input((8, 8, 1))
        outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
        model = keras.Model(inputs, outputs)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    runs = {}
    for name, build in (("linear", linear), ("cnn", tiny_classifier)):
        run_dir = tmp_path_factory.mktemp("compare") / name
        tfcv.CrossValidator(build, folds=3, seed=0).fit(x, y, epochs=3, run_dir=run_dir, verbose=0)
        runs[name] = run_dir
    return runs


def test_real_runs_and_the_command_line(two_runs, capsys):
    from tfcv.cli import main

    a, b = (tfcv.CVResult.load(two_runs[name]) for name in ("linear", "cnn"))
    comparison = tfcv.compare(two_runs["linear"], two_runs["cnn"], metric="accuracy")
    np.testing.assert_allclose(comparison.differences, np.subtract(b.scores["accuracy"], a.scores["accuracy"]))
    assert comparison.mean_difference > 0.1  # the CNN learns far faster than a linear model in 3 epochs
    assert comparison.test_train_ratio == pytest.approx(np.mean([len(v) / len(t) for t, v in a.plan.folds]))

    assert main(["compare", str(two_runs["linear"]), str(two_runs["cnn"]), "--metric", "accuracy"]) == 0
    out = capsys.readouterr().out
    assert comparison.summary() in out
    for k, d in enumerate(comparison.differences):
        assert f"{k + 1}" in out and f"{d:+.4f}" in out


def test_compare_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    plan = kfold_plan(KFold(5))
    comparison = tfcv.compare(result_with(plan, [0.8] * 5), result_with(plan, [0.82, 0.84, 0.80, 0.84, 0.82]))
    fig = tfcv.plots.compare(comparison)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.containers[0].patches)
    assert heights == sorted(round(d, 6) for d in comparison.differences)
    fig.savefig(tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 0
