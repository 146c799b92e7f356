"""tfcv.models: the ready-made reference CNN."""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest

import tfcv
from tfcv.models import ReferenceCNN, TextClassifier


def test_reference_cnn_has_one_block_per_filters_entry_and_pools_while_larger_than_2x2():
    model = tfcv.models.reference_cnn((32, 32, 3), 10, filters=(16, 32, 64))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.filters for conv in convs] == [16, 32, 64]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [pool.output.shape[1] for pool in pools] == [16, 8, 4]
    # The default is two blocks.
    default = tfcv.models.reference_cnn()
    assert [layer.filters for layer in default.layers if isinstance(layer, keras.layers.Conv2D)] == [32, 64]
    assert model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": ()}, r"filters=\(\)"),
        ({"filters": (16, 0)}, r"filters=\(16, 0\)"),
        ({"filters": 32}, "filters=32"),
        ({"filters": (16, 2.5)}, r"filters=\(16, 2.5\)"),
        ({"input_shape": (8, 8)}, r"input_shape=\(8, 8\)"),
        ({"input_shape": (8.5, 8, 1)}, r"input_shape=\(8\.5, 8, 1\). Expected \(height, width, channels\)"),
        ({"input_shape": (0, 8, 1)}, r"input_shape=\(0, 8, 1\)"),
        ({"learning_rate": -1.0}, r"learning_rate=-1\.0. Expected a number >= 0"),
        ({"num_classes": 1}, "num_classes=1. Expected an int >= 2"),
        ({"num_classes": 2.5}, "num_classes=2.5"),
    ],
)
def test_reference_cnn_names_the_bad_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfcv.models.reference_cnn(**kwargs)


def test_reference_cnn_build_fn_pickles_and_builds_a_compiled_model():
    build_fn = pickle.loads(pickle.dumps(ReferenceCNN([8, 8, 1], np.int64(10))))
    assert repr(build_fn) == "ReferenceCNN(input_shape=(8, 8, 1), num_classes=10)"
    model = build_fn()
    assert isinstance(model, keras.Model) and model.compiled
    assert model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 10)
    assert build_fn() is not model


@pytest.mark.parametrize("make, error, match", [
    # The build_fns coerced with int(): 10.9 classes became 10, silently.
    (lambda: ReferenceCNN((8, 8, 1), 10.9), ValueError, r"num_classes=10\.9"),
    (lambda: ReferenceCNN((8.5, 8, 1), 10), ValueError, r"input_shape=\(8\.5, 8, 1\)"),
    (lambda: TextClassifier(2.7), ValueError, r"num_classes=2\.7"),
    # Unknown options failed in every fold's build, dropout and learning_rate inside Keras.
    (lambda: TextClassifier(2, max_token=50), TypeError, r"\['max_token'\] for TextClassifier.*'max_tokens'"),
    (lambda: tfcv.models.text_classifier(2, dropout=1.5), ValueError, r"dropout=1\.5. Expected a number >= 0"),
    (lambda: tfcv.models.text_classifier(2, learning_rate=0), ValueError, r"learning_rate=0. Expected a number > 0"),
])
def test_build_fns_check_their_arguments_when_made(make, error, match):
    with pytest.raises(error, match=match):
        make()
