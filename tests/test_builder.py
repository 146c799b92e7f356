"""ModelSpec, ModelBuilder and build_model."""

from __future__ import annotations

import json
import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import tfcv
from tfcv.builder import ClassAccuracy, ClassCrossentropy, ModelSpec
from tfcv.crossval import adapt_preprocessing
from tfcv.layers import Augmentation, BatchMixer

# The minimal spec, exactly as written.
MINIMAL = {
    "input_shape": [8, 8, 1], "task": "classification", "num_classes": 10,
    "preprocessing": {"normalization": True},
    "augmentation": [{"flip": "horizontal"}, {"rotate": 0.05}],
}

# Together these use every option of the spec at least once.
OPTION_SPECS = {
    "minimal": MINIMAL,
    "preprocessing_residual_sgd_cosine_smoothing": {
        "input_shape": [8, 8, 1], "num_classes": 10,
        "preprocessing": {"rescaling": [2.0, -1.0], "resizing": [12, 12],
                          "normalization": {"mean": [0.1], "variance": [0.5]}, "value_range": [-1, 1]},
        "augmentation": [{"translate": 0.1}],
        "backbone": {"blocks": [
            {"filters": 8, "kernel_size": [3, 3], "strides": 2, "residual": True, "activation": "gelu",
             "pooling": "avg", "dropout": 0.1},
            {"filters": 8, "residual": True, "batch_norm": False, "pooling": None},
            16,
        ]},
        "head": {"pooling": "max", "units": [16, 8], "dropout": 0.1, "activation": "tanh"},
        "training": {"optimizer": {"name": "sgd", "momentum": 0.9}, "learning_rate": 0.05,
                     "schedule": {"name": "cosine", "decay_steps": 100, "alpha": 0.1, "warmup_steps": 5},
                     "label_smoothing": 0.1},
        "name": "residual_net",
    },
    "regression_flatten_adamw_exponential": {
        "input_shape": [8, 8, 1], "task": "regression", "num_outputs": 2,
        "backbone": [8],
        "head": {"pooling": "flatten", "units": [], "dropout": 0.3},
        "training": {"optimizer": {"name": "adamw", "weight_decay": 1e-4}, "loss": "huber",
                     "metrics": ["mae", "mse"],
                     "schedule": {"name": "exponential", "decay_steps": 10, "decay_rate": 0.9, "staircase": True}},
    },
    "binary_smoothing_constant_warmup": {
        "input_shape": [8, 8, 1], "num_classes": 2,
        "head": {"units": [], "dropout": 0.0},
        "training": {"label_smoothing": 0.1, "metrics": ["accuracy", "auc"],
                     "schedule": {"name": "constant", "warmup_steps": 3}},
    },
    "one_hot_categorical_rmsprop": {
        "input_shape": [8, 8, 1], "num_classes": 10,
        "training": {"optimizer": "rmsprop", "loss": "categorical_crossentropy", "label_smoothing": 0.05},
    },
    "every_grayscale_augmentation": {
        "input_shape": [8, 8, 1], "num_classes": 10, "preprocessing": {"normalization": True},
        "augmentation": [
            {"flip": "horizontal_and_vertical"}, {"rotate": 0.1}, {"zoom": 0.1}, {"translate": 0.1},
            {"crop": 0.9}, {"contrast": 0.2}, {"brightness": 0.2}, {"gaussian_noise": 0.05},
            {"erase": 0.2}, {"rand_augment": {"num_ops": 1, "factor": 0.3}}, {"shear": 0.1},
            {"perspective": 0.2}, {"blur": 0.5}, {"sharpness": 0.3},
        ],
    },
    "rgb_augmentation_rescaling": {
        "input_shape": [8, 8, 3], "num_classes": 10, "preprocessing": {"rescaling": 1 / 255},
        "augmentation": [{"hue": 0.1}, {"saturation": 0.2}, {"grayscale": 0.2}],
    },
    "batch_mixing": {
        "input_shape": [8, 8, 1], "num_classes": 10,
        "augmentation": [{"flip": "horizontal"}, {"mixup": 0.2}, {"cutmix": [0.5, 1.0]}],
    },
}


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


# ----------------------------------------------------------- the spec


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


def test_to_dict_from_dict_and_yaml_round_trip(tmp_path):
    for d in OPTION_SPECS.values():
        spec = ModelSpec.from_dict(d)
        plain = spec.to_dict()
        json.dumps(plain)  # builtins only
        assert ModelSpec.from_dict(plain) == spec
        assert ModelSpec.from_dict(plain).to_dict() == plain
        assert ModelSpec.from_yaml(spec.to_yaml()) == spec
        path = tmp_path / "spec.yaml"
        path.write_text(spec.to_yaml())
        assert ModelSpec.from_yaml(path) == spec
        assert ModelSpec.from_yaml(str(path)) == spec
    spec = ModelSpec.from_dict(MINIMAL)
    assert ModelSpec.from_dict(spec) is spec


blocks = st.lists(st.fixed_dictionaries({}, optional={
    "filters": st.integers(1, 64),
    "kernel_size": st.one_of(st.integers(1, 5), st.tuples(st.integers(1, 5), st.integers(1, 5))),
    "strides": st.integers(1, 2),
    "batch_norm": st.booleans(),
    "activation": st.sampled_from(["relu", "gelu", "swish", "linear"]),
    "pooling": st.sampled_from(["max", "avg", None]),
    "dropout": st.floats(0, 0.9),
    "residual": st.booleans(),
}), max_size=4)
heads = st.fixed_dictionaries({}, optional={
    "pooling": st.sampled_from(["avg", "max", "flatten"]),
    "units": st.lists(st.integers(1, 128), max_size=3),
    "dropout": st.floats(0, 0.9),
})


@settings(max_examples=40, deadline=None)
@given(blocks=blocks, head=heads, classes=st.integers(2, 20), smoothing=st.floats(0, 0.5),
       lr=st.floats(1e-6, 1.0))
def test_any_valid_spec_round_trips(blocks, head, classes, smoothing, lr):
    spec = ModelSpec.from_dict({
        "input_shape": [8, 8, 1], "num_classes": classes, "backbone": {"blocks": blocks}, "head": head,
        "training": {"label_smoothing": smoothing, "learning_rate": lr},
    })
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec.from_yaml(spec.to_yaml()) == spec
    assert len(spec.backbone.blocks) == len(blocks)


def test_yaml_is_read_safely_and_understands_exponent_floats():
    spec = ModelSpec.from_yaml(
        "input_shape: [8, 8, 1]\nnum_classes: 10\ntraining:\n  learning_rate: 1e-3\n  label_smoothing: 5E-2\n"
    )
    assert spec.training.learning_rate == 0.001 and spec.training.label_smoothing == 0.05
    with pytest.raises(yaml.YAMLError):
        ModelSpec.from_yaml("input_shape: !!python/object/apply:os.getcwd []\nnum_classes: 10\n")


def test_overrides_fill_in_what_the_data_knows():
    d = {"preprocessing": {"normalization": True}}
    spec = ModelSpec.from_dict(d, input_shape=(8, 8, 1), num_classes=10)
    assert spec.input_shape == (8, 8, 1) and spec.num_classes == 10
    assert ModelSpec.from_dict(spec, num_classes=3).num_classes == 3


def test_repr_shows_what_differs_from_the_defaults():
    assert repr(ModelSpec.from_dict(MINIMAL)) == (
        "ModelSpec(input_shape=(8, 8, 1), num_classes=10, preprocessing={'normalization': True}, "
        "augmentation=[{'flip': 'horizontal'}, {'rotate': 0.05}])"
    )
    assert "head={'units': [32]}" in repr(ModelSpec.from_dict({**MINIMAL, "head": {"units": [32]}}))


@pytest.mark.parametrize("changes, error, match", [
    ({"backbone": {"blocks": [{}, {}, {"pooling": "maxx"}]}}, ValueError,
     r"`backbone\.blocks\[2\]\.pooling`.*'maxx'.*'max', 'avg', null"),
    ({"backbone": {"blocks": [{"pool": "max"}]}}, ValueError, r"Unknown key `backbone\.blocks\[0\]\.pool`"),
    ({"backbone": {"blocks": [{"filters": "many"}]}}, TypeError, r"backbone\.blocks\[0\]\.filters"),
    ({"backbone": {"blocks": [], "weights": "w.h5"}}, ValueError, r"backbone\.weights"),
    ({"backbone": "MobileNetV9"}, ValueError, r"backbone\.application.*MobileNetV9.*MobileNetV3Small"),
    ({"backbone": {"application": "MobileNetV3Small", "weights": "imagenet"}}, ValueError,
     r"backbone\.weights.*never downloads"),
    ({"backbone": {"application": "MobileNetV3Small", "options": {"pooling": "avg"}}}, ValueError,
     r"backbone\.options\.pooling"),
    ({"head": {"units": [64, 0]}}, ValueError, r"head\.units\[1\].*>= 1"),
    ({"head": {"pooling": "sum"}}, ValueError, r"head\.pooling.*'sum'"),
    ({"preprocessing": {"resizing": [32]}}, ValueError, r"preprocessing\.resizing"),
    ({"preprocessing": {"normalization": "yes"}}, TypeError, r"preprocessing\.normalization"),
    ({"augmentation": [{"flip": "horizontal"}, {"rotate": "x"}]}, ValueError, r"augmentation\[1\]\.rotate"),
    ({"augmentation": [{"flip": "sideways"}]}, ValueError, r"augmentation\[0\]\.flip"),
    ({"augmentation": [{"hue": 0.1}]}, ValueError, r"augmentation\[0\].*3 channels"),
    ({"augmentation": [{"mixup": 0.2}, {"mixup": 0.4}]}, ValueError, r"augmentation\[1\].*at most one"),
    ({"augmentation": [{"cutmix": 2.0}]}, ValueError, r"augmentation\[0\]\.cutmix"),
    ({"training": {"optimizer": "adamm"}}, ValueError, r"training\.optimizer.*'adamm'"),
    ({"training": {"optimizer": {"name": "sgd", "momentun": 0.9}}}, ValueError,
     r"Unknown key `training\.optimizer\.momentun`"),
    ({"training": {"schedule": {"name": "cosine"}}}, ValueError, r"training\.schedule\.decay_steps"),
    ({"training": {"schedule": {"name": "exponential", "decay_steps": 5, "decay_rate": 0.9,
                                "warmup_steps": 2}}}, ValueError, r"training\.schedule\.warmup_steps"),
    ({"training": {"label_smoothing": 0.1, "loss": "sparse_categorical_crossentropy"}}, ValueError,
     r"training\.label_smoothing"),
    ({"training": {"metrics": ["accuracy", "acuracy"]}}, ValueError, r"training\.metrics\[1\]"),
    ({"training": {"learning_rate": "fast"}}, TypeError, r"training\.learning_rate"),
    ({"task": "segmentation"}, ValueError, r"`task`.*'classification', 'regression'"),
    ({"num_classes": 1}, ValueError, r"`num_classes`.*>= 2"),
    ({"input_shape": [8, 8]}, TypeError, r"`input_shape`"),
    ({"extra": 1}, ValueError, r"Unknown key `extra`"),
])
def test_invalid_specs_name_the_key_path_the_value_and_what_is_accepted(changes, error, match):
    with pytest.raises(error, match=match):
        ModelSpec.from_dict({**MINIMAL, **changes})


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match="Missing key `input_shape`"):
        ModelSpec.from_dict({"num_classes": 10})
    with pytest.raises(ValueError, match="Missing key `num_classes`"):
        ModelSpec.from_dict({"input_shape": [8, 8, 1]})
    with pytest.raises(ValueError, match="regression"):
        ModelSpec.from_dict({"input_shape": [8, 8, 1], "task": "regression", "num_classes": 3})
    with pytest.raises(TypeError, match="mapping"):
        ModelSpec.from_dict([("input_shape", [8, 8, 1])])


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


def test_class_loss_and_accuracy_take_integer_and_one_hot_labels():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], "float32")
    labels = np.array([0, 2, 0])
    one_hot = np.eye(3, dtype="float32")[labels]
    for smoothing in (0.0, 0.2):
        expected = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)(one_hot, probs)
        loss = ClassCrossentropy(label_smoothing=smoothing)
        np.testing.assert_allclose(loss(labels, probs), expected, rtol=1e-6)
        np.testing.assert_allclose(loss(labels[:, None], probs), expected, rtol=1e-6)
        np.testing.assert_allclose(loss(one_hot, probs), expected, rtol=1e-6)
    for y_true in (labels, one_hot, 0.8 * one_hot + 0.2 * one_hot[::-1]):
        metric = ClassAccuracy()
        metric.update_state(y_true, probs)
        assert float(metric.result()) == pytest.approx(2 / 3)


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
