"""`export_saved_model(..., image_bytes=True)`: signatures taking encoded
images, and the image path end to end: an image folder through `tfcv run
--data`, `tfcv export --image-bytes`, `tfcv serve` and a REST request
carrying base64 image files."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_data_sources import CLASSES, start_server, write_image_folder

import tfcv
from tfcv import cli
from tfcv.bundle import read_warmup
from tfcv.export import describe, export_saved_model, verify
from tfcv.sources import decode_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image_model(seed, shape=(12, 10, 3)):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape, name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dropout(0.2)(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bytes_bundle(tmp_path_factory, small_digits):
    x, y = small_digits
    images = np.repeat(np.repeat(x[:60], 2, axis=1), 2, axis=2)[:, :12, :10]
    images = np.concatenate([images] * 3, axis=-1)
    cv = tfcv.CrossValidator(lambda: _compiled(image_model(0)), folds=2)
    result = cv.fit(images, y[:60] % 3, epochs=1, verbose=0)
    path = export_saved_model(result, tmp_path_factory.mktemp("bytes") / "m", image_bytes=True)
    return path, result


def _compiled(model):
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_bytes_signatures_match_their_float_twins(bytes_bundle):
    path, _ = bytes_bundle
    loaded = tf.saved_model.load(path)
    names = set(loaded.signatures)
    assert {"serving_bytes", "predict_folds_bytes", "predict_randomized_bytes"} <= names
    spec = loaded.signatures["serving_bytes"].structured_input_signature[1]["image_bytes"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, 15, 17, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        files = [encoded(p, fmt) for p in pixels]
        decoded = tf.stack([decode_image(f, image_size=(12, 10), channels=3) for f in files])
        for name in ("serving_default", "predict_folds"):
            twin = "serving_bytes" if name == "serving_default" else f"{name}_bytes"
            want = loaded.signatures[name](image=decoded)
            got = loaded.signatures[twin](image_bytes=tf.constant(files))
            for key in want:
                np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=f"{fmt} {twin} {key}")
    metadata = json.load(open(os.path.join(path, "assets.extra", "tfcv.json")))
    assert metadata["signatures"]["serving_bytes"]["inputs"] == {"image_bytes": {"dtype": "string", "shape": [None]}}
    bytes_records = [r for r in read_warmup(path) if r.model_spec.signature_name.endswith("_bytes")]
    assert len(bytes_records) == 9
    first = tf.make_ndarray(bytes_records[0].inputs["image_bytes"])[0]
    assert first.startswith(b"\x89PNG")
    assert verify(path, fresh_process=False)["replayed"] == 18
    described = describe(path)
    assert re.search(r"^  image_bytes +encoded JPEG, PNG, GIF or BMP files", described, re.MULTILINE), described
    assert "predict_randomized_bytes, serving_bytes" in described and "range [0, 1]" in described


def test_image_bytes_needs_an_image_model(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    with pytest.raises(ValueError, match=r"image_bytes=True for a model taking inputs of shape \(None, 5\)"):
        export_saved_model(model, tmp_path / "m", image_bytes=True, randomized=None)


@pytest.mark.slow
def test_image_folder_to_rest_request_with_a_base64_file(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "digits", per_class=30)
    run_dir, base = tmp_path / "run", tmp_path / "models" / "digits"
    assert cli.main(["run", "--data", folder, "--image-size", "12", "12", "--folds", "2", "--epochs", "15",
                     "--batch-size", "16", "--run-dir", str(run_dir), "--verbose", "0"]) == 0
    assert "90 images of 3 classes" in capsys.readouterr().out
    assert tfcv.CVResult.load(run_dir).info["class_names"] == ["one", "seven", "zero"]
    assert cli.main(["export", str(run_dir), "--base-path", str(base), "--image-bytes"]) == 0
    metadata = json.load(open(base / "1" / "assets.extra" / "tfcv.json"))
    assert metadata["class_names"] == ["one", "seven", "zero"]

    files = {name: os.path.join(folder, name, sorted(os.listdir(os.path.join(folder, name)))[k])
             for k, name in enumerate(CLASSES.values())}
    server = start_server(base, "digits", tmp_path)
    try:
        body = {"signature_name": "serving_bytes", "instances": [
            {"b64": base64.b64encode(open(path, "rb").read()).decode("ascii")} for path in files.values()]}
        response = httpx.post(f"{server.rest}/v1/models/digits:predict", json=body, timeout=60)
        assert response.status_code == 200, response.text
        predicted = [metadata["class_names"][int(np.argmax(p))] for p in response.json()["predictions"]]
        assert predicted == list(files)
        client = subprocess.run(
            [sys.executable, os.path.join(ROOT, "serving", "clients", "rest_image_client.py"), *files.values(),
             "--url", server.rest, "--model", "digits", "--bundle", str(base / "1"), "--randomized"],
            capture_output=True, text=True, timeout=120,
        )
        assert client.returncode == 0, client.stderr
        lines = client.stdout.strip().splitlines()
        assert [line.split(": ")[1].split(" ")[0] for line in lines] == list(files)
    finally:
        server.stop()
