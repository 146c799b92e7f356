"""Shared fixtures: small data, a tiny model, a trained CVResult (built once)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfcv  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """The embedded digits data: x (1797, 8, 8, 1) float32, y int64."""
    return tfcv.datasets.load_digits()


@pytest.fixture(scope="session")
def small_digits(digits):
    """A stratified 600-sample subset of the digits, for fast tests."""
    from sklearn.model_selection import train_test_split

    x, y = digits
    x_small, _, y_small, _ = train_test_split(x, y, train_size=600, stratify=y, random_state=0)
    return x_small, y_small


def tiny_classifier(input_shape=(8, 8, 1), num_classes=10):
    """A small compiled CNN that learns the digits in a few epochs."""
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="session")
def cv_result(small_digits, tmp_path_factory):
    """A trained 3-fold CVResult of the tiny classifier (run directory kept)."""
    x, y = small_digits
    run_dir = tmp_path_factory.mktemp("cv_result") / "run"
    cv = tfcv.CrossValidator(tiny_classifier, folds=3, seed=0)
    result = cv.fit(x, y, epochs=8, batch_size=32, run_dir=run_dir, verbose=0)
    result.run_dir = str(run_dir)
    return result


@pytest.fixture()
def rng():
    return np.random.default_rng(0)
