"""tfcv._digits_tfds: the offline digits TFDS dataset (`tfcv.data.DigitsBuilder`,
`tfcv.data.prepare_digits`)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from conftest import read_all

import tfcv

N_DIGITS = 1797


def test_digits_builder_prepares_a_real_tfds_dataset_offline(tfds_digits_dir, raw_digits):
    x, y = raw_digits
    assert tfcv.data.prepare_digits(tfds_digits_dir) == tfds_digits_dir  # idempotent
    builder = tfds.builder("tfcv_digits", data_dir=tfds_digits_dir)
    assert isinstance(builder, tfcv.data.DigitsBuilder)
    assert builder.info.supervised_keys == ("image", "label")
    assert builder.info.splits["train"].num_examples == N_DIGITS
    ds = tfds.load("tfcv_digits", split="train", data_dir=tfds_digits_dir, as_supervised=True, download=False)
    x_ds, y_ds = read_all(ds.batch(512))
    np.testing.assert_array_equal(x_ds, x)
    np.testing.assert_array_equal(y_ds, y)
    assert x_ds.max() == 16
    x_float, _ = tfcv.datasets.load_digits()
    np.testing.assert_array_equal(x_ds.astype("float32") / 16, x_float)
