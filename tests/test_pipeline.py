"""tfcv._pipeline: the input Pipeline of a fold (decode, resize, rescale, cache,
shuffle, batch), on any tf.data.Dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import read_all

from tfcv.data import Pipeline


def small_images(n=20):
    rng = np.random.default_rng(0)
    return rng.integers(0, 17, size=(n, 8, 8, 1)).astype("uint8"), np.arange(n, dtype="int64")


def test_pipeline_resizes_and_rescales_x_only():
    x, y = small_images()
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    rescaled = Pipeline(rescale=1 / 16)(ds, batch_size=7)
    assert rescaled.element_spec[0].shape.as_list() == [None, 8, 8, 1]
    x_out, y_out = read_all(rescaled)
    assert x_out.dtype == np.float32
    np.testing.assert_array_equal(x_out, x.astype("float32") / 16)
    np.testing.assert_array_equal(y_out, y)
    resized = Pipeline(image_size=(16, 12), rescale=1 / 16, offset=-0.5)(ds, batch_size=7)
    x_big, _ = read_all(resized)
    assert x_big.shape == (20, 16, 12, 1)
    assert x_big.min() >= -0.5 and x_big.max() <= 0.5 + 1e-6
    np.testing.assert_allclose(x_big.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)) / 16 - 0.5, atol=0.05)
    as_is = Pipeline()(ds, batch_size=20)
    np.testing.assert_array_equal(read_all(as_is)[0], x)
    assert read_all(Pipeline(dtype="float16")(ds, batch_size=20))[0].dtype == np.float16


def test_pipeline_decodes_encoded_images():
    x, y = small_images(6)
    encoded = [tf.io.encode_png(image).numpy() for image in x]
    ds = tf.data.Dataset.from_tensor_slices((encoded, y))
    decoded = Pipeline(channels=1)(ds, batch_size=6)
    np.testing.assert_array_equal(read_all(decoded)[0], x)
    bare = tf.data.Dataset.from_tensor_slices(encoded)
    out = next(iter(Pipeline(channels=3, image_size=(4, 4))(bare, batch_size=6)))
    assert out.shape == (6, 4, 4, 3)


def test_pipeline_shuffles_training_data_only_and_reproducibly():
    x, y = small_images(200)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    pipeline = Pipeline(shuffle_buffer=200)
    first = read_all(pipeline(ds, batch_size=32, training=True, seed=5))[1]
    again = read_all(pipeline(ds, batch_size=32, training=True, seed=5))[1]
    other = read_all(pipeline(ds, batch_size=32, training=True, seed=6))[1]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, y)
    np.testing.assert_array_equal(np.sort(first), y)
    np.testing.assert_array_equal(read_all(pipeline(ds, batch_size=32))[1], y)
    dropped = Pipeline(drop_remainder=True)(ds, batch_size=32, training=True, seed=0)
    assert sum(len(b) for _, b in dropped) == 192
    assert sum(len(b) for _, b in Pipeline(drop_remainder=True)(ds, batch_size=32)) == 200
    with pytest.raises(ValueError, match="seed=None"):
        pipeline(ds, batch_size=32, training=True)


def test_pipeline_caches_in_memory_and_to_files(tmp_path):
    x, y = small_images()
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    in_memory = Pipeline(cache="memory", rescale=1 / 16)(ds, batch_size=8)
    np.testing.assert_array_equal(read_all(in_memory)[0], read_all(in_memory)[0])
    cache_dir = tmp_path / "cache"
    on_disk = Pipeline(cache=cache_dir)(ds, batch_size=8, cache_name="part")
    read_all(on_disk)
    assert any(p.name.startswith("part") for p in cache_dir.iterdir())
    # A second pipeline over other data with the same cache file reads the
    # cache, not its source: proof that the file cache is used.
    other = tf.data.Dataset.from_tensor_slices((x * 0, y * 0))
    from_cache = Pipeline(cache=str(cache_dir))(other, batch_size=8, cache_name="part")
    np.testing.assert_array_equal(read_all(from_cache)[0], x)


def test_pipeline_config_round_trips_and_validates():
    pipeline = Pipeline(image_size=[32, 32], rescale=1 / 255, cache="memory", shuffle_buffer=64)
    assert pipeline.image_size == (32, 32)
    config = json.loads(json.dumps(pipeline.to_dict()))
    assert Pipeline.from_dict(config) == pipeline
    assert Pipeline.from_dict(pipeline) is pipeline
    for kwargs, exc, match in [
        ({"image_size": (0, 8)}, ValueError, r"image_size=\(0, 8\)"),
        ({"image_size": 8}, ValueError, "image_size=8"),
        ({"channels": 2}, ValueError, "channels=2"),
        ({"shuffle_buffer": 0}, ValueError, "shuffle_buffer=0"),
        ({"drop_remainder": 1}, TypeError, "drop_remainder=1. Expected a bool"),
        ({"offset": None}, TypeError, "offset=None. Expected a float"),
        ({"cache": ""}, ValueError, "cache=''"),
        ({"rescale": "1/255"}, TypeError, "rescale='1/255'"),
        ({"dtype": "pixels"}, ValueError, "dtype='pixels'"),
    ]:
        with pytest.raises(exc, match=match):
            Pipeline(**kwargs)
    with pytest.raises(ValueError, match="unknown keys"):
        Pipeline.from_dict({"resize": 3})
    with pytest.raises(TypeError, match="Expected a tf.data.Dataset"):
        Pipeline()(np.zeros(3), batch_size=1)
