"""Augmentation, RandomResizedCrop, BatchMixer, randomized_inference and the
augmentation grid."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcv
from tests.conftest import run_layer_test
from tfcv import plots
from tfcv.layers import (
    AUGMENTATIONS,
    Augmentation,
    BatchMixer,
    RandomResizedCrop,
    randomized_inference,
)

RGB_ONLY = ("hue", "saturation", "grayscale")
# A value for every augmentation name, strong enough to change a batch.
SETTINGS = {
    "flip": "horizontal",
    "rotate": 0.2,
    "zoom": 0.2,
    "translate": 0.2,
    "crop": 0.7,
    "contrast": 0.5,
    "brightness": 0.3,
    "gaussian_noise": 0.05,
    "erase": 1.0,
    "rand_augment": {"num_ops": 2, "factor": 0.5},
    "shear": 0.3,
    "perspective": 0.5,
    "blur": 1.0,
    "sharpness": 0.5,
    "hue": 0.3,
    "saturation": 0.5,
    "grayscale": 1.0,
}


def images(n=16, size=8, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, channels)).astype("float32")


def test_every_augmentation_name_has_a_test_setting():
    assert set(SETTINGS) == set(AUGMENTATIONS)


# --------------------------------------------------------------- layers


def test_augmentation_layer_contract(tmp_path):
    items = [{"flip": "horizontal"}, {"rotate": 0.1}, {"crop": 0.8}, {"contrast": 0.2}, {"gaussian_noise": 0.02}]
    run_layer_test(Augmentation, {"augmentations": items, "seed": 0}, images(), tmp_path)


def test_random_resized_crop_layer_contract(tmp_path):
    run_layer_test(RandomResizedCrop, {"factor": (0.5, 0.9), "seed": 0}, images(), tmp_path)


def test_batch_mixer_layer_contract(tmp_path):
    x = images(8)
    labels = np.arange(8) % 4
    layer = run_layer_test(
        BatchMixer, {"mixup": 0.4, "cutmix": 1.0, "num_classes": 4, "seed": 0}, (x, labels), tmp_path,
        expected_output_shapes=[x.shape, (8, 4)], expected_output_dtypes=["float32", "float32"],
        # A tf.data layer: it mixes unless told `training=False`, so a
        # SavedModel serving it would mix too; no serving test.
        identity_at_inference=False, saved_model=False,
    )
    # Inference only encodes the labels.
    out_x, out_y = layer(x, labels, training=False)
    np.testing.assert_array_equal(out_x, x)
    np.testing.assert_array_equal(out_y, np.eye(4)[labels])


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_each_augmentation_randomizes_in_training_and_is_the_identity_at_inference(name):
    x = images(channels=3 if name in RGB_ONLY else 1)
    layer = Augmentation([{name: SETTINGS[name]}], seed=1)
    trained = np.asarray(layer(x, training=True))
    assert trained.shape == x.shape and trained.dtype == x.dtype
    assert not np.allclose(trained, x)
    assert np.all(np.isfinite(trained))
    np.testing.assert_array_equal(layer(x, training=False), x)
    np.testing.assert_array_equal(layer(x), x)
    # In a graph too: tf.function, as in fit/predict and serving.
    traced = np.asarray(tf.function(lambda t: layer(t, training=True))(x))
    assert traced.shape == x.shape and not np.allclose(traced, x)
    np.testing.assert_array_equal(tf.function(lambda t: layer(t, training=False))(x), x)
    # The explicit switch wins over `training`.
    assert not np.allclose(layer(x, training=False, randomized=True), x)
    np.testing.assert_array_equal(layer(x, training=True, randomized=False), x)


def test_integer_images_keep_their_dtype_and_range():
    x = (images() * 255).astype("uint8")
    layer = Augmentation([{"rotate": 0.2}, {"brightness": 0.5}], value_range=(0, 255), seed=0)
    out = np.asarray(layer(x, training=True))
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert not np.array_equal(out, x)
    np.testing.assert_array_equal(layer(x), x)


def test_single_unbatched_image():
    x = images(1)[0]
    layer = Augmentation([{"flip": "horizontal_and_vertical"}, {"crop": 0.5}], seed=0)
    assert layer(x, training=True).shape == x.shape
    np.testing.assert_array_equal(layer(x), x)


def test_same_seed_same_batch_and_other_seed_other_batch():
    x = images()
    items = [{"flip": "horizontal"}, {"rotate": 0.2}, {"crop": 0.7}, {"erase": 1.0}]
    first = Augmentation(items, seed=7)(x, training=True)
    again = Augmentation(items, seed=7)(x, training=True)
    other = Augmentation(items, seed=8)(x, training=True)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_without_a_seed_keras_global_seed_makes_it_reproducible():
    x = images()
    items = [{"rotate": 0.2}, {"zoom": 0.2}]
    keras.utils.set_random_seed(3)
    first = Augmentation(items)(x, training=True)
    keras.utils.set_random_seed(3)
    again = Augmentation(items)(x, training=True)
    np.testing.assert_array_equal(first, again)


def test_each_image_of_a_batch_gets_its_own_transformation():
    x = np.repeat(images(1), 16, axis=0)
    out = np.asarray(Augmentation([{"rotate": 0.3}], seed=0)(x, training=True))
    assert len({out[i].tobytes() for i in range(16)}) > 8


def test_random_resized_crop_crops_then_resizes():
    # A horizontal ramp: a crop keeping half the width spans half the values.
    ramp = np.tile(np.linspace(0, 1, 16, dtype="float32"), (16, 1))[np.newaxis, ..., np.newaxis]
    batch = np.repeat(ramp, 8, axis=0)
    out = np.asarray(RandomResizedCrop(factor=(0.5, 0.5), seed=0)(batch, training=True))
    spans = out[..., 0].max(axis=(1, 2)) - out[..., 0].min(axis=(1, 2))
    np.testing.assert_allclose(spans, 0.5, atol=1e-5)
    assert len(np.unique(out[:, 0, 0, 0].round(4))) > 1  # random positions
    # A crop keeping everything is the identity, even in training.
    np.testing.assert_allclose(RandomResizedCrop(factor=1.0, seed=0)(batch, training=True), batch, atol=1e-6)


@pytest.mark.parametrize(
    "augmentations, match",
    [
        ([{"flip": "sideways"}], r"augmentations\[0\]"),
        ([{"rotate": 0.1}, {"spin": 0.1}], r"augmentations\[1\].*unknown augmentation 'spin'"),
        ([{"rotate": 0.1, "zoom": 0.1}], r"one-key dict"),
        ([{"rotate": {"factr": 0.1}}], r"augmentations\[0\]\.rotate.*factr"),
        ([{"contrast": 2.5}], r"augmentations\[0\]\.contrast.*RandomContrast"),
        ([{"mixup": 0.2}], r"BatchMixer"),
    ],
)
def test_invalid_augmentation_lists_are_refused_with_the_item_path(augmentations, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Augmentation(augmentations)


def test_numpy_values_are_taken_and_kept_as_builtins():
    # Keras refused an np.float32 factor ("Received: factor=0.25 ... should be in the range [-1, 1]"),
    # and a spec holding an np.float64 one could not be written as YAML.
    layer = Augmentation([{"rotate": np.float32(0.25)}, {"contrast": np.array([0.125, 0.25])}],
                         value_range=np.array([0.0, 1.0]), seed=0)
    assert layer.get_config()["augmentations"] == [{"rotate": 0.25}, {"contrast": [0.125, 0.25]}]
    assert layer.get_config()["value_range"] == [0.0, 1.0]
    spec = tfcv.ModelSpec.from_dict({"input_shape": [8, 8, 1], "num_classes": 3,
                                     "augmentation": [{"rotate": np.float64(0.125)}]})
    assert tfcv.ModelSpec.from_yaml(spec.to_yaml()) == spec


@pytest.mark.parametrize("make", [
    lambda seed: Augmentation([{"rotate": 0.1}], seed=seed),
    lambda seed: RandomResizedCrop(0.5, seed=seed),
    lambda seed: BatchMixer(mixup=0.2, seed=seed),
])
def test_seeds_are_ints_numpy_ints_included(make):
    # RandomResizedCrop handed its seed to Keras' SeedGenerator, which refused np.int64(3) as "must be
    # an integer. Received: seed=3"; BatchMixer to NumPy, which raised its own TypeError for 'x'.
    config = make(np.int64(3)).get_config()
    assert config["seed"] == 3 and type(config["seed"]) is int
    with pytest.raises(TypeError, match=r"Invalid value for argument `seed`\. Received: seed='x'\. Expected an int"):
        make("x")
    # One seed check for tfcv's layers and its cross-validator: what NumPy and Keras' SeedGenerator take.
    with pytest.raises(ValueError, match=r"Received: seed=-1\. Expected an int in \[0, 2\*\*32 - 1\] or None"):
        make(-1)


def test_rgb_only_augmentation_refuses_grayscale_images():
    with pytest.raises(ValueError, match="3 channels"):
        Augmentation([{"hue": 0.1}])(images(channels=1), training=True)


def test_item_arguments_reach_the_keras_layer():
    layer = Augmentation([{"rotate": {"factor": 0.1, "fill_mode": "constant"}}, {"contrast": 0.2}],
                         value_range=(0, 255))
    rotate, contrast = layer.augmentation_layers
    assert isinstance(rotate, keras.layers.RandomRotation) and rotate.fill_mode == "constant"
    assert tuple(contrast.value_range) == (0, 255)


# ----------------------------------------------------------- batch mixing


def constant_images(values, size=8):
    return np.asarray(values, dtype="float32")[:, None, None, None] * np.ones((1, size, size, 1), "float32")


def test_mixup_mixes_labels_with_the_image_weights():
    n = 8
    values = np.linspace(0.1, 0.9, n)
    x = constant_images(values)
    out_x, out_y = BatchMixer(mixup=1.0, num_classes=n, seed=0)(x, np.arange(n))
    out_x, out_y = np.asarray(out_x), np.asarray(out_y)
    np.testing.assert_allclose(out_y.sum(axis=1), 1.0, atol=1e-6)
    # Image j is w * x_j + (1 - w) * x_p with label row w * e_j + (1 - w) * e_p.
    expected = out_y @ values
    np.testing.assert_allclose(out_x[:, 0, 0, 0], expected, atol=1e-5)
    assert np.any((out_y > 0.01) & (out_y < 0.99)), "nothing was mixed"


def test_cutmix_label_weight_is_the_share_of_pasted_pixels():
    n = 8
    values = np.arange(1, n + 1, dtype="float32")
    x = constant_images(values, size=6)
    for seed in range(3):
        out_x, out_y = BatchMixer(cutmix=1.0, num_classes=n, seed=seed)(x, np.arange(n))
        out_x, out_y = np.asarray(out_x), np.asarray(out_y)
        for j in range(n):
            pixels = out_x[j, ..., 0]
            for k in range(n):
                share = np.mean(pixels == values[k])
                np.testing.assert_allclose(out_y[j, k], share, atol=1e-6)


def test_mixer_with_both_chooses_one_per_batch_and_is_seeded():
    x = constant_images(np.linspace(0.1, 0.9, 8))
    labels = np.arange(8) % 4
    mixer = BatchMixer(mixup=1.0, cutmix=1.0, num_classes=4, seed=0)
    kinds = set()
    for _ in range(12):
        out_x, out_y = (np.asarray(t) for t in mixer(x, labels))
        np.testing.assert_allclose(out_y.sum(axis=1), 1.0, atol=1e-6)
        # CutMix keeps every pixel of some image; MixUp blends whole images.
        kinds.add("cutmix" if np.all(np.isin(out_x.round(6), x[:, 0, 0, 0].round(6))) else "mixup")
    assert kinds == {"mixup", "cutmix"}
    a = BatchMixer(mixup=1.0, cutmix=1.0, num_classes=4, seed=5)(x, labels)
    b = BatchMixer(mixup=1.0, cutmix=1.0, num_classes=4, seed=5)(x, labels)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


def test_mixer_runs_in_a_tf_data_pipeline():
    x, labels = images(20), np.arange(20) % 5
    mixer = BatchMixer(mixup=0.4, num_classes=5, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8).map(mixer)
    batches = list(dataset)
    assert [tuple(b[0].shape) for b in batches] == [(8, 8, 8, 1), (8, 8, 8, 1), (4, 8, 8, 1)]
    assert all(tuple(b[1].shape) == (len(b[0]), 5) for b in batches)


def test_mixer_passes_binary_labels_as_columns():
    _, out_y = BatchMixer(mixup=0.4, seed=0)(images(4), np.array([0, 1, 1, 0]))
    assert tuple(out_y.shape) == (4, 1)
    assert np.all((np.asarray(out_y) >= 0) & (np.asarray(out_y) <= 1))


@pytest.mark.parametrize("kwargs, match", [
    ({}, "mixup.*cutmix"),
    ({"mixup": 0.0}, "mixup"),
    ({"cutmix": 1.5}, "cutmix"),
    ({"mixup": 0.2, "num_classes": 1}, "num_classes=1"),
])
def test_invalid_mixer_settings(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BatchMixer(**kwargs)


# ------------------------------------------------- randomized inference


def random_model(dropout=0.5, augmentation=({"flip": "horizontal"}, {"rotate": 0.2}), dropout_cls=None):
    """Augmentation -> conv -> BatchNormalization -> dropout -> dense, with
    BatchNormalization moving statistics far from any batch's."""
    inputs = keras.Input((8, 8, 1))
    x = Augmentation(list(augmentation), seed=0, name="augmentation")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = (dropout_cls or keras.layers.Dropout)(dropout, name="dropout")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="dense")(x)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    gamma, beta, _, _ = bn.get_weights()
    bn.set_weights([gamma, beta, np.full(4, 0.7, "float32"), np.full(4, 3.0, "float32")])
    return model


def copy_weights(source, target):
    for name in ("conv", "bn", "dense"):
        target.get_layer(name).set_weights(source.get_layer(name).get_weights())


def test_randomized_inference_randomizes_augmentation_and_dropout_only():
    x = images()
    model = random_model()
    plain = random_model(dropout=0.0, augmentation=())
    copy_weights(model, plain)
    reference = np.asarray(plain(x, training=False))
    bn_before = [w.copy() for w in model.get_layer("bn").get_weights()]

    with randomized_inference():
        first = np.asarray(model(x, training=False))
        second = np.asarray(model(x, training=False))
        # The same model without random layers: BatchNormalization stays in
        # inference mode (moving statistics), so nothing changes.
        np.testing.assert_array_equal(plain(x, training=False), reference)
        np.testing.assert_array_equal(plain(x), reference)
    assert not np.allclose(first, second)
    for before, after in zip(bn_before, model.get_layer("bn").get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    # With batch statistics the reference would differ: the check above has teeth.
    assert not np.allclose(plain(x, training=True), reference, atol=1e-3)
    # Outside the context everything is deterministic again.
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    np.testing.assert_array_equal(model(x), model(x))


def test_randomized_inference_can_switch_each_kind_alone():
    x = images()
    augment_only = random_model(dropout=0.0)
    dropout_only = random_model(augmentation=())
    with randomized_inference(augmentation=False):
        np.testing.assert_array_equal(augment_only(x, training=False), augment_only(x, training=False))
        assert not np.allclose(dropout_only(x, training=False), dropout_only(x, training=False))
    with randomized_inference(dropout=False):
        assert not np.allclose(augment_only(x, training=False), augment_only(x, training=False))
        np.testing.assert_array_equal(dropout_only(x, training=False), dropout_only(x, training=False))


class MyDropout(keras.layers.Dropout):
    def call(self, inputs, training=False):
        return super().call(inputs, training=training) * 1.0


@pytest.mark.parametrize("dropout_cls", [keras.layers.SpatialDropout2D, keras.layers.GaussianDropout,
                                         keras.layers.AlphaDropout, MyDropout])
def test_randomized_inference_covers_the_dropout_family(dropout_cls):
    x = images()
    model = random_model(augmentation=(), dropout_cls=dropout_cls)
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    with randomized_inference():
        assert not np.allclose(model(x, training=False), model(x, training=False))


def test_the_switch_is_read_when_a_function_is_traced():
    x = images()
    model = random_model()
    with randomized_inference():
        randomized = tf.function(lambda t: model(t, training=False))
        randomized(x)
    deterministic = tf.function(lambda t: model(t, training=False))
    deterministic(x)
    # Traced inside: stays randomized after the context exits.
    assert not np.allclose(randomized(x), randomized(x))
    # Traced outside: stays deterministic, even inside the context.
    with randomized_inference():
        np.testing.assert_array_equal(deterministic(x), deterministic(x))


def test_a_randomized_endpoint_survives_saved_model_export(tmp_path):
    # The exporter's pattern: the context opens inside the endpoint, so it is
    # active whenever the endpoint is traced (here only by write_out).
    x = images()
    model = random_model()

    def serve_randomized(t):
        with randomized_inference():
            return model(t, training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = [tf.TensorSpec((None, 8, 8, 1), tf.float32)]
    archive.add_endpoint("serve", lambda t: model(t, training=False), input_signature=spec)
    archive.add_endpoint("serve_randomized", serve_randomized, input_signature=spec)
    archive.write_out(str(tmp_path / "saved_model"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    np.testing.assert_allclose(reloaded.serve(x), model(x, training=False), atol=1e-6)
    np.testing.assert_array_equal(reloaded.serve(x), reloaded.serve(x))
    assert not np.allclose(reloaded.serve_randomized(x), reloaded.serve_randomized(x))
    bn = model.get_layer("bn")
    np.testing.assert_array_equal(bn.moving_mean, np.full(4, 0.7, "float32"))


def test_other_threads_are_not_affected():
    x = images()
    model = random_model()
    model(x, training=False)  # build outside the threads
    results = {}

    def other_thread():
        results["outputs"] = [np.asarray(model(x, training=False)) for _ in range(2)]

    with randomized_inference():
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert not np.allclose(model(x, training=False), model(x, training=False))
    np.testing.assert_array_equal(*results["outputs"])


def test_contexts_nest_and_restore_keras_dropout():
    original = keras.layers.Dropout.call
    x = images()
    model = random_model(augmentation=())
    with randomized_inference():
        with randomized_inference(dropout=False):
            np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
        assert not np.allclose(model(x, training=False), model(x, training=False))
    assert keras.layers.Dropout.call is original
    with pytest.raises(TypeError, match="dropout"):
        with randomized_inference(dropout="yes"):
            pass
    assert keras.layers.Dropout.call is original


# ------------------------------------------------------------------ plots


def test_augmentation_grid_shows_originals_and_variants():
    from matplotlib.figure import Figure

    x = images(3)
    fig = plots.augmentation_grid(Augmentation([{"rotate": 0.3}], seed=0), x, n=4)
    assert isinstance(fig, Figure)
    axes = np.asarray(fig.axes).reshape(3, 5)
    for i in range(3):
        np.testing.assert_allclose(axes[i, 0].images[0].get_array(), x[i, ..., 0])
        for j in range(1, 5):
            assert not np.allclose(axes[i, j].images[0].get_array(), x[i, ..., 0])
    assert axes[0, 0].get_title() == "original" and axes[0, 1].get_title() == "augmented 1"


def test_augmentation_grid_accepts_plain_keras_layers_and_rgb():
    x = images(2, channels=3)
    fig = plots.augmentation_grid(keras.layers.RandomFlip("horizontal", seed=0), x, n=2)
    assert len(fig.axes) == 6
    with pytest.raises(ValueError, match="n=0"):
        plots.augmentation_grid(Augmentation([{"rotate": 0.1}]), x, n=0)
