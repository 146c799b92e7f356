"""Pretrained `keras.applications` backbones in the spec: `weights: imagenet`
(offline: the error names the cache file), a local weights file, and
two-phase fine-tuning per fold (`backbone.fine_tune`)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcv
from tests.conftest import run_layer_test
from tfcv.builder import FineTuning
from tfcv.layers import GradientGate
from tfcv.spec import SpecValueError

APP = {"application": "MobileNetV3Small", "options": {"minimalistic": True, "alpha": 0.75}}
SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A "pretrained" backbone: a freshly built application's weights, saved."""
    keras.utils.set_random_seed(123)
    app = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=SHAPE, **APP["options"])
    path = str(tmp_path_factory.mktemp("weights") / "mobilenet.weights.h5")
    app.save_weights(path)
    return path, [np.asarray(w) for w in app.weights]


def spec(weights, **fine_tune):
    return {"input_shape": list(SHAPE), "num_classes": 3, "head": {"units": []},
            "backbone": {**APP, "weights": weights, "fine_tune": fine_tune or None}}


def test_imagenet_is_accepted_and_offline_names_the_cache_file(monkeypatch, tmp_path):
    built = tfcv.ModelSpec.from_dict({**spec("imagenet"), "backbone": {**APP, "options": {"minimalistic": True},
                                                                      "weights": "imagenet"}})
    assert built.backbone.weights == "imagenet"
    # No network in tests: the download goes to a closed local port. urllib
    # builds its global opener (with these proxies) on first use and keeps it
    # for the process; the opener is put back as it was after the test.
    import urllib.request

    monkeypatch.setattr(urllib.request, "_opener", None)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(RuntimeError, match=r"place weights_mobilenet_v3_small_minimalistic_224_1\.0_float_no_top_v2"
                                          r"\.h5 \(from https://.*\) at " + str(tmp_path / "keras" / "models")):
        tfcv.build_model(built)


def test_weights_the_backbone_cannot_load_and_options_it_refuses_are_named(weights_file, tmp_path):
    path, _ = weights_file
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not an HDF5 file")
    wider = {**spec(path), "backbone": {**APP, "options": {"minimalistic": True, "alpha": 1.0}, "weights": path}}
    # h5py's OSError and Keras' shape mismatch came out raw (or as a wrong hint to resize).
    for given, weights in ((spec(str(garbage)), str(garbage)), (wider, path)):
        with pytest.raises(ValueError, match=r"Invalid value for `backbone\.weights`.*cannot load") as caught:
            tfcv.build_model(given, compile=False)
        assert repr(weights) in str(caught.value) and "resizing" not in str(caught.value)
    # A TypeError deep inside keras.applications came out raw.
    with pytest.raises(TypeError, match=r"MobileNetV3Small refused the spec.*'alpha': 'x'") as caught:
        tfcv.build_model({**spec(None), "backbone": {**APP, "options": {"alpha": "x"}}}, compile=False)
    assert "resizing" not in str(caught.value)


def test_fine_tune_section_is_checked(weights_file):
    path, _ = weights_file
    fine = tfcv.ModelSpec.from_dict(spec(path, freeze_epochs=2, unfreeze=5))
    assert fine.backbone.fine_tune == tfcv.spec.FineTune(2, 5, 0.1)
    assert tfcv.ModelSpec.from_dict(fine.to_dict()) == fine
    with pytest.raises(SpecValueError, match="backbone.fine_tune.unfreeze"):
        tfcv.ModelSpec.from_dict(spec(path, unfreeze=0))
    with pytest.raises(SpecValueError, match="learning_rate_factor"):
        tfcv.ModelSpec.from_dict(spec(path, learning_rate_factor=2.0))
    with pytest.raises(SpecValueError, match="training.schedule"):
        tfcv.ModelSpec.from_dict({**spec(path, freeze_epochs=1),
                                  "training": {"schedule": {"name": "cosine", "decay_steps": 10}}})
    with pytest.raises(SpecValueError, match="backbone.fine_tune"):
        tfcv.ModelSpec.from_dict({"input_shape": [8, 8, 1], "num_classes": 2, "backbone": {"fine_tune": {}}})


def test_two_phase_fine_tuning_per_fold(weights_file):
    path, pretrained = weights_file
    builder = tfcv.ModelBuilder(spec(path, freeze_epochs=1, unfreeze=6, learning_rate_factor=0.5))
    model = builder()
    backbone = model.get_layer("backbone")
    trainable = [layer for layer in backbone.layers if layer.trainable]
    assert trainable and len(trainable) <= 6
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in backbone.layers)
    assert isinstance(model.get_layer("fine_tune_gate"), GradientGate)
    assert [type(cb) for cb in builder.callbacks()] == [FineTuning]

    records = {}  # per fold model: the default strategy may train the folds side by side

    class Snapshots(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            records.setdefault(id(self.model), []).append(("begin", self._weights()))

        def on_epoch_end(self, epoch, logs=None):
            records[id(self.model)].append((epoch, self._weights(), float(self.model.optimizer.learning_rate)))

        def _weights(self):
            bb = self.model.get_layer("backbone")
            return {w.path: np.asarray(w) for w in bb.weights}, np.asarray(self.model.get_layer("predictions").kernel)

    rng = np.random.default_rng(0)
    y = np.arange(48) % 3
    x = rng.uniform(0, 1, size=(48, *SHAPE)).astype("float32") * 0.3 + np.eye(3)[y][:, None, None, :] * 0.7
    cv = tfcv.CrossValidator(builder, folds=2)
    cv.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[*builder.callbacks(), Snapshots()])

    assert len(records) == 2 and all(len(fold) == 3 for fold in records.values())
    begins = [fold[0] for fold in records.values()]
    for _, (weights, _) in begins:  # every fold starts from the pretrained weights
        for value, expected in zip(weights.values(), pretrained):
            np.testing.assert_array_equal(value, expected)
    paths = list(begins[0][1][0])
    top = {w.path for layer in trainable for w in layer.trainable_weights}
    bn = {w.path for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights}
    for fold in records.values():
        (_, (start, head0)), (_, (phase1, head1), lr1), (_, (phase2, _), lr2) = fold
        assert lr1 == pytest.approx(1e-3) and lr2 == pytest.approx(5e-4)
        assert not np.array_equal(head0, head1), "the head trains in phase 1"
        assert all(np.array_equal(phase1[p], start[p]) for p in paths), "the backbone is frozen in phase 1"
        changed = {p for p in paths if not np.array_equal(phase2[p], phase1[p])}
        assert changed and changed <= top, "phase 2 trains the top layers only"
        assert not changed & bn, "BatchNormalization stays in inference mode"


def test_gradient_gate_layer(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    layer = run_layer_test(GradientGate, {"open": False}, x, tmp_path, randomizes=False)
    assert layer.get_config()["open"] is False

    for state, expected in ((0.0, 0.0), (1.0, 2.0)):
        layer.gate.assign(state)
        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(2.0 * layer(inputs))
        np.testing.assert_allclose(tape.gradient(loss, inputs), np.full_like(x, expected))


def test_application_preprocessing_is_part_of_the_model():
    # ResNet50 wants caffe-style input (BGR, 0-255, ImageNet mean subtracted), not a rescale.
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    model = tfcv.build_model({"input_shape": [32, 32, 3], "num_classes": 3, "head": {"units": []},
                              "backbone": {"application": "ResNet50"}}, compile=False)
    assert [layer.name for layer in model.layers][:3] == ["image", "backbone_preprocessing", "backbone"]
    fed = keras.Model(model.input, model.get_layer("backbone_preprocessing").output)(x)
    np.testing.assert_allclose(fed, keras.applications.resnet50.preprocess_input(255 * x), atol=1e-4)
    assert tfcv.builder.application_preprocessing("ResNet50", (0, 255)) == (
        [2, 1, 0], [1.0] * 3, [-103.939, -116.779, -123.68])
    assert tfcv.builder.application_preprocessing("ResNet50", channels=1) == (None, [255.0], [-114.7993])
    assert tfcv.builder.application_preprocessing("Xception") == (None, [2.0] * 3, [-1.0] * 3)

    # MobileNetV3 rescales inside itself, from 0-255 pixels; include_preprocessing: false opts out of both.
    mobile = tfcv.build_model(spec(None), compile=False)
    assert mobile.get_layer("backbone_preprocessing").get_config()["scale"] == [255.0] * 3
    bare = tfcv.build_model({**spec(None), "backbone": {**APP, "options": {**APP["options"],
                                                                          "include_preprocessing": False}}})
    assert "backbone_preprocessing" not in [layer.name for layer in bare.layers]
