"""tfcv.builder: ModelSpec -> keras.Model, and ModelBuilder."""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_spec import MINIMAL, OPTION_SPECS

import tfcv
from tfcv.builder import ModelSpec
from tfcv.layers import Augmentation, BatchMixer
from tfcv.metrics import ClassCrossentropy
from tfcv.preprocessing import adapt_preprocessing


def data_for(spec: ModelSpec, digits, n=64):
    x, y = digits
    x, y = x[:n], y[:n]
    if spec.input_shape[-1] == 3:
        x = np.repeat(x, 3, axis=-1) * 255.0
    if spec.task == "regression":
        y = np.stack([y / 9.0, (y % 2).astype("float64")], axis=1).astype("float32")[:, :spec.num_outputs]
    elif spec.num_classes == 2:
        y = y % 2
    elif spec.training.loss == "categorical_crossentropy":
        y = np.eye(10, dtype="float32")[y]
    return x.astype("float32"), y


def test_minimal_spec_builds_exactly_as_written():
    model = tfcv.build_model(MINIMAL)
    assert isinstance(model, keras.Model) and model.compiled
    assert [layer.name for layer in model.layers] == [
        "image", "augmentation", "normalization",
        "block1_conv", "block1_bn", "block1_act", "block1_pool",
        "block2_conv", "block2_bn", "block2_act", "block2_pool",
        "head_pool", "head_dense1", "head_dropout1", "predictions",
    ]
    augmentation = model.get_layer("augmentation")
    assert isinstance(augmentation, Augmentation)
    assert augmentation.get_config()["augmentations"] == MINIMAL["augmentation"]
    normalization = model.get_layer("normalization")
    assert isinstance(normalization, keras.layers.Normalization) and normalization.input_mean is None
    assert model.output_shape == (None, 10)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert isinstance(model.loss, ClassCrossentropy)


@pytest.mark.parametrize("name", sorted(OPTION_SPECS))
def test_every_option_builds_trains_a_step_and_round_trips_through_keras_files(name, digits, tmp_path):
    spec = ModelSpec.from_dict(OPTION_SPECS[name])
    x, y = data_for(spec, digits)
    model = tfcv.build_model(spec)
    adapt_preprocessing(model, x)
    before = [w.copy() for w in model.get_weights()]
    mixer = spec.batch_mixer(seed=0)
    if mixer is None:
        history = model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    else:
        # Mixed one-hot rows for training, integer labels for validation: the
        # same compiled loss and accuracy take both.
        train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(32).map(mixer)
        history = model.fit(train, validation_data=(x[32:], y[32:]), epochs=1, verbose=0, shuffle=False)
        assert np.isfinite(history.history["val_accuracy"][0])
    assert int(model.optimizer.iterations) == 1
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded(x[:16], training=False), model(x[:16], training=False))
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.name == spec.name


# ------------------------------------------------------- the builder


def test_model_builder_makes_a_fresh_model_per_call_and_pickles():
    builder = tfcv.ModelBuilder(MINIMAL)
    a, b = builder(), builder()
    assert a is not b and a.get_layer("block1_conv") is not b.get_layer("block1_conv")
    keras.utils.set_random_seed(1)
    first = builder().get_weights()
    keras.utils.set_random_seed(1)
    again = builder().get_weights()
    for u, v in zip(first, again, strict=True):
        np.testing.assert_array_equal(u, v)
    revived = pickle.loads(pickle.dumps(builder))
    assert revived == builder and revived.spec == builder.spec
    assert isinstance(revived(), keras.Model)
    assert repr(builder) == f"ModelBuilder({builder.spec!r})"
    assert builder.batch_mixer is None
    mixing = tfcv.ModelBuilder(OPTION_SPECS["batch_mixing"])
    assert isinstance(mixing.batch_mixer, BatchMixer)
    assert mixing.batch_mixer.num_classes == 10 and mixing.batch_mixer.mixup == 0.2
    assert all("mixup" not in item and "cutmix" not in item
               for item in mixing().get_layer("augmentation").get_config()["augmentations"])


def test_cross_validation_adapts_normalization_on_each_training_split(small_digits):
    x, y = small_digits
    x, y = x[:300], y[:300]
    # Small on purpose (one block, no augmentation): this test is about the
    # adaptation; test_every_option... trains the minimal spec.
    spec = {"input_shape": [8, 8, 1], "num_classes": 10, "preprocessing": {"normalization": True},
            "backbone": [8], "head": {"units": []}}
    result = tfcv.CrossValidator(tfcv.ModelBuilder(spec), folds=3).fit(x, y, epochs=1, verbose=0)
    means = []
    for k, (train, val) in enumerate(result.plan.folds):
        layer = result.models[k].get_layer("normalization")
        np.testing.assert_allclose(np.ravel(layer.mean), [x[train].mean()], rtol=1e-5)
        np.testing.assert_allclose(np.ravel(layer.variance), [x[train].var()], rtol=1e-4)
        assert abs(float(np.ravel(layer.mean)[0]) - x[val].mean()) > 1e-6
        means.append(float(np.ravel(layer.mean)[0]))
    assert len(set(means)) == 3  # one adaptation per fold, not one for all


def test_learning_rate_schedules():
    def rates(training, steps):
        model = tfcv.build_model({"input_shape": [8, 8, 1], "num_classes": 3, "training": training})
        config = model.optimizer.get_config()["learning_rate"]
        schedule = keras.optimizers.schedules.deserialize(config)
        return [float(schedule(s)) for s in steps]

    cosine = rates({"learning_rate": 0.1, "schedule": {"name": "cosine", "decay_steps": 100,
                                                       "warmup_steps": 10, "alpha": 0.0}}, [0, 5, 10, 110])
    assert cosine == pytest.approx([0.0, 0.05, 0.1, 0.0], abs=1e-6)
    constant = rates({"learning_rate": 0.1, "schedule": {"name": "constant", "warmup_steps": 4}}, [0, 2, 4, 1000])
    assert constant == pytest.approx([0.0, 0.05, 0.1, 0.1], abs=1e-6)
    exponential = rates({"learning_rate": 0.1, "schedule": {"name": "exponential", "decay_steps": 10,
                                                            "decay_rate": 0.5}}, [0, 10, 20])
    assert exponential == pytest.approx([0.1, 0.05, 0.025], rel=1e-5)


# ------------------------------------------------ keras.applications


def application_spec(**backbone):
    return {
        "input_shape": [8, 8, 1], "num_classes": 10,
        "preprocessing": {"resizing": [32, 32], "normalization": True},
        "backbone": {"application": "MobileNetV3Small",
                     "options": {"minimalistic": True, "alpha": 0.75, "include_preprocessing": False},
                     **backbone},
        "head": {"units": []},
        # SGD's training graph traces in a fraction of Adam's on a 100-layer
        # model: it keeps this CI test small.
        "training": {"optimizer": "sgd", "learning_rate": 0.05},
    }


@pytest.mark.slow
def test_application_backbone_cross_validates_on_resized_digits(small_digits):
    x, y = small_digits
    x, y = x[:240], y[:240]
    result = tfcv.CrossValidator(tfcv.ModelBuilder(application_spec()), folds=2).fit(
        x, y, epochs=1, batch_size=48, verbose=0)
    assert result.n_folds == 2
    for k in range(2):
        model = result.models[k]
        assert isinstance(model.get_layer("backbone"), keras.Model)
        assert model.get_layer("resizing").output.shape[1:3] == (32, 32)
        assert int(model.optimizer.iterations) == 3  # 120 samples / 48 per batch
        assert np.isfinite(result.histories[k]["loss"][0])
    assert len(result.scores["accuracy"]) == 2 and all(np.isfinite(result.scores["loss"]))
    assert not np.isnan(result.oof_predictions).any()


def test_application_weights_file_and_fine_tuning(tmp_path):
    donor = tfcv.build_model(application_spec(), compile=False).get_layer("backbone")
    weights = tmp_path / "backbone.weights.h5"
    donor.save_weights(weights)
    model = tfcv.build_model(application_spec(weights=str(weights), fine_tune_layers=5))
    backbone = model.get_layer("backbone")
    for got, want in zip(backbone.get_weights(), donor.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert [layer.trainable for layer in backbone.layers] == [False] * (len(backbone.layers) - 5) + [True] * 5
    frozen = tfcv.build_model(application_spec(fine_tune_layers=0), compile=False)
    assert not frozen.get_layer("backbone").trainable_weights
    with pytest.raises(FileNotFoundError, match="backbone.weights"):
        tfcv.build_model(application_spec(weights=str(tmp_path / "missing.weights.h5")))


def test_application_too_small_for_its_input_says_to_resize():
    spec = application_spec()
    del spec["preprocessing"]["resizing"]
    with pytest.raises(ValueError, match="resizing"):
        tfcv.build_model(spec)
