"""Tests of tfcv.serving: the TF-Serving-compatible server, run as a real subprocess.

Two servers are started per module (TensorFlow's import dominates their
start-up): `python -m tfcv.serving` with a TF Serving `models.config`
(versions 1 and 2, labels) and `tfcv serve` with `--model_base_path`,
`--strict` and batching off, whose base path the tests publish into.
Answers are compared with the SavedModel signatures called in-process; gRPC
goes through the official `tensorflow_serving.apis` stubs.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import grpc
import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from tests.conftest import ServerProcess, free_port
from tfcv import export
from tfcv.bundle import read_signature_def_map
from tfcv.serving import (
    Batcher,
    BatchingOptions,
    InvalidArgument,
    ModelConfig,
    ModelRegistry,
    ServerOptions,
    create_app,
    read_model_config_file,
)
from tfcv.serving.rest import decode_predict_request
from tfcv.serving.servable import Servable, Signature
from tfcv.serving.server import _bind_socket, _http_parser

pytestmark = pytest.mark.slow

MODEL = "digits"
LIVE = "live"
PLAIN = "plain"
RANDOMIZED_OUTPUTS = {"mean", "std", "predictive_entropy", "agreement"}
MAX_BODY = 200_000
START_TIMEOUT = 180


# ------------------------------------------------------------------ helpers


def small_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(16, activation="relu")(h)
    h = keras.layers.Dropout(0.3)(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model(inputs, outputs)


def publish_copy(source: str, base: str, version: int, mutate=None) -> str:
    """Publishes a copy of a version directory atomically, as the exporter does."""
    tmp = os.path.join(base, f".tfcv-tmp-copy-{version}")
    shutil.copytree(source, tmp)
    if mutate is not None:
        mutate(tmp)
    target = os.path.join(base, str(version))
    os.replace(tmp, target)
    return target


class Server(ServerProcess):
    """A `ServerProcess` with a gRPC channel, ready once the model is AVAILABLE."""

    start_timeout = START_TIMEOUT

    def __init__(self, argv, *, rest_port, grpc_port, log_path):
        super().__init__(argv, rest_port=rest_port, log_path=log_path)
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.channel = None

    def wait_until_available(self, model: str) -> None:
        self.wait_available(model)
        self.channel = grpc.insecure_channel(self.grpc_target)
        grpc.channel_ready_future(self.channel).result(timeout=30)

    def predict_stub(self):
        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        super().stop()


def grpc_request(model=MODEL, signature="serving_default", x=None, *, version=None, label=None, name="image"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    if x is not None:
        request.inputs[name].CopyFrom(tf.make_tensor_proto(x))
    return request


def run_in_threads(target, n: int, timeout: float = 120) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)


def call_signature(loaded, x, signature="serving_default") -> dict:
    return {k: v.numpy() for k, v in loaded.signatures[signature](image=tf.constant(x)).items()}


def assert_close(got, want):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Versions 1 and 2 of `digits`, written by tfcv.export, and their loaded SavedModels."""
    root = tmp_path_factory.mktemp("serving")
    base = str(root / MODEL)
    randomized = export.Randomized(samples=4, seed=0)
    paths = {v: export.export_saved_model(small_model(v), base, version=v, randomized=randomized) for v in (1, 2)}
    loaded = {v: tf.saved_model.load(p) for v, p in paths.items()}
    return {"root": root, "base": base, "paths": paths, "loaded": loaded}


@pytest.fixture(scope="module")
def x(digits):
    return digits[0][:5]


@pytest.fixture(scope="module")
def server(bundles):
    """`python -m tfcv.serving` with a models.config serving versions 1 and 2 of `digits`."""
    config = export.write_model_config(bundles["root"] / "models.config", [{
        "name": MODEL, "base_path": bundles["base"], "version_policy": [1, 2],
        "version_labels": {"stable": 1, "canary": 2},
    }])
    rest_port, grpc_port = free_port(), free_port()
    srv = Server(
        [sys.executable, "-m", "tfcv.serving", f"--model_config_file={config}", f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", f"--max_body_bytes={MAX_BODY}", "--batch_timeout_micros=2000"],
        rest_port=rest_port, grpc_port=grpc_port, log_path=bundles["root"] / "server.log",
    )
    try:
        srv.wait_until_available(MODEL)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def live(bundles, tmp_path_factory):
    """`tfcv serve` on a base path that starts with version 1, strict, batching off."""
    base = str(tmp_path_factory.mktemp("live") / LIVE)
    os.makedirs(base)
    publish_copy(bundles["paths"][1], base, 1)
    rest_port, grpc_port = free_port(), free_port()
    tfcv_script = os.path.join(os.path.dirname(sys.executable), "tfcv")
    srv = Server(
        [tfcv_script, "serve", "--model_name", LIVE, "--model_base_path", base, "--port", str(grpc_port),
         "--rest_api_port", str(rest_port), "--file_system_poll_wait_seconds", "0.2", "--strict",
         "--enable_batching=false"],
        rest_port=rest_port, grpc_port=grpc_port, log_path=os.path.join(os.path.dirname(base), "server.log"),
    )
    srv.base = base
    try:
        srv.wait_until_available(LIVE)
        yield srv
    finally:
        srv.stop()


class PlainSignatures(tf.Module):
    """A SavedModel written by `tf.saved_model.save`, not by tfcv.export:
    an identity signature (its output is its input, bit for bit, on any
    CPU) and a signature taking strings."""

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def identity(self, x):
        return {"y": tf.identity(x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def length(self, text):
        return {"length": tf.strings.length(text)}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """`tfcv serve` on a plain SavedModel with an identity `serving_default`
    and a string signature `length`."""
    base = tmp_path_factory.mktemp("plain") / PLAIN
    module = PlainSignatures()
    tf.saved_model.save(module, str(base / "1"),
                        signatures={"serving_default": module.identity, "length": module.length})
    rest_port, grpc_port = free_port(), free_port()
    srv = Server(
        [os.path.join(os.path.dirname(sys.executable), "tfcv"), "serve", "--model_name", PLAIN,
         "--model_base_path", str(base), "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--enable_batching=false"],
        rest_port=rest_port, grpc_port=grpc_port, log_path=base.parent / "server.log",
    )
    try:
        srv.wait_until_available(PLAIN)
        yield srv
    finally:
        srv.stop()


# ------------------------------------------------------------- REST answers


def test_rest_status_matches_tf_serving_format(server):
    body = httpx.get(f"{server.rest}/v1/models/{MODEL}").json()
    ok = {"error_code": "OK", "error_message": ""}
    assert body == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": ok},
        {"version": "1", "state": "AVAILABLE", "status": ok},
    ]}
    one = httpx.get(f"{server.rest}/v1/models/{MODEL}/versions/1").json()
    assert one == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}
    stable = httpx.get(f"{server.rest}/v1/models/{MODEL}/labels/stable").json()
    assert stable == one


def test_rest_metadata_lists_signatures(server, bundles):
    body = httpx.get(f"{server.rest}/v1/models/{MODEL}/metadata").json()
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "2"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "predict_randomized"} <= set(signatures)
    image = signatures["serving_default"]["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert RANDOMIZED_OUTPUTS <= set(signatures["predict_randomized"]["outputs"])
    v1 = httpx.get(f"{server.rest}/v1/models/{MODEL}/versions/1/metadata").json()
    assert v1["model_spec"]["version"] == "1"


def test_rest_row_and_columnar_formats_equal_in_process_calls(server, bundles, x):
    url = f"{server.rest}/v1/models/{MODEL}"
    for path, version in ((":predict", 2), ("/versions/1:predict", 1), ("/labels/canary:predict", 2)):
        want = next(iter(call_signature(bundles["loaded"][version], x).values()))
        rows = httpx.post(url + path, json={"instances": x.tolist()})
        assert rows.status_code == 200, rows.text
        predictions = rows.json()["predictions"]
        assert len(predictions) == len(x) and len(predictions[0]) == 10
        assert_close(predictions, want)
        columns = httpx.post(url + path, json={"inputs": {"image": x.tolist()}, "signature_name": "serving_default"})
        assert columns.status_code == 200, columns.text
        assert_close(columns.json()["outputs"], want)
    # Versions differ, so the routing above is really checked.
    v1, v2 = (next(iter(call_signature(bundles["loaded"][v], x).values())) for v in (1, 2))
    assert not np.allclose(v1, v2, atol=1e-3)


def test_rest_several_outputs_come_as_objects(server, x):
    url = f"{server.rest}/v1/models/{MODEL}:predict"
    rows = httpx.post(url, json={"signature_name": "predict_randomized", "instances": [{"image": i} for i in x.tolist()]})
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert len(predictions) == len(x)
    assert RANDOMIZED_OUTPUTS <= set(predictions[0])
    assert len(predictions[0]["mean"]) == 10 and isinstance(predictions[0]["predictive_entropy"], float)
    columns = httpx.post(url, json={"signature_name": "predict_randomized", "inputs": x.tolist()}).json()["outputs"]
    assert RANDOMIZED_OUTPUTS <= set(columns)
    mean, std = np.array(columns["mean"]), np.array(columns["std"])
    assert mean.shape == std.shape == (len(x), 10)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-4)
    assert (std >= 0).all() and std.max() > 0  # dropout is on: the samples differ
    agreement = np.array(columns["agreement"])
    assert agreement.shape == (len(x),) and ((agreement >= 0) & (agreement <= 1)).all()


def test_concurrent_rest_and_grpc_clients_get_their_own_answers(server, bundles, digits):
    images = digits[0][:48]
    want = next(iter(call_signature(bundles["loaded"][2], images).values()))
    stub = server.predict_stub()
    failures = []

    def client(k):
        try:
            with httpx.Client() as http:
                for i in range(k, len(images), 6):
                    sample = images[i:i + 1]
                    if i % 2:
                        got = http.post(f"{server.rest}/v1/models/{MODEL}:predict",
                                        json={"instances": sample.tolist()}).json()["predictions"]
                    else:
                        response = stub.Predict(grpc_request(x=sample), timeout=30)
                        got = tf.make_ndarray(next(iter(response.outputs.values())))
                    np.testing.assert_allclose(np.asarray(got, np.float32), want[i:i + 1], rtol=1e-5, atol=1e-6)
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(repr(error))

    run_in_threads(client, 6)
    assert failures == []


# --------------------------------------------------------------------- gRPC


def test_grpc_predict_with_official_stub_equals_in_process_call(server, bundles, x):
    stub = server.predict_stub()
    for kwargs, version in (({}, 2), ({"version": 1}, 1), ({"label": "stable"}, 1)):
        response = stub.Predict(grpc_request(x=x, **kwargs), timeout=30)
        assert response.model_spec.name == MODEL
        assert response.model_spec.version.value == version
        assert response.model_spec.signature_name == "serving_default"
        want = call_signature(bundles["loaded"][version], x)
        assert set(response.outputs) == set(want)
        for name, value in want.items():
            assert_close(tf.make_ndarray(response.outputs[name]), value)
    randomized = stub.Predict(grpc_request(signature="predict_randomized", x=x), timeout=30)
    assert RANDOMIZED_OUTPUTS <= set(randomized.outputs)
    assert tf.make_ndarray(randomized.outputs["mean"]).shape == (len(x), 10)
    request = grpc_request(signature="predict_randomized", x=x)
    request.output_filter.append("std")
    assert set(stub.Predict(request, timeout=30).outputs) == {"std"}


def test_grpc_metadata_and_status(server, bundles):
    stub = server.predict_stub()
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 2
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    assert signature_defs == read_signature_def_map(bundles["paths"][2])
    assert signature_defs.signature_def["serving_default"].method_name == "tensorflow/serving/predict"

    status_stub = model_service_pb2_grpc.ModelServiceStub(server.channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = MODEL
    status = status_stub.GetModelStatus(status_request, timeout=30)
    states = {s.version: s.state for s in status.model_version_status}
    assert states == {1: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                      2: get_model_status_pb2.ModelVersionStatus.AVAILABLE}


@pytest.mark.parametrize("case, code, fragment", [
    ("unknown model", grpc.StatusCode.NOT_FOUND, "nope"),
    ("unknown version", grpc.StatusCode.NOT_FOUND, "Specific(digits, 7)"),
    ("unknown signature", grpc.StatusCode.FAILED_PRECONDITION, "predict_nothing"),
    ("wrong dtype", grpc.StatusCode.INVALID_ARGUMENT, "expects dtype DT_FLOAT, received DT_DOUBLE"),
    ("wrong rank", grpc.StatusCode.INVALID_ARGUMENT, "refused the input"),
    ("wrong input name", grpc.StatusCode.INVALID_ARGUMENT, "unknown input name(s) ['pixels']"),
    ("unknown output filter", grpc.StatusCode.INVALID_ARGUMENT, "not found in signature: logits"),
    ("huge declared shape", grpc.StatusCode.INVALID_ARGUMENT, "above the limit"),
])
def test_grpc_errors_have_tf_serving_codes(server, case, code, fragment):
    x = np.zeros((2, 8, 8, 1), np.float32)
    request = {
        "unknown model": grpc_request(model="nope", x=x),
        "unknown version": grpc_request(x=x, version=7),
        "unknown signature": grpc_request(signature="predict_nothing", x=x),
        "wrong dtype": grpc_request(x=x.astype(np.float64)),
        "wrong rank": grpc_request(x=x[:, :7, :, 0]),
        "wrong input name": grpc_request(x=x, name="pixels"),
        "unknown output filter": grpc_request(x=x),
        "huge declared shape": grpc_request(x=x),
    }[case]
    if case == "unknown output filter":
        request.output_filter.append("logits")
    if case == "huge declared shape":
        # A few bytes that would expand to 4 TB of float32 if trusted.
        request.inputs["image"].ClearField("tensor_content")
        request.inputs["image"].float_val.append(0.5)
        request.inputs["image"].tensor_shape.dim[0].size = 10**12
    with pytest.raises(grpc.RpcError) as info:
        server.predict_stub().Predict(request, timeout=30)
    assert info.value.code() == code
    assert fragment in info.value.details()


def _peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _reset_peak_rss(pid: int) -> None:
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0), so a
    # short-lived allocation freed before the answer still shows.
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _string_request(shape, values=(b"a",), dtype=types_pb2.DT_STRING, signature="length", name="text"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = PLAIN
    request.model_spec.signature_name = signature
    proto = request.inputs[name]
    proto.dtype = dtype
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    proto.string_val.extend(values)
    return request


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_grpc_huge_declared_string_shape_is_refused_before_any_allocation(plain):
    stub = plain.predict_stub()
    ok = stub.Predict(_string_request([3], [b"ab", b"", b"xyz"]), timeout=30)
    assert tf.make_ndarray(ok.outputs["length"]).tolist() == [2, 0, 3]
    # One string_val broadcast to the declared shape is valid TensorProto
    # (tf.make_ndarray repeats the last value), and stays accepted when small.
    small = stub.Predict(_string_request([4], [b"ab"]), timeout=30)
    assert tf.make_ndarray(small.outputs["length"]).tolist() == [2, 2, 2, 2]

    pid = plain.process.pid
    huge = _string_request([30_000_000], [b"a"])
    assert huge.ByteSize() < 64  # a few bytes on the wire
    _reset_peak_rss(pid)
    before = _peak_rss_bytes(pid)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(huge, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "above the limit" in info.value.details() and "[30000000]" in info.value.details()
    growth = _peak_rss_bytes(pid) - before
    assert growth < 50 * 2**20, f"the server's peak RSS grew by {growth / 2**20:.0f} MB"

    # A long value repeated to a modest shape expands to its length times the count.
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_string_request([64], [b"x" * 2**20]), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "above the limit" in info.value.details()
    # Any declared shape is bounded before it is converted, even one the
    # signature would refuse (shapes are left to TensorFlow, as TF Serving).
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_string_request([30_000_000, 2]), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "above the limit" in info.value.details() and "[30000000,2]" in info.value.details()
    assert _peak_rss_bytes(pid) - before < 50 * 2**20
    assert plain.process.poll() is None


@pytest.mark.parametrize("dtype, signature, name, fragment", [
    (types_pb2.DT_STRING, "serving_default", "x", "expects dtype DT_FLOAT, received DT_STRING"),
    (types_pb2.DT_FLOAT, "length", "text", "expects dtype DT_STRING, received DT_FLOAT"),
    (types_pb2.DT_INVALID, "length", "text", "received DT_INVALID"),
    (4242, "length", "text", "unknown dtype enum 4242"),
    (types_pb2.DT_STRING_REF, "length", "text", "received DT_STRING_REF"),
    (types_pb2.DT_VARIANT, "serving_default", "x", "received DT_VARIANT"),
], ids=["string for float", "float for string", "invalid", "unknown enum", "reference", "variant"])
def test_grpc_wrong_or_unknown_dtype_is_invalid_argument(plain, dtype, signature, name, fragment):
    # Each declares 30 million elements: the dtype is checked first.
    request = _string_request([30_000_000], dtype=dtype, signature=signature, name=name)
    with pytest.raises(grpc.RpcError) as info:
        plain.predict_stub().Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert fragment in info.value.details()


# --------------------------------------------------------------- bad input


def _image(value=0.5):
    return [[[value] for _ in range(8)] for _ in range(8)]


BAD_REQUESTS = [
    # (name, path suffix, body, status, fragment of the error)
    ("malformed JSON", ":predict", b'{"instances": [1, 2', 400, "JSON Parse error"),
    ("empty body", ":predict", b"", 400, "empty"),
    ("not an object", ":predict", b"[1, 2]", 400, "expected a JSON object"),
    ("no inputs key", ":predict", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances'"),
    ("both keys", ":predict", {"instances": [_image()], "inputs": [_image()]}, 400, "only one of"),
    ("wrong input name", ":predict", {"inputs": {"pixels": [_image()]}}, 400, "unknown input name(s) ['pixels']"),
    ("wrong input name in rows", ":predict", {"instances": [{"pixels": _image()}]}, 400, "['pixels']"),
    ("wrong rank", ":predict", {"instances": [[0.5] * 7]}, 400, "refused the input"),
    ("wrong size", ":predict", {"inputs": [[[[0.5]] * 7] * 8]}, 400, "refused the input"),
    ("ragged", ":predict", {"instances": [_image(), [[0.5]]]}, 400, "not a dense tensor"),
    ("wrong dtype strings", ":predict", {"instances": [[[["a"]] * 8] * 8]}, 400,
     "expects DT_FLOAT values, received strings"),
    ("wrong dtype booleans", ":predict", {"instances": [[[[True]] * 8] * 8]}, 400, "received booleans"),
    ("nulls", ":predict", {"instances": [[[[None]] * 8] * 8]}, 400, "received nulls"),
    ("out of float32 range", ":predict", {"instances": [_image(1e300)]}, 400, "out of the range of DT_FLOAT"),
    ("integer of 5000 digits", ":predict", b'{"instances": [' + b"1" * 5000 + b"]}", 400, "JSON Parse error"),
    ("empty batch", ":predict", {"instances": []}, 400, "batch is empty"),
    ("bad signature name type", ":predict", {"signature_name": 3, "instances": [_image()]}, 400,
     "'signature_name' must be a string"),
    ("deeply nested", ":predict", b'{"instances": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", 400, "nested too deeply"),
    ("oversized body", ":predict", {"instances": [_image(0.123456789)] * 400}, 413, "exceeds the limit"),
    ("unknown signature", ":predict", {"signature_name": "predict_nothing", "instances": [_image()]}, 400,
     "predict_nothing"),
    ("unknown version", "/versions/9:predict", {"instances": [_image()]}, 404, "Specific(digits, 9)"),
    ("unknown label", "/labels/beta:predict", {"instances": [_image()]}, 400, "label: beta"),
    ("non-numeric version", "/versions/two:predict", {"instances": [_image()]}, 400, "Invalid version 'two'"),
    ("classify without examples", ":classify", {"examples": []}, 400, "'examples' is empty"),
    ("regress on a predict signature", ":regress", {"examples": [{"x": 1.0}]}, 400, "No regression inputs found"),
    ("unknown verb", ":explain", {"instances": [_image()]}, 400, "Malformed request: POST"),
]


@pytest.mark.parametrize("name, suffix, body, status, fragment", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_rest_bad_requests_get_status_and_named_error(server, name, suffix, body, status, fragment):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server.rest}/v1/models/{MODEL}{suffix}", content=content, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"]


def test_rest_unknown_model_version_and_method(server):
    missing = httpx.get(f"{server.rest}/v1/models/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    predict = httpx.post(f"{server.rest}/v1/models/nope:predict", json={"instances": [_image()]})
    assert predict.status_code == 404 and "Latest(nope)" in predict.json()["error"]
    version = httpx.get(f"{server.rest}/v1/models/{MODEL}/versions/5")
    assert version.status_code == 404 and "version 5" in version.json()["error"]
    # TF Serving answers any URL or method it does not serve with 400.
    wrong_method = httpx.get(f"{server.rest}/v1/models/{MODEL}:predict")
    assert wrong_method.status_code == 400 and "Malformed request: GET" in wrong_method.json()["error"]
    elsewhere = httpx.get(f"{server.rest}/index.html")
    assert elsewhere.status_code == 400 and "Malformed request" in elsewhere.json()["error"]


def test_rest_accepts_nan_and_infinity_like_tf_serving(plain):
    # An identity signature carries every input value to its output on any
    # CPU, unlike a trained model (relu(NaN) is NaN or 0 depending on the kernels).
    body = '{"instances": [[NaN, Infinity, -Infinity, 0.5]]}'
    response = httpx.post(f"{plain.rest}/v1/models/{PLAIN}:predict", content=body)
    assert response.status_code == 200, response.text
    # The tokens TF Serving writes for non-finite floats, byte for byte.
    assert response.text.replace(" ", "") == '{"predictions":[[NaN,Infinity,-Infinity,0.5]]}'
    (row,) = json.loads(response.text)["predictions"]
    assert np.isnan(row[0]) and row[1:] == [np.inf, -np.inf, 0.5]
    columnar = httpx.post(f"{plain.rest}/v1/models/{PLAIN}:predict", content='{"inputs": [[-Infinity, NaN, 1, 2]]}')
    assert columnar.status_code == 200, columnar.text
    assert columnar.text.replace(" ", "") == '{"outputs":[[-Infinity,NaN,1.0,2.0]]}'


def test_strict_server_refuses_nan_and_infinity(live):
    url = f"{live.rest}/v1/models/{LIVE}:predict"
    for token in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = '{"instances": [' + json.dumps(_image()).replace("0.5", token, 1) + "]}"
        response = httpx.post(url, content=body)
        assert response.status_code == 400, (token, response.text)
        assert "NaN" in response.json()["error"] or "Infinity" in response.json()["error"]
    assert httpx.post(url, json={"instances": [_image()]}).status_code == 200
    x = np.full((1, 8, 8, 1), np.nan, np.float32)
    with pytest.raises(grpc.RpcError) as info:
        live.predict_stub().Predict(grpc_request(model=LIVE, x=x), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "--strict" in info.value.details()


def test_host_header_is_checked_and_no_cors_by_default(server):
    url = f"{server.rest}/v1/models/{MODEL}"
    rebound = httpx.get(url, headers={"Host": "attacker.example:8501"})
    assert rebound.status_code == 403
    assert "attacker.example" in rebound.json()["error"]
    assert httpx.get(url, headers={"Host": "localhost"}).status_code == 200
    # :predict takes a route of its own (no Starlette); the check holds there too.
    body = {"instances": [_image()]}
    rebound = httpx.post(f"{url}:predict", json=body, headers={"Host": "attacker.example"})
    assert rebound.status_code == 403 and "attacker.example" in rebound.json()["error"]
    assert httpx.post(f"{url}:predict", json=body, headers={"Host": "localhost"}).status_code == 200
    response = httpx.get(url, headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in response.headers)


# ----------------------------------------------------------------- versions


def test_publishing_version_2_while_clients_stream_switches_without_failures(live, bundles, x):
    want = {v: next(iter(call_signature(bundles["loaded"][v], x).values())) for v in (1, 2)}
    stop = threading.Event()
    seen = {"rest": [], "grpc": []}
    failures = []

    def which(got):
        for version, value in want.items():
            if np.allclose(np.asarray(got, np.float32), value, rtol=1e-5, atol=1e-6):
                return version
        return None

    def rest_client():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    response = http.post(f"{live.rest}/v1/models/{LIVE}:predict", json={"instances": x.tolist()})
                    version = which(response.json()["predictions"]) if response.status_code == 200 else None
                except Exception as error:  # noqa: BLE001 - counted as a failure
                    failures.append(repr(error))
                    continue
                if version is None:
                    failures.append(response.text[:200])
                seen["rest"].append(version)

    def grpc_client():
        stub = live.predict_stub()
        while not stop.is_set():
            try:
                response = stub.Predict(grpc_request(model=LIVE, x=x), timeout=30)
            except grpc.RpcError as error:
                failures.append(repr(error))
                continue
            got = tf.make_ndarray(next(iter(response.outputs.values())))
            if which(got) != response.model_spec.version.value:
                failures.append(f"version {response.model_spec.version.value} answered like {which(got)}")
            seen["grpc"].append(response.model_spec.version.value)

    threads = [threading.Thread(target=rest_client), threading.Thread(target=grpc_client)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        export.export_saved_model(small_model(2), live.base, version=2, randomized=export.Randomized(samples=4, seed=0))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(s and s[-1] == 2 for s in seen.values()):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == []
    for client, versions in seen.items():
        assert versions[0] == 1 and versions[-1] == 2, client
        switch = versions.index(2)
        assert set(versions[switch:]) == {2}, f"{client} went back to version 1 after the switch"
    status = httpx.get(f"{live.rest}/v1/models/{LIVE}").json()["model_version_status"]
    assert {s["version"]: s["state"] for s in status}["2"] == "AVAILABLE"
    assert {s["version"]: s["state"] for s in status}["1"] == "END"


def _write_bad_warmup(directory):
    request = grpc_request(model=LIVE, x=np.zeros((1, 4, 4, 1), np.float32))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(os.path.join(directory, "assets.extra", "tf_serving_warmup_requests")) as writer:
        writer.write(log.SerializeToString())


def _corrupt_saved_model(directory):
    with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")


def test_broken_versions_are_reported_and_the_old_one_keeps_serving(live, bundles, x):
    stub = live.predict_stub()
    before = stub.Predict(grpc_request(model=LIVE, x=x), timeout=30).model_spec.version.value
    source = bundles["paths"][2]
    os.makedirs(os.path.join(live.base, ".tfcv-tmp-export-123"))
    os.makedirs(os.path.join(live.base, "notes"))
    publish_copy(source, live.base, 8, mutate=_write_bad_warmup)
    publish_copy(source, live.base, 9, mutate=_corrupt_saved_model)
    url = f"{live.rest}/v1/models/{LIVE}"
    deadline = time.monotonic() + 60
    states = {}
    while time.monotonic() < deadline:
        states = {s["version"]: s for s in httpx.get(url).json()["model_version_status"]}
        if all(v in states and states[v]["state"] == "END" for v in ("8", "9")):
            break
        time.sleep(0.2)
    assert states["8"]["state"] == states["9"]["state"] == "END", states
    assert states["8"]["status"]["error_code"] == "UNKNOWN"
    assert "Warmup record 1" in states["8"]["status"]["error_message"]
    assert "refused the input" in states["8"]["status"]["error_message"]
    assert "version 9" in states["9"]["status"]["error_message"]
    assert states[str(before)]["state"] == "AVAILABLE"
    assert set(states) <= {"1", "2", "8", "9"}  # temporary and non-numeric directories ignored
    time.sleep(0.6)  # a few more polls: failed versions are not retried while unchanged
    assert stub.Predict(grpc_request(model=LIVE, x=x), timeout=30).model_spec.version.value == before
    assert httpx.post(url + ":predict", json={"instances": x.tolist()}).status_code == 200
    assert "Loading version 9 of model live" in live.log()


# -------------------------------------------------------- in-process units


class Branching(tf.Module):
    """A signature whose `tf.cond` TensorFlow lowers to Switch and Merge ops."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def branch(self, x):
        return {"y": tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)}


def test_signatures_the_single_threaded_executor_refuses_run_with_the_default_one(tmp_path, caplog):
    module = Branching()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.branch})
    servable = Servable("branch", 1, str(tmp_path / "1"))
    try:
        with caplog.at_level(logging.INFO, logger="tfcv.serving"):
            first = servable.signature().predict({"x": np.array([1.0, 2.0], np.float32)})
        second = servable.signature().predict({"x": np.array([-1.0, -2.0], np.float32)})
    finally:
        servable.close()
    np.testing.assert_array_equal(first["y"], [2.0, 4.0])
    np.testing.assert_array_equal(second["y"], [-2.0, -3.0])
    assert "default executor" in caplog.text


def test_registry_retries_a_failed_version_once_its_files_change(bundles, tmp_path):
    base = str(tmp_path / "m")
    os.makedirs(base)
    publish_copy(bundles["paths"][1], base, 1)
    publish_copy(bundles["paths"][1], base, 2, mutate=_corrupt_saved_model)
    os.makedirs(os.path.join(base, "3.partial"))
    registry = ModelRegistry(ModelConfig("m", base), file_system_poll_wait_seconds=0, batching=None)
    try:
        registry.poll()
        states = {s.version: s.state for s in registry.status("m").model_version_status}
        assert states == {2: get_model_status_pb2.ModelVersionStatus.END,
                          1: get_model_status_pb2.ModelVersionStatus.AVAILABLE}
        assert registry.get("m").version == 1
        shutil.rmtree(os.path.join(base, "2"))
        publish_copy(bundles["paths"][2], base, 2)
        registry.poll()
        assert registry.get("m").version == 2
        states = {s.version: s for s in registry.status("m").model_version_status}
        assert states[2].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert states[2].status.error_message == ""
        assert states[1].state == get_model_status_pb2.ModelVersionStatus.END
        with pytest.raises(Exception, match=r"Specific\(m, 1\)"):
            registry.get("m", version=1)
    finally:
        registry.stop()


def test_batcher_merges_concurrent_requests_and_splits_answers():
    calls = []

    def double(inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.02)
        return {"y": inputs["x"] * 2, "row": inputs["x"][:, 0]}

    batcher = Batcher(double, BatchingOptions(max_batch_size=8, batch_timeout_micros=20_000, num_batch_threads=1))
    results, errors = {}, []

    def submit(i):
        try:
            results[i] = batcher.submit({"x": np.full((2, 3), float(i))})
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    run_in_threads(submit, 12)
    batcher.close()
    assert errors == []
    for i, out in results.items():
        np.testing.assert_array_equal(out["y"], np.full((2, 3), 2.0 * i))
        np.testing.assert_array_equal(out["row"], [i, i])
    assert sum(calls) == 24 and max(calls) > 2 and max(calls) <= 8
    # After close, requests still get answers (run without batching).
    np.testing.assert_array_equal(batcher.submit({"x": np.ones((1, 3))})["y"], 2 * np.ones((1, 3)))


def test_batcher_threads_form_one_batch_at_a_time():
    # Five one-row requests fill a batch of five. With two batch threads,
    # the one forming a batch must get all five: a second thread taking
    # some of them would start a half-full batch of its own, and both would
    # wait out the (minute-long) timeout before running the model twice.
    calls = []

    def identity(inputs):
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"]}

    batcher = Batcher(identity, BatchingOptions(max_batch_size=5, batch_timeout_micros=60_000_000,
                                                num_batch_threads=2))
    interval = sys.getswitchinterval()
    try:
        # The five are queued before a batch thread can take the GIL.
        sys.setswitchinterval(10)
        futures = [batcher.try_submit({"x": np.full((1, 2), float(i))}) for i in range(5)]
        sys.setswitchinterval(interval)
        answers = [future.result(timeout=30)["y"] for future in futures]
        # A lone request is every request in flight: waiting for others
        # could only delay it, so it runs without waiting out the timeout.
        lone = batcher.try_submit({"x": np.full((1, 2), 5.0)}).result(timeout=30)["y"]
    finally:
        sys.setswitchinterval(interval)
        batcher.close()
    assert calls == [5, 1]
    for i, answer in enumerate([*answers, lone]):
        np.testing.assert_array_equal(answer, np.full((1, 2), float(i)))


def test_batcher_isolates_a_failing_request():
    def fn(inputs):
        if (inputs["x"] < 0).any():
            raise InvalidArgument("negative input")
        time.sleep(0.02)
        return {"y": inputs["x"] + 1}

    batcher = Batcher(fn, BatchingOptions(max_batch_size=16, batch_timeout_micros=20_000, num_batch_threads=1))
    outcomes = {}

    def submit(i):
        try:
            outcomes[i] = batcher.submit({"x": np.full((1,), -1.0 if i == 3 else float(i))})["y"][0]
        except InvalidArgument as error:
            outcomes[i] = error

    run_in_threads(submit, 6)
    batcher.close()
    assert isinstance(outcomes.pop(3), InvalidArgument)
    assert outcomes == {i: i + 1.0 for i in (0, 1, 2, 4, 5)}


def test_b64_strings_and_model_config_file(tmp_path, bundles):
    # String inputs: plain strings and {"b64": ...} objects, as TF Serving.
    signature_def = meta_graph_pb2.SignatureDef()
    signature_def.inputs["text"].dtype = types_pb2.DT_STRING
    signature_def.inputs["text"].tensor_shape.dim.add(size=-1)
    signature = Signature("s", None, signature_def)
    encoded = base64.b64encode(b"\x00\xffbytes").decode()
    arrays, row = decode_predict_request({"instances": ["plain", {"b64": encoded}]}, signature)
    assert row and arrays["text"].tolist() == [b"plain", b"\x00\xffbytes"]
    with pytest.raises(InvalidArgument, match="not valid base64"):
        decode_predict_request({"inputs": [{"b64": "***"}]}, signature)

    with pytest.warns(UserWarning, match="label"):  # the base paths do not exist here
        path = export.write_model_config(tmp_path / "models.config", [
            {"name": "a", "base_path": "/models/a", "version_policy": {"latest": 2}},
            {"name": "b", "base_path": "/models/b", "version_policy": [3, 4], "version_labels": {"stable": 3}},
        ])
    a, b = read_model_config_file(path)
    assert (a.name, a.base_path, a.version_policy, a.num_versions) == ("a", "/models/a", "latest", 2)
    assert (b.version_policy, b.versions, b.version_labels) == ("specific", (3, 4), {"stable": 3})
    assert b.aspired([1, 3, 4, 5]) == {3, 4} and a.aspired([1, 3, 4, 5]) == {4, 5}
    (tmp_path / "bad.config").write_text("model_config_list { config { name: 'x' base_path: }")
    with pytest.raises(ValueError, match="bad.config"):
        read_model_config_file(tmp_path / "bad.config")


def test_server_options_validate_and_bind_only_loopback_by_default():
    options = ServerOptions()
    assert options.host == "127.0.0.1"
    assert set(options.accepted_hosts()) == {"127.0.0.1", "localhost", "::1"}
    assert ServerOptions(host="0.0.0.0", allowed_hosts=("models.internal",)).accepted_hosts() == ("models.internal",)
    with pytest.raises(ValueError, match="rest_api_port=70000"):
        ServerOptions(rest_api_port=70000)
    with pytest.raises(ValueError, match="port=0, rest_api_port=0"):
        ServerOptions(port=0, rest_api_port=0)
    with pytest.raises(ValueError, match="max_batch_size=0"):
        BatchingOptions(max_batch_size=0)
    # asyncio turns on TCP_NODELAY only for sockets created with IPPROTO_TCP;
    # without it every REST answer waited ~40 ms for a delayed ACK.
    sock = _bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        with pytest.raises(OSError, match=f"Cannot bind the REST port 127.0.0.1:{sock.getsockname()[1]}"):
            _bind_socket("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


# ------------------------------------------------------------------ clients

CLIENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serving", "clients")


def _run_client(argv, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **kwargs.pop("env", {})}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, **kwargs)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_rest_and_grpc_clients_print_predictions_with_uncertainty(server, capsys):
    rest = _run_client([sys.executable, os.path.join(CLIENTS, "rest_client.py"), "--url", server.rest, "--count", "2"])
    assert "versions: 2 AVAILABLE, 1 AVAILABLE" in rest
    lines = [line for line in rest.splitlines() if line.startswith("label ")]
    assert len(lines) == 2 and all("predicted" in line and "±" in line and "entropy" in line for line in lines)
    # In this process: TensorFlow is imported already, a subprocess would import it again.
    spec = importlib.util.spec_from_file_location("grpc_client", os.path.join(CLIENTS, "grpc_client.py"))
    grpc_client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grpc_client)
    assert grpc_client.main(["--target", server.grpc_target, "--count", "2"]) == 0
    grpc_out = capsys.readouterr().out
    assert "answered by version 2" in grpc_out
    assert [line for line in grpc_out.splitlines() if line.startswith("label ")][0].split("|")[0] == lines[0].split("|")[0]


def _client_module(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CLIENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clients_say_in_one_line_what_they_cannot_reach_or_read(tmp_path, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    for name, argv in (("rest_client", ["--url", f"http://127.0.0.1:{closed}"]),
                       ("rest_image_client", [__file__, "--url", f"http://127.0.0.1:{closed}"]),
                       ("grpc_client", ["--target", f"127.0.0.1:{closed}"])):
        with pytest.raises(SystemExit) as exit_info:
            _client_module(name).main(argv)
        message = str(exit_info.value.code)
        assert str(closed) in message and "listening at --" in message and "\n" not in message, (name, message)
    with pytest.raises(SystemExit) as exit_info:
        _client_module("rest_image_client").main([str(tmp_path / "missing.png")])
    assert exit_info.value.code == 2 and "cannot read the image file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        _client_module("rest_image_client").main([__file__, "--bundle", str(tmp_path)])
    assert "--bundle" in str(exit_info.value.code) and "tfcv.json" in str(exit_info.value.code)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_lines_answer_in_tf_serving_shapes(server):
    out = _run_client(["bash", os.path.join(CLIENTS, "rest_curl.sh")],
                      env={"HOST": server.rest.removeprefix("http://"), "MODEL": MODEL})
    documents = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert documents[0]["model_version_status"][0]["state"] == "AVAILABLE"
    assert len(documents[2]["predictions"]) == 1 and len(documents[2]["predictions"][0]) == 10
    assert RANDOMIZED_OUTPUTS <= set(documents[3]["outputs"])
    assert len(documents[4]["predictions"][0]) == 10


def test_cors_headers_only_for_the_origins_asked_for(tmp_path):
    registry = ModelRegistry(ModelConfig("m", str(tmp_path / "none")), file_system_poll_wait_seconds=0)
    app = create_app(registry, cors_allow_origins=["https://app.example"])

    async def get(origin):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/v1/models/m", headers={"Origin": origin})

    allowed, other = asyncio.run(get("https://app.example")), asyncio.run(get("https://evil.example"))
    assert allowed.status_code == other.status_code == 404
    assert "Could not find any versions of model m" in allowed.json()["error"]
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("batching", [None, BatchingOptions(max_batch_size=8, num_batch_threads=1)],
                         ids=["unbatched", "batched"])
def test_rest_timeout_answers_504_without_waiting_for_the_model(tmp_path, batching):
    # The model blocks until the answer has arrived, so the request cannot
    # finish within --rest_api_timeout_in_ms whatever the machine's speed;
    # a server that waited for it would answer only after a minute.
    module = PlainSignatures()
    tf.saved_model.save(module, str(tmp_path / "m" / "1"), signatures={"serving_default": module.identity})
    registry = ModelRegistry(ModelConfig("m", str(tmp_path / "m")), file_system_poll_wait_seconds=0,
                             batching=batching)
    release, finished = threading.Event(), threading.Event()
    try:
        registry.poll()
        signature = registry.get("m").signature()
        model = signature.fn

        def blocked(**inputs):
            release.wait(60)
            finished.set()
            return model(**inputs)

        signature.fn = blocked
        app = create_app(registry, timeout_ms=1)

        async def predict():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                return await client.post("/v1/models/m:predict", json={"instances": [[1.0, 2.0, 3.0, 4.0]]})

        response = asyncio.run(predict())
        assert not finished.is_set()
        assert response.status_code == 504  # TF Serving: DEADLINE_EXCEEDED -> GATEWAY_TO
        assert "--rest_api_timeout_in_ms" in response.json()["error"]
    finally:
        release.set()
        registry.stop()


def test_rest_parses_http_with_httptools_and_says_so_when_it_is_missing(monkeypatch, caplog):
    assert _http_parser() == "httptools"
    # None in sys.modules makes `import httptools` raise ImportError.
    monkeypatch.setitem(sys.modules, "httptools", None)
    # `tfcv serve` stops the logger's propagation; caplog listens on the root.
    monkeypatch.setattr(logging.getLogger("tfcv.serving"), "propagate", True)
    with caplog.at_level("WARNING", logger="tfcv.serving"):
        assert _http_parser() == "h11"
    assert "httptools is not installed" in caplog.text


class Refusing(tf.Module):
    """Signatures whose ops refuse their input while running."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def positive(self, x):
        with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(x > 0), ["x must be positive"])]):
            return {"y": tf.identity(x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="png")])
    def decode(self, png):
        return {"pixels": tf.map_fn(lambda b: tf.size(tf.io.decode_png(b)), png, fn_output_signature=tf.int32)}


def test_an_op_refusing_the_input_is_answered_in_its_own_words(tmp_path):
    # TensorFlow wraps the op's message in a preamble, node names and the
    # traced function's id; the client gets the op's message on one line.
    module = Refusing()
    path = str(tmp_path / "1")
    tf.saved_model.save(module, path, signatures={"serving_default": module.positive, "decode": module.decode})
    servable = Servable("m", 1, path)
    try:
        with pytest.raises(InvalidArgument) as refused:
            servable.signature().predict({"x": np.array([1.0, -1.0], np.float32)})
        assert str(refused.value) == "Signature `serving_default` refused the input: assertion failed: [x must be positive]"
        with pytest.raises(InvalidArgument, match=r"^Signature `decode` refused the input: [^\n\[]+$") as refused:
            servable.signature("decode").predict({"png": np.array([b"not a png"], object)})
        assert "Graph execution error" not in str(refused.value) and "Detected at node" not in str(refused.value)
    finally:
        servable.close()


class TwoInputs(tf.Module):
    """Inputs declared out of alphabetical order, of two dtypes."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="zeta"),
                                  tf.TensorSpec([None], tf.int32, name="alpha")])
    def combine(self, zeta, alpha):
        return {"scaled": zeta * tf.cast(alpha, tf.float32)[:, None] - 1.0, "next": alpha + 1}


def test_signature_call_matches_a_keyword_call_and_checks_shapes(tmp_path):
    # The server calls a signature with flat tensors in its parameter order
    # rather than by keyword; the answers and the shape check must not change.
    module = TwoInputs()
    path = str(tmp_path / "1")
    tf.saved_model.save(module, path, signatures={"serving_default": module.combine})
    zeta = np.arange(6, dtype=np.float32).reshape(3, 2)
    alpha = np.array([1, -2, 3], dtype=np.int32)
    want = tf.saved_model.load(path).signatures["serving_default"](zeta=tf.constant(zeta), alpha=tf.constant(alpha))
    servable = Servable("m", 1, path)
    try:
        got = servable.signature().predict({"alpha": alpha, "zeta": zeta})
        for name in ("scaled", "next"):
            np.testing.assert_array_equal(got[name], want[name].numpy())
        # The graph would broadcast a [3, 1] zeta; the signature declares
        # [-1, 2], and a keyword call refuses it before running.
        with pytest.raises(InvalidArgument, match=r"refused the input: Input `zeta` has shape \[3,1\]"):
            servable.signature().predict({"alpha": alpha, "zeta": zeta[:, :1]})
    finally:
        servable.close()
