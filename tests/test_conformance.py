"""TensorFlow Serving's own server tests, replayed against `tfcv serve`.

Each test is a case of TF Serving's
`tensorflow_serving/model_servers/tensorflow_model_server_test.py` (named
after it), run on the models of `servables/tensorflow/testdata` (vendored in
`tests/conformance/testdata`, Apache-2.0, see its LICENSE) with the command
line `tensorflow_model_server_test_base.RunServer` builds and the expected
values written upstream, over REST and the official `tensorflow-serving-api`
gRPC stubs. The servers are started once per module and in parallel;
everything listens on 127.0.0.1. The cases that need TF Serving's C++
internals (TFLite, the profiler, TF Text ops, MirroredStrategy) are listed
in serving/README.md with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.conftest import ServerProcess, call_rest, free_port

pytestmark = pytest.mark.slow

TESTDATA = os.path.join(os.path.dirname(__file__), "conformance", "testdata")
HALF_PLUS_TWO = os.path.join(TESTDATA, "saved_model_half_plus_two_cpu")
HALF_PLUS_TWO_TF2 = os.path.join(TESTDATA, "saved_model_half_plus_two_tf2_cpu")
HALF_PLUS_THREE = os.path.join(TESTDATA, "saved_model_half_plus_three")
COUNTER = os.path.join(TESTDATA, "saved_model_counter")
RPC_TIMEOUT = 20.0
START_TIMEOUT = 240.0
CONFIG_TEMPLATE = """
model_config_list: {{
  config: {{
    name: "{name}",
    base_path: "{model_path}",
    model_platform: "tensorflow"
  }}
}}
"""


class _Server(ServerProcess):
    """`python -m tfcv.serving` with the flags of TF Serving's RunServer."""

    start_timeout = START_TIMEOUT

    def __init__(self, tmp, name, *, model_name=None, model_path=None, model_config_file=None,
                 monitoring_config_file=None, batching_parameters_file=None, grpc_channel_arguments="",
                 model_config_file_poll_period=None):
        self.port, self.rest_port = free_port(), free_port()
        self.socket_path = str(tmp / f"{name}.sock")
        command = [sys.executable, "-m", "tfcv.serving", f"--port={self.port}",
                   f"--rest_api_port={self.rest_port}", "--rest_api_timeout_in_ms=5000",
                   f"--grpc_socket_path={self.socket_path}"]
        if model_config_file:
            command.append(f"--model_config_file={model_config_file}")
        else:
            command += [f"--model_name={model_name}", f"--model_base_path={model_path}"]
        if monitoring_config_file:
            command.append(f"--monitoring_config_file={monitoring_config_file}")
        if model_config_file_poll_period is not None:
            command.append(f"--model_config_file_poll_wait_seconds={model_config_file_poll_period}")
        if batching_parameters_file:
            command += ["--enable_batching", f"--batching_parameters_file={batching_parameters_file}"]
        arguments = ",".join(a for a in (grpc_channel_arguments, "grpc.so_reuseaddr=1") if a)
        command.append(f"--grpc_channel_arguments={arguments}")
        super().__init__(command, rest_port=self.rest_port, log_path=tmp / f"{name}.log", host="localhost")
        self.grpc_address = f"localhost:{self.port}"
        self.rest_address = f"localhost:{self.rest_port}"

    def wait_ready(self) -> None:
        """TF Serving's WaitForServerReady: a Predict to a missing model answers 'Servable'."""
        deadline = time.monotonic() + START_TIMEOUT
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "intentionally_missing_model"
        with grpc.insecure_channel(self.grpc_address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while time.monotonic() < deadline:
                self.check_running()
                try:
                    stub.Predict(request, 5)
                except grpc.RpcError as error:
                    if "Servable" in (error.details() or ""):
                        return
                time.sleep(0.3)
        raise RuntimeError(f"server not ready after {START_TIMEOUT}s:\n{self.log()}")


def sorted_object(obj):
    """TF Serving's SortedObject: nested lists and dicts sorted, for comparing metadata."""
    if isinstance(obj, dict):
        return sorted((k, sorted_object(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return sorted(sorted_object(x) for x in obj)
    return obj


def model_version(model_path) -> int:
    return int(os.listdir(model_path)[0])


def verify_model_spec(spec, name, signature_name, version):
    assert spec.name == name
    assert spec.signature_name == signature_name
    assert spec.version.value == version


def verify_predict_request(address, expected_output, expected_version, model_name="default",
                           specify_output=True, batch_input=False, signature_name="serving_default"):
    """TF Serving's VerifyPredictRequest, as written upstream."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


# ------------------------------------------------------------------ servers


def _saved_models(root):
    """The models test_tf_saved_model_save* and test_sequential_keras_saved_model_save build."""
    import keras

    paths = {}
    base = root / "tf_saved_model_save"
    module = tf.Module()
    module.v1 = tf.Variable(3.0)
    module.v2 = tf.Variable(2.0)
    module.f = tf.function(lambda x: {"y": module.v1 * module.v2 * x})
    tf.saved_model.save(module, str(base / "00000123"),
                        module.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    paths["tf_saved_model_save"] = base

    base = root / "tf_saved_model_save_multiple_signatures"
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    module.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(module, str(base / "00000123"),
                        signatures={"serving_default": module.f, "custom_signature_key": module.g})
    paths["tf_saved_model_save_multiple_signatures"] = base

    # Keras 3 saves for serving with export(); its serving_default takes the
    # Input's name and returns output_0, so the Lambda is named to answer y.
    base = root / "keras_sequential_saved_model_save"
    inputs = keras.Input(shape=(1,), dtype="float32", name="x")
    model = keras.Model(inputs, {"y": keras.layers.Identity(name="y")(inputs)})
    export = keras.export.ExportArchive()
    export.track(model)
    export.add_endpoint("serving_default", lambda x: model(x), input_signature=[
        tf.TensorSpec((None, 1), tf.float32, name="x")])
    export.write_out(str(base / "00000123"), verbose=False)
    paths["keras_sequential_saved_model_save"] = base
    return paths


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conformance")
    good_config = tmp / "good_model_config.conf"
    with open(os.path.join(TESTDATA, "good_model_config.txt")) as f:
        template = f.read()
    good_config.write_text(
        template.replace("${TEST_HALF_PLUS_TWO_DIR}", HALF_PLUS_TWO)
        .replace("${TEST_HALF_PLUS_THREE_DIR}", HALF_PLUS_THREE)
    )
    reload_config = tmp / "model_config.txt"
    reload_config.write_text(CONFIG_TEMPLATE.format(name="half_plus_two", model_path=HALF_PLUS_TWO))
    zero_config = tmp / "model_config_zero.txt"
    zero_config.write_text(CONFIG_TEMPLATE.format(name="half_plus_two", model_path=HALF_PLUS_TWO))
    saved = _saved_models(tmp / "saved")
    extra = tmp / "extra_models.conf"
    # The TF2 half_plus_two answers as "default" here, as in its upstream cases.
    entries = [(name, str(path)) for name, path in saved.items()] + [("counter", COUNTER),
                                                                     ("default", HALF_PLUS_TWO_TF2)]
    extra.write_text("model_config_list: {\n" + "".join(
        f'  config: {{ name: "{name}", base_path: "{path}", model_platform: "tensorflow" }}\n'
        for name, path in entries) + "}\n")
    started = {
        "default": _Server(tmp, "default", model_name="default", model_path=HALF_PLUS_TWO,
                           monitoring_config_file=os.path.join(TESTDATA, "monitoring_config.txt"),
                           batching_parameters_file=os.path.join(TESTDATA, "batching_config.txt"),
                           grpc_channel_arguments="grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb"),
        "good_config": _Server(tmp, "good_config", model_config_file=good_config),
        "reload": _Server(tmp, "reload", model_config_file=reload_config, model_config_file_poll_period=1),
        "zero_poll": _Server(tmp, "zero_poll", model_config_file=zero_config, model_config_file_poll_period=0),
        "extra": _Server(tmp, "extra", model_config_file=extra),
    }
    try:
        for server in started.values():
            server.wait_ready()
        started["default"].wait_available("default")
        for name in ("half_plus_two", "half_plus_three"):
            started["good_config"].wait_available(name)
        started["reload"].wait_available("half_plus_two")
        started["zero_poll"].wait_available("half_plus_two")
        for name, _ in entries:
            started["extra"].wait_available(name)
        yield {**started, "tf2": started["extra"], "tmp": tmp, "reload_config": reload_config, "zero_config": zero_config,
               "saved": saved}
    finally:
        for server in started.values():
            server.stop()


# -------------------------------------------------------------- the cases


def test_get_model_status(servers):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    with grpc.insecure_channel(servers["default"].grpc_address) as channel:
        result = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    assert result.model_version_status[0].status.error_code == 0


def test_get_model_metadata(servers):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(servers["default"].grpc_address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == model_version(HALF_PLUS_TWO)
    assert len(result.metadata) == 1
    assert "signature_def" in result.metadata


def _classify(address, model_path):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", model_version(model_path))


def test_classify(servers):
    _classify(servers["default"].grpc_address, HALF_PLUS_TWO)


def test_classify_tf2(servers):
    _classify(servers["tf2"].grpc_address, HALF_PLUS_TWO_TF2)


def _regress(address, model_path):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", model_version(model_path))


def test_regress(servers):
    _regress(servers["default"].grpc_address, HALF_PLUS_TWO)


def test_regress_tf2(servers):
    _regress(servers["tf2"].grpc_address, HALF_PLUS_TWO_TF2)


def _multi_inference(address, model_path):
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(result.results[i].model_spec, request.tasks[i].model_spec.name,
                          request.tasks[i].model_spec.signature_name, model_version(model_path))


def test_multi_inference(servers):
    _multi_inference(servers["default"].grpc_address, HALF_PLUS_TWO)


def test_multi_inference_tf2(servers):
    _multi_inference(servers["tf2"].grpc_address, HALF_PLUS_TWO_TF2)


def test_predict_saved_model(servers):
    # _TestPredict, here with --enable_batching and the upstream batching_config.txt.
    address, version = servers["default"].grpc_address, model_version(HALF_PLUS_TWO)
    verify_predict_request(address, expected_output=3.0, expected_version=version)
    verify_predict_request(address, expected_output=3.0, specify_output=False, expected_version=version)


def test_good_model_config(servers):
    address = servers["good_config"].grpc_address
    for name, output, path in (("half_plus_two", 3.0, HALF_PLUS_TWO), ("half_plus_three", 4.0, HALF_PLUS_THREE)):
        verify_predict_request(address, model_name=name, expected_output=output,
                               expected_version=model_version(path))
        verify_predict_request(address, model_name=name, expected_output=output, specify_output=False,
                               expected_version=model_version(path))


def test_bad_model_config():
    result = subprocess.run(
        [sys.executable, "-m", "tfcv.serving", f"--port={free_port()}", f"--rest_api_port={free_port()}",
         f"--model_config_file={os.path.join(TESTDATA, 'bad_model_config.txt')}"],
        capture_output=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode != 0
    assert b"Error parsing text-format tensorflow.serving.ModelServerConfig" in result.stderr


def test_model_config_reload(servers):
    server = servers["reload"]
    verify_predict_request(server.grpc_address, model_name="half_plus_two", expected_output=3.0,
                           specify_output=False, expected_version=model_version(HALF_PLUS_TWO))
    servers["reload_config"].write_text(CONFIG_TEMPLATE.format(name="half_plus_three", model_path=HALF_PLUS_THREE))
    # Upstream sleeps 10 seconds; polling for the same deadline is faster.
    deadline = time.monotonic() + 10
    while True:
        try:
            verify_predict_request(server.grpc_address, model_name="half_plus_three", expected_output=4.0,
                                   specify_output=False, expected_version=model_version(HALF_PLUS_THREE))
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_model_config_reload_with_zero_poll_period(servers):
    server = servers["zero_poll"]
    verify_predict_request(server.grpc_address, model_name="half_plus_two", expected_output=3.0,
                           specify_output=False, expected_version=model_version(HALF_PLUS_TWO))
    servers["zero_config"].write_text(CONFIG_TEMPLATE.format(name="half_plus_three", model_path=HALF_PLUS_THREE))
    time.sleep(0 + 1)
    verify_predict_request(server.grpc_address, model_name="half_plus_two", expected_output=3.0,
                           specify_output=False, expected_version=model_version(HALF_PLUS_THREE))


def test_good_grpc_channel_args(servers):
    verify_predict_request(servers["default"].grpc_address, expected_output=3.0, specify_output=False,
                           expected_version=model_version(HALF_PLUS_THREE))


def test_classify_rest(servers):
    url = f"http://{servers['default'].rest_address}/v1/models/default:classify"
    body = call_rest(url, {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(body.decode()) == {"results": [[["", 3.0]]]}


def test_regress_rest(servers):
    url = f"http://{servers['default'].rest_address}/v1/models/default:regress"
    body = call_rest(url, {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(body.decode()) == {"results": [3.0]}


def test_predict_rest(servers):
    url = f"http://{servers['default'].rest_address}/v1/models/default:predict"
    body = call_rest(url, {"instances": [2.0, 3.0, 4.0]})
    assert json.loads(body.decode()) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(servers):
    url = f"http://{servers['default'].rest_address}/v1/models/default:predict"
    body = call_rest(url, {"inputs": [2.0, 3.0, 4.0]})
    assert json.loads(body.decode()) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(servers):
    body = call_rest(f"http://{servers['default'].rest_address}/v1/models/default", None)
    assert json.loads(body.decode()) == {
        "model_version_status": [{"version": "123", "state": "AVAILABLE",
                                  "status": {"error_code": "OK", "error_message": ""}}]
    }


def test_get_model_metadata_rest(servers):
    body = call_rest(f"http://{servers['default'].rest_address}/v1/models/default/metadata", None)
    with open(os.path.join(TESTDATA, "half_plus_two_model_metadata.json")) as f:
        expected = json.load(f)
    assert sorted_object(json.loads(body.decode())) == sorted_object(expected)


def test_prometheus_endpoint(servers):
    body = call_rest(f"http://{servers['default'].rest_address}/monitoring/prometheus/metrics", None)
    text = body.decode("utf-8")
    assert "# TYPE" in text
    # The requests of the tests before this one are counted under TF Serving's names.
    assert ':tensorflow:serving:request_count{model_name="default",status="OK"}' in text
    assert ":tensorflow:cc:saved_model:load_attempt_count" in text
    assert ":tensorflow:cc:saved_model:load_latency{model_path=" in text
    # TF Serving has no version-state metric: tfcv's is under its own prefix.
    assert ':tfcv:serving:model_version_state{model_name="default",version="123",state="AVAILABLE"} 1' in text
    assert ":tensorflow:serving:model_version_state" not in text


def test_predict_uds(servers):
    verify_predict_request(f"unix:{servers['default'].socket_path}", expected_output=3.0, specify_output=False,
                           expected_version=model_version(HALF_PLUS_THREE))


def test_tf_saved_model_save(servers):
    verify_predict_request(servers["extra"].grpc_address, model_name="tf_saved_model_save", expected_output=12.0,
                           specify_output=False, expected_version=123)


def test_tf_saved_model_save_multiple_signatures(servers):
    address, name = servers["extra"].grpc_address, "tf_saved_model_save_multiple_signatures"
    verify_predict_request(address, model_name=name, expected_output=2.0, expected_version=123,
                           signature_name="custom_signature_key")
    verify_predict_request(address, model_name=name, expected_output=1.0, expected_version=123)


def test_sequential_keras_saved_model_save(servers):
    verify_predict_request(servers["extra"].grpc_address, model_name="keras_sequential_saved_model_save",
                           batch_input=True, specify_output=False, expected_output=2.0, expected_version=123)


# ------------------------------------- beyond the upstream Python test file


def _predict(address, model, signature, inputs=None, output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for key, value in (inputs or {}).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    with grpc.insecure_channel(address) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)


def test_counter_tf1_reference_variables(servers):
    # export_counter.py: a TF1 graph with a reference variable and assign ops.
    address = servers["extra"].grpc_address
    _predict(address, "counter", "reset_counter")
    assert _predict(address, "counter", "incr_counter").outputs["output"].float_val == [1.0]
    assert _predict(address, "counter", "incr_counter_by", {"delta": np.float32(3)}).outputs["output"].float_val == [4.0]
    assert _predict(address, "counter", "get_counter").outputs["output"].float_val == [4.0]


def test_predict_scalar_and_vector_inputs_as_tf_serving(servers):
    # half_plus_two declares [-1, 1]; TF Serving feeds a scalar or a vector as they come.
    address = servers["default"].grpc_address
    scalar = _predict(address, "default", "serving_default", {"x": np.float32(2.0)})
    assert scalar.outputs["y"].float_val == [3.0] and not scalar.outputs["y"].tensor_shape.dim
    vector = _predict(address, "default", "serving_default", {"x": np.array([2.0, 4.0], np.float32)})
    assert vector.outputs["y"].float_val == [3.0, 4.0] and not vector.outputs["y"].tensor_content


def test_classify_and_regress_rest_with_context(servers):
    # api_rest.md: examples inherit the context's features; their own win.
    base = f"http://{servers['default'].rest_address}/v1/models/default"
    body = {"signature_name": "regress_x_to_y", "context": {"x": 10.0}, "examples": [{"x": 2.0}, {}]}
    assert json.loads(call_rest(base + ":regress", body)) == {"results": [3.0, 7.0]}
    body["signature_name"] = "classify_x_to_y"
    assert json.loads(call_rest(base + ":classify", body)) == {"results": [[["", 3.0]], [["", 7.0]]]}


def test_classify_grpc_example_list_with_context(servers):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    lists = request.input.example_list_with_context
    lists.context.features.feature["x"].float_list.value.append(10.0)
    lists.examples.add().features.feature["x"].float_list.value.append(4.0)
    lists.examples.add()
    with grpc.insecure_channel(servers["tf2"].grpc_address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request, RPC_TIMEOUT)
    assert [c.classes[0].score for c in result.result.classifications] == [4.0, 7.0]


@pytest.mark.parametrize("url, body, status, fragment", [
    ("/v1/models/default/labels/nope:predict", {"instances": [1.0]}, 400, "Unrecognized servable version label"),
    ("/v1/models/default:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found'),
    ("/v1/models/default:classify", {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
     "No signature was found with the name: nope"),
    ("/v1/models/default:explain", {"instances": [1.0]}, 400, "Malformed request"),
    ("/v1/modelz/default", None, 400, "Malformed request"),
    ("/v1/models/nope:predict", {"instances": [1.0]}, 404, "Servable not found"),
    ("/v1/models/default:predict", {"instances": ["a"]}, 400, "expects DT_FLOAT"),
])
def test_rest_error_codes_as_tf_serving(servers, url, body, status, fragment):
    with pytest.raises(urllib.error.HTTPError) as info:
        call_rest(f"http://{servers['default'].rest_address}{url}", body, max_attempts=1)
    assert info.value.code == status
    assert fragment in json.loads(info.value.read())["error"]


def test_grpc_unknown_signature_is_failed_precondition(servers):
    with pytest.raises(grpc.RpcError) as info:
        _predict(servers["default"].grpc_address, "default", "nope", {"x": np.float32(1)})
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_warmup_replays_classify_regress_and_multi_inference(tmp_path):
    from tfcv.serving.servable import Servable

    version = tmp_path / "123"
    shutil.copytree(os.path.join(HALF_PLUS_TWO, "00000123"), version)
    example_input = {"example_list": {"examples": [{"features": {"feature": {"x": {"float_list": {"value": [2.0]}}}}}]}}
    from google.protobuf import json_format

    logs = []
    classify = classification_pb2.ClassificationRequest()
    json_format.ParseDict({"model_spec": {"signature_name": "classify_x_to_y"}, "input": example_input}, classify)
    logs.append(prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify)))
    regress = regression_pb2.RegressionRequest()
    json_format.ParseDict({"model_spec": {"signature_name": "regress_x_to_y"}, "input": example_input}, regress)
    logs.append(prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)))
    multi = inference_pb2.MultiInferenceRequest()
    json_format.ParseDict({"tasks": [{"model_spec": {"name": "m", "signature_name": "regress_x_to_y"},
                                      "method_name": "tensorflow/serving/regress"}],
                           "input": example_input}, multi)
    logs.append(prediction_log_pb2.PredictionLog(
        multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)))
    predict = predict_pb2.PredictRequest()
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0], np.float32)))
    logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict)))
    os.makedirs(version / "assets.extra")
    with tf.io.TFRecordWriter(str(version / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    servable = Servable("m", 123, str(version), batching=None)
    try:
        assert servable.warmup() == 4
    finally:
        servable.close()


def test_every_tensorflow_model_server_flag_is_accepted(tmp_path):
    import argparse

    from tfcv.serving.server import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    # The flags of main.cc, written as TF Serving's command lines write them.
    argv = ["--port=8500", "--grpc_socket_path=/tmp/x.sock", "--rest_api_port=8501", "--rest_api_num_threads=4",
            "--rest_api_timeout_in_ms=30000", "--rest_api_enable_cors_support=false", "--enable_batching",
            "--batching_parameters_file=b.txt", "--model_config_file=m.conf",
            "--model_config_file_poll_wait_seconds=60", "--num_load_threads=0", "--num_unload_threads=0",
            "--max_num_load_retries=5", "--load_retry_interval_micros=60000000",
            "--file_system_poll_wait_seconds=1", "--flush_filesystem_caches=true",
            "--tensorflow_session_parallelism=0", "--tensorflow_intra_op_parallelism=0",
            "--tensorflow_inter_op_parallelism=0", "--use_alts_credentials=false",
            "--platform_config_file=p.conf", "--saved_model_tags=serve", "--grpc_channel_arguments=a=1",
            "--grpc_max_threads=4", "--enable_model_warmup=true", "--num_request_iterations_for_warmup=1",
            "--prefer_tflite_model=false", "--enable_profiler=true", "--thread_pool_factory_config_file=t",
            "--mixed_precision=bfloat16", "--skip_initialize_tpu=true", "--enable_grpc_healthcheck_service=false",
            "--allow_version_labels_for_unavailable_models=false", "--enable_per_model_batching_parameters=false",
            "--tensorflow_session_config_file=s", "--ssl_config_file=s", "--per_process_gpu_memory_fraction=0",
            "--monitoring_config_file=m", "--remove_unused_fields_from_bundle_metagraph=true",
            "--num_tflite_pools=1", "--num_tflite_interpreters_per_pool=1",
            "--enable_signature_method_name_check=false", "--xla_cpu_compilation_enabled=false",
            "--xla_gpu_compilation_enabled=false", "--enable_serialization_as_tensor_content=false", "--version"]
    args = parser.parse_args(argv)
    assert args.enable_batching is True and args.model_config_file_poll_wait_seconds == 60
    assert args.ssl_config_file == "s" and args.version
