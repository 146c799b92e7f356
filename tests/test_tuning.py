"""`tfcv.tuning`: KerasTuner trials that are cross-validations, and nested CV."""

from __future__ import annotations

import keras
import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

import tfcv  # noqa: E402
from tfcv import tuning  # noqa: E402


def build(hp):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(hp.Choice("units", [16, 32]), activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(hp.Choice("learning_rate", [3e-3, 1e-2])),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def data(small_digits):
    x, y = small_digits
    return x[:300], y[:300]


def test_every_trial_is_a_cross_validation(data, tmp_path):
    x, y = data
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=tuning.objective("accuracy"), max_trials=3, seed=0)
    tuner = tuning.CVTuner(oracle, build, folds=2, seed=0, directory=tmp_path, project_name="digits")
    tuner.search(x, y, epochs=3, batch_size=32)

    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 3 and all(t.status == "COMPLETED" for t in trials)
    best = tuner.oracle.get_best_trials(1)[0]
    summary = tuner.cv_summary(best)
    # The objective is the folds' mean; the std is recorded beside it.
    assert best.score == pytest.approx(summary["mean"])
    assert best.metrics.get_best_value("accuracy_std") == pytest.approx(summary["std"])
    assert len(summary["scores"]) == 2
    assert best.score == max(t.score for t in trials)
    assert best.score > 0.5  # 10 classes: chance is 0.1

    # The best trial's CV mean is what a plain cross-validation of its model gives.
    again = tfcv.CrossValidator(lambda: build(best.hyperparameters), folds=2, seed=0, strategy="auto").fit(
        x, y, epochs=3, batch_size=32, verbose=0)
    assert again.mean("accuracy") == pytest.approx(summary["mean"], abs=1e-6)
    assert tuning.objective("loss").direction == "min" and tuning.objective("neg_log_loss").direction == "max"


def test_nested_cv_scores_only_outer_validation_folds(data, tmp_path):
    x, y = data
    nested = tfcv.nested_cv(build, x, y, max_trials=2, outer_folds=2, inner_folds=2, epochs=5,
                            directory=tmp_path, project_name="nested")
    assert len(nested.outer_scores) == 2 and len(nested.best_hyperparameters) == 2
    assert all(set(hp) == {"units", "learning_rate"} for hp in nested.best_hyperparameters)
    for k, (train, val) in enumerate(nested.plan.folds):
        outer = nested.outer_results[k]
        (outer_train, outer_val), = outer.plan.folds
        np.testing.assert_array_equal(outer_val, val)
        np.testing.assert_array_equal(outer_train, train)
        assert not set(train) & set(val)
        # The outer score is the chosen model's accuracy on the outer validation rows.
        predicted = outer.val_predictions[0].argmax(axis=1)
        assert nested.outer_scores[k] == pytest.approx(np.mean(predicted == y[val]))
    assert nested.mean() > 0.3
    assert "nested CV estimate" in nested.summary()
