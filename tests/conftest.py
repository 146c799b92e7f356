"""Shared fixtures: small data, a tiny model, a trained CVResult (built once)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfcv  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """The embedded digits data: x (1797, 8, 8, 1) float32, y int64."""
    return tfcv.datasets.load_digits()


@pytest.fixture(scope="session")
def small_digits(digits):
    """A stratified 600-sample subset of the digits, for fast tests."""
    from sklearn.model_selection import train_test_split

    x, y = digits
    x_small, _, y_small, _ = train_test_split(x, y, train_size=600, stratify=y, random_state=0)
    return x_small, y_small


def tiny_classifier(input_shape=(8, 8, 1), num_classes=10):
    """A small compiled CNN that learns the digits in a few epochs."""
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def raw_digits():
    """scikit-learn's digits as stored by DigitsBuilder: uint8 in [0, 16]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype("uint8")[..., np.newaxis], bunch.target.astype("int64")


def read_all(ds):
    """Concatenates a batched dataset of (x, y) into two arrays."""
    xs, ys = zip(*ds.as_numpy_iterator(), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="session")
def cv_result(small_digits, tmp_path_factory):
    """A trained 3-fold CVResult of the tiny classifier (run directory kept)."""
    x, y = small_digits
    run_dir = tmp_path_factory.mktemp("cv_result") / "run"
    cv = tfcv.CrossValidator(tiny_classifier, folds=3, seed=0)
    result = cv.fit(x, y, epochs=8, batch_size=32, run_dir=run_dir, verbose=0)
    result.run_dir = str(run_dir)
    return result


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tfds_digits_dir(tmp_path_factory):
    """A TFDS data_dir holding the prepared `tfcv_digits` dataset (offline)."""
    return tfcv.data.prepare_digits(tmp_path_factory.mktemp("tfds"))


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    tmp_path,
    *,
    expected_output_shapes=None,
    expected_output_dtypes=None,
    randomizes=True,
    identity_at_inference=True,
    saved_model=True,
):
    """Checks a tfcv layer as Keras' `run_layer_test` checks Keras layers
    (keras/src/testing/test_case.py), and returns the layer.

    `input_data` is an array or a tuple of arrays (the positional inputs);
    outputs may be a tensor or a tuple. Checked: `get_config` ->
    `from_config` and Keras (de)serialization; output shapes and dtypes
    (default: those of the inputs); `training=True` changes the first
    output (if `randomizes`) and `training=False` returns the inputs
    exactly (if `identity_at_inference`, else deterministically); the same
    inside `tf.function`; a functional model holding the layer survives a
    `.keras` save/load (safe_mode) and a SavedModel export with identical
    inference outputs.
    """
    import tensorflow as tf

    inputs = tuple(np.asarray(a) for a in (input_data if isinstance(input_data, tuple) else (input_data,)))
    shapes = [tuple(s) for s in expected_output_shapes] if expected_output_shapes else [a.shape for a in inputs]
    dtypes = list(expected_output_dtypes) if expected_output_dtypes else [a.dtype for a in inputs]

    def flat(outputs):
        return [np.asarray(o) for o in keras.tree.flatten(outputs)]

    def check_outputs(outputs, training):
        assert [o.shape for o in outputs] == shapes, f"training={training}: output shapes"
        assert [o.dtype for o in outputs] == [np.dtype(d) for d in dtypes], f"training={training}: output dtypes"
        if training and randomizes:
            assert not np.allclose(outputs[0].astype("float64"), inputs[0].astype("float64")), "no change in training"
        if not training and identity_at_inference:
            for out, a in zip(outputs, inputs, strict=True):
                np.testing.assert_array_equal(out, a)

    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is layer_cls and revived.get_config() == config

    check_outputs(flat(layer(*inputs, training=True)), True)
    inferred = flat(layer(*inputs, training=False))
    check_outputs(inferred, False)
    for again, first in zip(flat(layer(*inputs, training=False)), inferred, strict=True):
        np.testing.assert_array_equal(again, first)

    check_outputs(flat(tf.function(lambda *t: layer(*t, training=True))(*inputs)), True)
    for traced, first in zip(flat(tf.function(lambda *t: layer(*t, training=False))(*inputs)), inferred, strict=True):
        np.testing.assert_array_equal(traced, first)

    symbolic = [keras.Input(a.shape[1:], dtype=str(a.dtype)) for a in inputs]
    model = keras.Model(symbolic if len(symbolic) > 1 else symbolic[0], layer_cls(**init_kwargs)(*symbolic))
    feed = list(inputs) if len(inputs) > 1 else inputs[0]
    expected = flat(model(feed, training=False))
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    loaded_layer = next(lay for lay in loaded.layers if isinstance(lay, layer_cls))
    assert loaded_layer.get_config() == model.layers[-1].get_config()
    for got, want in zip(flat(loaded(feed, training=False)), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    check_outputs(flat(loaded(feed, training=True)), True)
    if saved_model:
        export_dir = str(tmp_path / f"{layer_cls.__name__}_saved_model")
        model.export(export_dir, format="tf_saved_model", verbose=False)
        reloaded = tf.saved_model.load(export_dir)  # keep a reference: it owns the variables
        served = flat(reloaded.serve(feed))
        for got, want in zip(served, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    return layer


# ------------------------------------------------- tfcv serve in a subprocess


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_opener():
    import urllib.request

    # The servers are on this machine: never go through a proxy from the
    # environment (or one that urllib's global opener cached earlier in the run).
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call_rest(url: str, req=None, max_attempts: int = 3) -> bytes:
    """TF Serving's CallREST: the body of a GET (`req` None) or of a JSON POST,
    without proxies; retried `max_attempts` times. An error status raises
    `urllib.error.HTTPError` (its `code` and `read()` are the answer)."""
    import json
    import time
    import urllib.request

    data = json.dumps(req).encode("utf-8") if req is not None else None
    for attempt in range(max_attempts):
        try:
            with _local_opener().open(urllib.request.Request(url, data=data), timeout=30) as response:
                return response.read()
        except Exception:
            if attempt == max_attempts - 1:
                raise
            time.sleep(1)
    return b""


class ServerProcess:
    """`tfcv serve` (or `python -m tfcv.serving`) started with `argv`, its output in `log_path`.

    `rest` is the base URL of its REST API; `wait_available(model)` returns
    once the model is AVAILABLE there and fails with the log if the process
    exits first; `stop()` terminates it (killing it after 20 s).
    """

    start_timeout = 240.0

    def __init__(self, argv, *, rest_port: int, log_path, host: str = "127.0.0.1"):
        import subprocess

        self.rest = f"http://{host}:{rest_port}"
        self.log_path = log_path
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")

    def wait_available(self, model: str) -> None:
        import time

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self.check_running()
            try:
                if b"AVAILABLE" in call_rest(f"{self.rest}/v1/models/{model}", max_attempts=1):
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.3)
        raise RuntimeError(f"model {model} not available after {self.start_timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def tfcv_in_process(capsys, *argv) -> tuple[int, str]:
    """`tfcv argv` run in this process: its exit status and what it wrote to
    stderr. The checks of arguments, configs and data are the same code as
    in a subprocess (`test_cli.test_tfcv_run_end_to_end` runs the console
    entry point itself), without the seconds a fresh interpreter takes to
    import TensorFlow; a traceback fails the test as an exception."""
    from tfcv import cli

    try:
        code = cli.main(list(argv))
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    return code, capsys.readouterr().err
