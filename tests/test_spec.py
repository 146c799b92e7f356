"""tfcv.spec: ModelSpec and its sections as data, their validation, YAML round trips
and the names tfcv.spec re-exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import tfcv.builder
import tfcv.spec
from tfcv.spec import ConvBlock, ModelSpec, SpecError

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



# ----------------------------------------------------------- the spec


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
    # No Python object is ever built from a spec: the tag is refused by name.
    with pytest.raises(ValueError, match="python/object/apply:os.getcwd"):
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
    ({"backbone": {"application": "MobileNetV3Small", "fine_tune": {"unfreeze": "some"}}}, TypeError,
     r"backbone\.fine_tune\.unfreeze"),
    ({"backbone": {"application": "MobileNetV3Small", "options": {"pooling": "avg"}}}, ValueError,
     r"backbone\.options\.pooling"),
    ({"head": {"units": [64, 0]}}, ValueError, r"head\.units\[1\].*>= 1"),
    ({"head": {"pooling": "sum"}}, ValueError, r"head\.pooling.*'sum'"),
    ({"preprocessing": {"resizing": [32]}}, ValueError, r"preprocessing\.resizing"),
    ({"preprocessing": {"normalization": "yes"}}, TypeError, r"preprocessing\.normalization"),
    ({"preprocessing": {"normalization": {"mean": 0.5, "variance": -1}}}, ValueError,
     r"preprocessing\.normalization\.variance.*-1.*>= 0"),
    ({"preprocessing": {"normalization": {"mean": [0, 0, 0], "variance": [1, 1, 1]}}}, ValueError,
     r"preprocessing\.normalization\.mean.*one per channel: 1 for input_shape \[8, 8, 1\]"),
    ({"preprocessing": {"normalization": {"mean": [0.5], "variance": 1}}}, ValueError,
     r"`preprocessing\.normalization`.*of the same shape"),
    ({"augmentation": [{"flip": "horizontal"}, {"rotate": "x"}]}, ValueError, r"augmentation\[1\]\.rotate"),
    ({"augmentation": [{"flip": "sideways"}]}, ValueError, r"augmentation\[0\]\.flip"),
    ({"augmentation": [{"hue": 0.1}]}, ValueError, r"augmentation\[0\].*3 channels"),
    ({"augmentation": [{"mixup": 0.2}, {"mixup": 0.4}]}, ValueError, r"augmentation\[1\].*at most one"),
    ({"augmentation": [{"cutmix": 2.0}]}, ValueError, r"augmentation\[0\]\.cutmix"),
    ({"augmentation": [{"rotat": 0.1}]}, ValueError, r"`augmentation\[0\]`.*unknown augmentation 'rotat'"),
    ({"augmentation": [{"rotate": {"factr": 0.1}}]}, ValueError, r"augmentation\[0\]\.rotate.*'factr'"),
    ({"augmentation": {"rotate": 0.1}}, TypeError, r"`augmentation`.*a list of one-key dicts"),
    ({"training": {"optimizer": "adamm"}}, ValueError, r"training\.optimizer.*'adamm'"),
    ({"training": {"optimizer": {"name": "sgd", "momentun": 0.9}}}, ValueError,
     r"Unknown key `training\.optimizer\.momentun`"),
    ({"training": {"optimizer": {"name": "sgd", "momentum": "high"}}}, ValueError,
     r"`training\.optimizer`.*'high'.*SGD refused it: `momentum` must be a float"),
    ({"training": {"optimizer": {"name": "adam", "clipnorm": 1.0, "clipvalue": 1.0}}}, ValueError,
     r"`training\.optimizer`.*Only one of `clipnorm`, `clipvalue`"),
    ({"training": {"optimizer": "multioptimizer"}}, ValueError, r"training\.optimizer.*'multioptimizer'"),
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
    ({"name": "digits/v1"}, ValueError, r"`name`.*'digits/v1'.*without '/'"),
    ({"num_classes": 2, "training": {"loss": "categorical_crossentropy"}}, ValueError,
     r"`training\.loss`.*'categorical_crossentropy'.*one sigmoid unit"),
    ({"num_classes": 2, "training": {"loss": "SparseCategoricalCrossentropy"}}, ValueError,
     r"`training\.loss`.*'SparseCategoricalCrossentropy'.*one sigmoid unit"),
])
def test_invalid_specs_name_the_key_path_the_value_and_what_is_accepted(changes, error, match):
    with pytest.raises(error, match=match) as caught:
        ModelSpec.from_dict({**MINIMAL, **changes})
    # Every spec problem is a SpecError, the augmentation list's included, as SpecError's docstring says.
    assert isinstance(caught.value, SpecError)
    assert "in the model spec" in str(caught.value)


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match="Missing key `input_shape`"):
        ModelSpec.from_dict({"num_classes": 10})
    with pytest.raises(ValueError, match="Missing key `num_classes`"):
        ModelSpec.from_dict({"input_shape": [8, 8, 1]})
    with pytest.raises(ValueError, match="regression"):
        ModelSpec.from_dict({"input_shape": [8, 8, 1], "task": "regression", "num_classes": 3})
    with pytest.raises(TypeError, match="mapping"):
        ModelSpec.from_dict([("input_shape", [8, 8, 1])])


def test_numpy_values_are_stored_as_builtins():
    block = ConvBlock(filters=np.int64(8), residual=np.True_, dropout=np.float32(0.5))
    assert type(block.filters) is int and block.residual is True and type(block.dropout) is float
    yaml.safe_dump(ModelSpec.from_dict({**MINIMAL, "backbone": {"blocks": [block]}}).to_dict())
    # Mappings kept as given held NumPy values: Keras refused the np.float32 momentum, YAML all three.
    spec = ModelSpec.from_dict({
        **MINIMAL,
        "preprocessing": {"normalization": {"mean": np.array([0.5], "float32"), "variance": np.array([0.25])}},
        "backbone": {"application": "MobileNetV3Small", "options": {"alpha": np.float32(0.75)}},
        "training": {"optimizer": {"name": "sgd", "momentum": np.float32(0.5)}},
    })
    assert ModelSpec.from_yaml(spec.to_yaml()) == spec
    assert spec.training.optimizer["momentum"] == 0.5 and type(spec.backbone.options["alpha"]) is float


def test_spec_names_stay_importable_from_the_builder():
    for name in ("ModelSpec", "Preprocessing", "ConvBlock", "Backbone", "Head", "Training", "SpecError",
                 "SpecValueError", "SpecTypeError", "read_yaml", "application_names", "optimizer_class"):
        assert getattr(tfcv.builder, name) is getattr(tfcv.spec, name), name
    assert set(tfcv.spec.__all__) >= {"ModelSpec", "SpecError", "SpecValueError", "SpecTypeError", "read_yaml"}
