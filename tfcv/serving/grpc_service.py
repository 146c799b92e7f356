"""TF Serving's gRPC API, registered with the stubs of `tensorflow-serving-api`.

`tensorflow.serving.PredictionService` (`Predict`, `GetModelMetadata`) and
`tensorflow.serving.ModelService` (`GetModelStatus`) are served through
`add_PredictionServiceServicer_to_server` and
`add_ModelServiceServicer_to_server`, so the official
`PredictionServiceStub` and `ModelServiceStub` work unchanged. Methods this
server does not provide (`Classify`, `Regress`, `MultiInference`,
`HandleReloadConfigRequest`) answer `UNIMPLEMENTED`.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfcv.serving.errors import InvalidArgument, ServingError
from tfcv.serving.registry import ModelRegistry
from tfcv.serving.servable import tensor_protos_to_arrays

__all__ = ["create_grpc_server"]

logger = logging.getLogger("tfcv.serving")

_SIGNATURE_DEF = "signature_def"


def create_grpc_server(registry: ModelRegistry, *, host: str = "127.0.0.1", port: int = 8500,
                       max_message_bytes: int = 16 * 1024 * 1024, max_workers: int = 16,
                       strict: bool = False) -> tuple[grpc.Server, int]:
    """A gRPC server (not yet started) answering for `registry`.

    Args:
        registry: The `ModelRegistry` holding the served models.
        host: `str`. Address to bind. Defaults to `"127.0.0.1"`.
        port: `int`. Port to bind; `0` picks a free one. Defaults to `8500`.
        max_message_bytes: `int`. Largest accepted request; larger ones get
            `RESOURCE_EXHAUSTED`. Defaults to 16 MiB.
        max_workers: `int`. Threads answering requests. Defaults to `16`.
        strict: `bool`. Refuse NaN and Infinity in inputs. Defaults to
            `False`.

    Returns:
        `(server, port)`: the server and the port it is bound to.

    Raises:
        OSError: if the address cannot be bound.

    Example:

    >>> server, port = create_grpc_server(registry, port=8500)
    >>> server.start()
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tfcv-grpc"),
        options=[
            ("grpc.max_receive_message_length", int(max_message_bytes)),
            ("grpc.max_send_message_length", -1),
            # Without this, a second server could bind the same port and
            # steal half of the connections.
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(registry, strict=strict, max_message_bytes=max_message_bytes), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"Cannot bind the gRPC port at {address}: {error}") from None
    if not bound:
        raise OSError(f"Cannot bind the gRPC port at {address}: is it already in use?")
    return server, bound


def _abort(context: grpc.ServicerContext, error: ServingError):
    context.abort(getattr(grpc.StatusCode, error.grpc_code), error.message)


def _model_lookup(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label if model_spec.WhichOneof("version_choice") == "version_label" else None
    return model_spec.name, version, label


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService`: `Predict` and `GetModelMetadata`."""

    def __init__(self, registry: ModelRegistry, *, strict: bool = False, max_message_bytes: int = 16 * 1024 * 1024):
        self.registry = registry
        self.strict = strict
        self.max_message_bytes = max_message_bytes

    def Predict(self, request, context):  # noqa: N802 - the gRPC method name
        try:
            return self._predict(request)
        except ServingError as error:
            _abort(context, error)
        except Exception as error:  # noqa: BLE001 - a server bug still answers a status
            logger.exception("Unexpected error answering Predict")
            _abort(context, ServingError(f"Internal error: {type(error).__name__}: {error}"))

    def _predict(self, request) -> predict_pb2.PredictResponse:
        servable = self.registry.get(*_model_lookup(request.model_spec))
        signature = servable.signature(request.model_spec.signature_name)
        inputs = tensor_protos_to_arrays(request.inputs, signature, max_bytes=self.max_message_bytes)
        outputs = signature.predict(inputs, output_filter=request.output_filter, allow_nonfinite=not self.strict)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802 - the gRPC method name
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field.")
            unsupported = [f for f in fields if f != _SIGNATURE_DEF]
            if unsupported:
                raise InvalidArgument(f"Metadata field {unsupported[0]} is not supported; use {_SIGNATURE_DEF!r}.")
            servable = self.registry.get(*_model_lookup(request.model_spec))
        except ServingError as error:
            _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[_SIGNATURE_DEF].Pack(servable.signature_def_map)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: `GetModelStatus`."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def GetModelStatus(self, request, context):  # noqa: N802 - the gRPC method name
        try:
            return self.registry.status(*_model_lookup(request.model_spec))
        except ServingError as error:
            _abort(context, error)
