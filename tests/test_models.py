"""tfcv.models: the ready-made reference CNN."""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest

import tfcv
from tfcv.models import ReferenceCNN


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
