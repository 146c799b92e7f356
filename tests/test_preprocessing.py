"""Per-fold adaptation: every data-fitted layer sees only its fold's training split."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcv
from tfcv.preprocessing import adapt_preprocessing, holds_adapted_state, needs_adapt


def test_normalization_is_adapted_on_what_reaches_it():
    x = np.random.default_rng(0).uniform(0, 255, size=(50, 3)).astype("float32")
    inputs = keras.Input((3,))
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    norm = keras.layers.Normalization(name="norm")
    outputs = keras.layers.Dense(1)(norm(h))
    model = keras.Model(inputs, outputs)
    assert adapt_preprocessing(model, x) == ["norm"]
    np.testing.assert_allclose(np.asarray(norm.mean).reshape(-1), (x / 255.0).mean(0), rtol=1e-5)


def test_a_function_as_input_is_called_only_when_a_layer_needs_adapting():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 4)).astype("float32")
    calls = []

    def training_inputs():
        calls.append(1)
        return x

    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert adapt_preprocessing(plain, training_inputs) == [] and calls == []

    norm = keras.layers.Normalization(name="norm")
    normalized = keras.Model(inputs, keras.layers.Dense(2)(norm(inputs)))
    assert adapt_preprocessing(normalized, training_inputs) == ["norm"] and calls == [1]
    np.testing.assert_allclose(np.ravel(norm.mean), x.mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_normalization_statistics_come_from_each_folds_training_split(small_digits, strategy):
    x, y = small_digits

    def build():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Normalization(axis=None, name="norm")(inputs)
        h = keras.layers.Flatten()(h)
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    result = tfcv.CrossValidator(build, folds=3, strategy=strategy).fit(x, y, epochs=1, verbose=0)
    for k, (train, val) in enumerate(result.plan.folds):
        mean = float(np.asarray(result.models[k].get_layer("norm").mean).reshape(-1)[0])
        assert mean == pytest.approx(float(x[train].mean()), rel=1e-5)
        assert mean != pytest.approx(float(x.mean()), rel=1e-7)
        # The scores came from each fold's own statistics, in either strategy.
        np.testing.assert_allclose(result.models[k].predict(x[val], verbose=0), result.oof_predictions[val], atol=1e-5)


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_streamed_folds_adapt_normalization_on_each_training_split(small_digits, strategy):
    import tensorflow as tf

    x, y = small_digits
    x, y = x[:240], y[:240]
    val_parts = [np.arange(k, len(x), 3) for k in range(3)]

    def datasets(k):
        train = np.setdiff1d(np.arange(len(x)), val_parts[k])
        return (
            tf.data.Dataset.from_tensor_slices((x[train], y[train])).batch(32),
            tf.data.Dataset.from_tensor_slices((x[val_parts[k]], y[val_parts[k]])).batch(32),
        )

    def build():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Flatten()(keras.layers.Normalization(axis=None, name="norm")(inputs))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    result = tfcv.CrossValidator(build, folds=3, strategy=strategy).fit(datasets, epochs=1, verbose=0)
    assert result.info["strategy"] == strategy
    for k in range(3):
        train = np.setdiff1d(np.arange(len(x)), val_parts[k])
        mean = float(np.asarray(result.models[k].get_layer("norm").mean).reshape(-1)[0])
        assert mean == pytest.approx(float(x[train].mean()), rel=1e-5)
    # Folds from a callable: validation predictions stacked in fold order.
    assert result.oof_predictions.shape == (240, 10)
    np.testing.assert_array_equal(result.oof_targets, np.concatenate([y[v] for v in val_parts]))




# --------------------------------------------------------------- lookups


def _token_data(n=240, seed=0):
    """Samples that are single tokens; each of 60 tokens names its class
    (token i -> class i % 3), so a vocabulary learnt on a training split
    differs from the full one."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 60, size=n)
    x = np.array([f"tok{t}" for t in tokens])[:, None]
    y = (tokens % 3).astype("int64")
    return x, y, tokens


def _string_lookup_classifier():
    inputs = keras.Input((1,), dtype="string")
    ids = keras.layers.StringLookup(name="lookup")(inputs)
    h = keras.layers.Flatten()(keras.layers.Embedding(64, 8)(ids))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_string_lookup_vocabulary_comes_from_each_folds_training_split(strategy):
    x, y, _ = _token_data()
    result = tfcv.CrossValidator(_string_lookup_classifier, folds=3, strategy=strategy).fit(
        x, y, epochs=3, batch_size=16, verbose=0
    )
    everything = set(x[:, 0])
    for k, (train, _) in enumerate(result.plan.folds):
        vocabulary = set(result.models[k].get_layer("lookup").get_vocabulary()[1:])
        assert vocabulary == set(x[train, 0])
        assert vocabulary != everything  # some tokens occur only in the fold's validation split
    # Tokens seen in training are learnt: well above chance (1/3) out of fold.
    assert result.mean("accuracy") > 0.6


def test_text_vectorization_and_a_nested_integer_lookup_are_adapted_per_fold():
    x, y, tokens = _token_data(seed=1)
    numbers = (tokens + 100).astype("int64")[:, None]

    def build():
        text = keras.Input((1,), dtype="string", name="text")
        vectorize = keras.layers.TextVectorization(max_tokens=80, output_sequence_length=1, name="vectorize")
        h = keras.layers.Flatten()(keras.layers.Embedding(80, 8)(vectorize(text)))
        model = keras.Model(text, keras.layers.Dense(3, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def build_nested():
        inner_in = keras.Input((1,), dtype="int64")
        inner = keras.Model(inner_in, keras.layers.IntegerLookup(name="int_lookup")(inner_in), name="inner")
        outer_in = keras.Input((1,), dtype="int64")
        h = keras.layers.Flatten()(keras.layers.Embedding(64, 8)(inner(outer_in)))
        model = keras.Model(outer_in, keras.layers.Dense(3, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    text_result = tfcv.CrossValidator(build, folds=3).fit(x, y, epochs=1, verbose=0)
    int_result = tfcv.CrossValidator(build_nested, folds=3).fit(numbers, y, epochs=1, verbose=0)
    for k, (train, _) in enumerate(text_result.plan.folds):
        vocabulary = set(text_result.models[k].get_layer("vectorize").get_vocabulary()[2:])
        assert vocabulary == set(x[train, 0])
    for k, (train, _) in enumerate(int_result.plan.folds):
        lookup = int_result.models[k].get_layer("inner").get_layer("int_lookup")
        assert set(int(v) for v in lookup.get_vocabulary()[1:]) == set(numbers[train, 0].tolist())


def test_layers_with_a_given_vocabulary_or_statistics_are_left_alone():
    fixed = [
        keras.layers.StringLookup(vocabulary=["a", "b"]),
        keras.layers.TextVectorization(vocabulary=["a"]),
        keras.layers.Normalization(mean=0.0, variance=1.0),
        keras.layers.Discretization(bin_boundaries=[0.5]),
    ]
    assert not any(needs_adapt(layer) for layer in fixed)
    assert all(needs_adapt(layer) for layer in (keras.layers.StringLookup(), keras.layers.Discretization(num_bins=3)))
    inputs = keras.Input((1,), dtype="string")
    model = keras.Model(inputs, fixed[0](inputs))
    assert adapt_preprocessing(model, np.array([["c"], ["d"]])) == []
    assert fixed[0].get_vocabulary() == ["[UNK]", "a", "b"]
    # Adapted or not, such a model holds state outside its variables.
    assert holds_adapted_state(model)


class _OwnScaler(keras.layers.Layer):
    """A data-fitted layer tfcv does not know."""

    def adapt(self, data):
        self.scale = float(np.max(data))

    def call(self, x):
        return x


def test_an_adaptable_layer_tfcv_does_not_know_is_refused_by_name(small_digits):
    x, y = small_digits

    def build():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Flatten()(_OwnScaler(name="own_scaler")(inputs))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    with pytest.raises(ValueError, match=r"'own_scaler' \(_OwnScaler\) learns from data through `adapt`"):
        tfcv.CrossValidator(build, folds=2).fit(x, y, epochs=1, verbose=0)


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.Normalization(name="hidden_norm")
        self.dense = keras.layers.Dense(10, activation="softmax")

    def call(self, x):
        return self.dense(self.norm(keras.ops.reshape(x, (-1, 64))))


def test_a_data_fitted_layer_tfcv_cannot_reach_is_refused_by_name(small_digits):
    x, y = small_digits

    def build():
        model = _Subclassed(name="subclassed")
        model.compile("adam", "sparse_categorical_crossentropy")
        model.build((None, 8, 8, 1))
        return model

    with pytest.raises(ValueError, match=r"Cannot adapt \['hidden_norm'\] inside 'subclassed'"):
        tfcv.CrossValidator(build, folds=2).fit(x, y, epochs=1, verbose=0)
