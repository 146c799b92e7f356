"""Calls a TF Serving gRPC API (TensorFlow Serving or `tfcv serve`) for digits.

Uses the official stubs of the `tensorflow-serving-api` package: asks the
model's metadata for its input, sends a few 8x8 digits (or random inputs of
the model's shape when scikit-learn is missing) to `serving_default` and
`predict_randomized`, and prints each prediction with its uncertainty.

Usage:

    python serving/clients/grpc_client.py [--target localhost:8500] [--model digits] [--count 3]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


def input_spec(stub, model: str) -> tuple[str, list[int], tf.DType]:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    ((name, info),) = signatures.signature_def["serving_default"].inputs.items()
    return name, [d.size for d in info.tensor_shape.dim][1:], tf.dtypes.as_dtype(info.dtype)


def sample_inputs(shape: list[int], count: int, dtype: tf.DType) -> tuple[np.ndarray, list]:
    if shape == [8, 8, 1]:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            pass
        else:
            digits = load_digits()
            images = (digits.images[:count] / 16.0)[..., np.newaxis]
            return images.astype(dtype.as_numpy_dtype), digits.target[:count].tolist()
    images = np.random.default_rng(0).random((count, *shape))
    return images.astype(dtype.as_numpy_dtype), [None] * count


def predict(stub, model: str, signature: str, name: str, images: np.ndarray) -> tuple[int, dict]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs[name].CopyFrom(tf.make_tensor_proto(images))
    response = stub.Predict(request, timeout=30)
    outputs = {key: tf.make_ndarray(value) for key, value in response.outputs.items()}
    return response.model_spec.version.value, outputs


def ask(args) -> tuple[int, list, np.ndarray, dict]:
    """The model's versions (printed), then its answers to `serving_default`
    and `predict_randomized` for a few inputs."""
    with grpc.insecure_channel(args.target) as channel:
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = args.model
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
        print("versions:", ", ".join(
            f"{s.version} {get_model_status_pb2.ModelVersionStatus.State.Name(s.state)}"
            for s in status.model_version_status
        ))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        name, shape, dtype = input_spec(stub, args.model)
        images, labels = sample_inputs(shape, args.count, dtype)
        version, default = predict(stub, args.model, "serving_default", name, images)
        _, randomized = predict(stub, args.model, "predict_randomized", name, images)
    (probabilities,) = default.values()
    return version, labels, probabilities, randomized


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:8500", help="gRPC address (default %(default)s)")
    parser.add_argument("--model", default="digits", help="model name (default %(default)s)")
    parser.add_argument("--count", type=int, default=3, help="how many inputs to send (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        version, labels, probabilities, randomized = ask(args)
    except grpc.RpcError as error:
        hint = (" Is TF Serving's gRPC API (tfcv serve or tensorflow_model_server --port) listening at --target?"
                if error.code() == grpc.StatusCode.UNAVAILABLE else "")
        sys.exit(f"{error.code().name} from {args.target}: {error.details()}{hint}")
    print(f"answered by version {version}")
    for i, label in enumerate(labels):
        predicted = int(np.argmax(probabilities[i]))
        mean, std = randomized["mean"][i], randomized["std"][i]
        top = int(np.argmax(mean))
        entropy = randomized.get("predictive_entropy", np.full(len(labels), np.nan))[i]
        agreement = randomized.get("agreement", np.full(len(labels), np.nan))[i]
        truth = "" if label is None else f"label {label}: "
        print(
            f"{truth}predicted {predicted} (p={probabilities[i][predicted]:.3f}) | randomized: "
            f"{top} p={mean[top]:.3f} ± {std[top]:.3f}, entropy {entropy:.3f} nats, agreement {agreement:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
