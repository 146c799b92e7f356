"""TF Serving's gRPC API, registered with the stubs of `tensorflow-serving-api`.

`tensorflow.serving.PredictionService` (`Predict`, `Classify`, `Regress`,
`MultiInference`, `GetModelMetadata`) and `tensorflow.serving.ModelService`
(`GetModelStatus`) are served through
`add_PredictionServiceServicer_to_server` and
`add_ModelServiceServicer_to_server`, so the official
`PredictionServiceStub` and `ModelServiceStub` work unchanged.
`HandleReloadConfigRequest` answers `UNIMPLEMENTED`. Output tensors are
written in the typed fields (`float_val`, `int_val`, ...), as TF Serving
writes them and clients read them.

The server is a `grpc.aio` server on an event loop of its own thread. A
small predict is decoded on the loop, awaits its batch there
(`asyncio.wrap_future`) and is answered from the loop, so it touches only
that thread and a batch thread; with a thread per request (`grpc.server`),
the same request crossed four threads, each waiting for the GIL. What may
block or take long (an unbatched model call, classify, regress,
multi-inference, large tensors) runs on a pool of `max_workers` threads.
The loop is uvloop's when it is installed, asyncio's otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfcv.serving import inference
from tfcv.serving.errors import InvalidArgument, ServingError
from tfcv.serving.registry import ModelRegistry
from tfcv.serving.servable import tensor_protos_to_arrays

__all__ = ["GrpcServer", "array_to_tensor_proto", "create_grpc_server", "parse_channel_arguments"]

logger = logging.getLogger("tfcv.serving")

_SIGNATURE_DEF = "signature_def"

# Above these sizes a predict's tensors are decoded, or its outputs encoded,
# on the thread pool: the event loop answers every other request meanwhile.
_LOOP_INPUT_BYTES = 64 * 1024
_LOOP_OUTPUT_VALUES = 4096


def create_grpc_server(registry: ModelRegistry, *, host: str = "127.0.0.1", port: int = 8500,
                       max_message_bytes: int = 16 * 1024 * 1024, max_workers: int = 16,
                       strict: bool = False, socket_path: str | None = None,
                       channel_arguments: Sequence[tuple[str, object]] = (),
                       metrics=None, tensor_content: bool = False) -> tuple[GrpcServer, int]:
    """A gRPC server (not yet started) answering for `registry`.

    Args:
        registry: The `ModelRegistry` holding the served models.
        host: `str`. Address to bind. Defaults to `"127.0.0.1"`.
        port: `int`. Port to bind; `0` picks a free one. Defaults to `8500`.
        max_message_bytes: `int`. Largest accepted request; larger ones get
            `RESOURCE_EXHAUSTED`. Defaults to 16 MiB.
        max_workers: `int`. Threads running what the event loop does not:
            unbatched model calls, classify, regress, multi-inference and
            large tensors. Defaults to `16`.
        strict: `bool`. Refuse NaN and Infinity in inputs and check shapes
            against the signature. Defaults to `False`.
        socket_path: `str`. Also listen on this Unix socket
            (`--grpc_socket_path`). Defaults to none.
        channel_arguments: `(name, value)` gRPC server arguments
            (`--grpc_channel_arguments`), applied after tfcv's own.
        metrics: A `tfcv.serving.metrics.Metrics` counting requests, or
            `None`.
        tensor_content: `bool`. Write outputs in `tensor_content`
            (`--enable_serialization_as_tensor_content`). Defaults to
            `False`: the typed fields, as TF Serving.

    Returns:
        `(server, port)`: the `GrpcServer` and the port it is bound to.

    Raises:
        OSError: if the address cannot be bound.

    Example:

    >>> server, port = create_grpc_server(registry, port=8500)
    >>> server.start()
    """
    options = [
        ("grpc.max_receive_message_length", int(max_message_bytes)),
        ("grpc.max_send_message_length", -1),
        # Without this, a second server could bind the same port and
        # steal half of the connections.
        ("grpc.so_reuseport", 0),
        *channel_arguments,
    ]
    executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tfcv-grpc")
    servicer = PredictionServicer(registry, strict=strict, max_message_bytes=max_message_bytes, metrics=metrics,
                                  tensor_content=tensor_content, executor=executor)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def build():
        server = grpc.aio.server(migration_thread_pool=executor, options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry), server)
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"Cannot bind the gRPC port at {address}: {error}") from None
        if not bound:
            raise OSError(f"Cannot bind the gRPC port at {address}: is it already in use?")
        if socket_path:
            try:
                server.add_insecure_port(f"unix:{socket_path}")
            except RuntimeError as error:
                raise OSError(f"Cannot listen on the Unix socket {socket_path}: {error}") from None
        return server, bound

    server = GrpcServer(executor)
    try:
        aio_server, bound = server.run(build())
    except BaseException:
        server.stop(None)
        raise
    server._server = aio_server
    return server, bound


class GrpcServer:
    """A `grpc.aio` server on an event loop thread, started and stopped as a `grpc.Server`.

    Made by `create_grpc_server`; `start()` starts serving, `stop(grace)`
    ends the calls in flight within `grace` seconds and returns a
    `threading.Event` that is set once the server has stopped.
    """

    def __init__(self, executor: futures.ThreadPoolExecutor):
        self._executor = executor
        self._server = None
        self._loop = _new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tfcv-grpc-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine):
        """Runs `coroutine` on the server's event loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def start(self) -> None:
        self.run(self._server.start())

    def stop(self, grace: float | None) -> threading.Event:
        if self._thread.is_alive():
            if self._server is not None:
                self.run(self._server.stop(grace))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        stopped = threading.Event()
        stopped.set()
        return stopped


def _new_event_loop() -> asyncio.AbstractEventLoop:
    # uvloop runs the loop's callbacks and wake-ups in C (libuv): 10-20%
    # less server CPU per gRPC request under bench/serve_load.py. It
    # does not exist on Windows, where asyncio's own loop serves.
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def parse_channel_arguments(text: str) -> list[tuple[str, object]]:
    """Parses `--grpc_channel_arguments`: `name=value` pairs separated by commas.

    Integer values become ints, as TF Serving passes them to gRPC.

    Raises:
        ValueError: for an item without `=`.
    """
    arguments = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"Invalid value for argument `grpc_channel_arguments`. Received: {item!r}. "
                "Expected name=value pairs separated by commas."
            )
        value = value.strip()
        arguments.append((name.strip(), int(value) if value.lstrip("-").isdigit() else value))
    return arguments


# TF Serving writes outputs with Tensor::AsProtoField: the typed repeated
# field of the dtype, never tensor_content.
_TYPED_FIELDS = {
    np.dtype(np.float32): ("float_val", types_pb2.DT_FLOAT),
    np.dtype(np.float64): ("double_val", types_pb2.DT_DOUBLE),
    np.dtype(np.int32): ("int_val", types_pb2.DT_INT32),
    np.dtype(np.int16): ("int_val", types_pb2.DT_INT16),
    np.dtype(np.int8): ("int_val", types_pb2.DT_INT8),
    np.dtype(np.uint8): ("int_val", types_pb2.DT_UINT8),
    np.dtype(np.uint16): ("int_val", types_pb2.DT_UINT16),
    np.dtype(np.int64): ("int64_val", types_pb2.DT_INT64),
    np.dtype(np.uint32): ("uint32_val", types_pb2.DT_UINT32),
    np.dtype(np.uint64): ("uint64_val", types_pb2.DT_UINT64),
    np.dtype(np.bool_): ("bool_val", types_pb2.DT_BOOL),
}


def array_to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A `TensorProto` with the values in their typed field, as TF Serving answers."""
    array = np.asarray(array)
    typed = _TYPED_FIELDS.get(array.dtype)
    if typed is None and array.dtype.kind not in "OSU":
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto()
    for d in array.shape:
        proto.tensor_shape.dim.add(size=d)
    flat = array.reshape(-1)
    if typed is None:
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist())
        return proto
    field, proto.dtype = typed
    getattr(proto, field).extend(flat.tolist())
    return proto


async def _abort(context: grpc.aio.ServicerContext, error: ServingError):
    await context.abort(getattr(grpc.StatusCode, error.grpc_code), error.message)


def _model_lookup(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label if model_spec.WhichOneof("version_choice") == "version_label" else None
    return model_spec.name, version, label


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService`: predict, classify, regress, multi-inference, metadata."""

    def __init__(self, registry: ModelRegistry, *, strict: bool = False, max_message_bytes: int = 16 * 1024 * 1024,
                 metrics=None, tensor_content: bool = False, executor: futures.Executor | None = None):
        self.registry = registry
        self.strict = strict
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self.executor = executor
        self._to_proto = tf.make_tensor_proto if tensor_content else array_to_tensor_proto

    async def _answer(self, api: str, model_name: str, answer, request, context):
        started = time.perf_counter()
        status = "OK"
        try:
            return await answer(request)
        except ServingError as error:
            status = error.grpc_code
            await _abort(context, error)
        except Exception as error:  # noqa: BLE001 - a server bug still answers a status
            status = "INTERNAL"
            logger.exception("Unexpected error answering %s", api)
            await _abort(context, ServingError(f"Internal error: {type(error).__name__}: {error}"))
        finally:
            if self.metrics is not None:
                self.metrics.record_request(model_name, api, "GRPC", status, time.perf_counter() - started)

    def _in_thread(self, fn, *args, **kwargs):
        return asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def Predict(self, request, context):  # noqa: N802 - the gRPC method name
        return await self._answer("Predict", request.model_spec.name, self._predict, request, context)

    async def Classify(self, request, context):  # noqa: N802 - the gRPC method name
        return await self._answer("Classify", request.model_spec.name, self._blocking(self._classify),
                                  request, context)

    async def Regress(self, request, context):  # noqa: N802 - the gRPC method name
        return await self._answer("Regress", request.model_spec.name, self._blocking(self._regress),
                                  request, context)

    async def MultiInference(self, request, context):  # noqa: N802 - the gRPC method name
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return await self._answer("MultiInference", name, self._blocking(self._multi_inference), request, context)

    def _blocking(self, fn):
        async def answer(request):
            return await self._in_thread(fn, request)

        return answer

    async def _predict(self, request) -> predict_pb2.PredictResponse:
        servable = self.registry.get(*_model_lookup(request.model_spec))
        signature = servable.signature(request.model_spec.signature_name)
        if request.output_filter or _input_bytes(request) > _LOOP_INPUT_BYTES:
            outputs = await self._in_thread(self._predict_outputs, signature, request)
        else:
            # A small request is decoded here and awaits its batch on the
            # loop: a thread hop costs more than the decoding.
            inputs = self._decode(signature, request)
            future = signature.try_predict_batched(inputs, allow_nonfinite=not self.strict, strict=self.strict)
            if future is None:
                outputs = await self._in_thread(self._run, signature, inputs, ())
            else:
                outputs = await asyncio.wrap_future(future)
                outputs = {name: outputs[name] for name in sorted(outputs)}
        if sum(np.size(value) for value in outputs.values()) > _LOOP_OUTPUT_VALUES:
            return await self._in_thread(self._predict_response, servable, signature, outputs)
        return self._predict_response(servable, signature, outputs)

    def _decode(self, signature, request) -> dict[str, np.ndarray]:
        return tensor_protos_to_arrays(request.inputs, signature, max_bytes=self.max_message_bytes,
                                       strict=self.strict)

    def _run(self, signature, inputs, output_filter) -> dict[str, np.ndarray]:
        return signature.predict(inputs, output_filter=output_filter, allow_nonfinite=not self.strict,
                                 strict=self.strict)

    def _predict_outputs(self, signature, request) -> dict[str, np.ndarray]:
        return self._run(signature, self._decode(signature, request), request.output_filter)

    def _predict_response(self, servable, signature, outputs) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(self._to_proto(value))
        return response

    def _classify(self, request) -> classification_pb2.ClassificationResponse:
        servable = self.registry.get(*_model_lookup(request.model_spec))
        examples = inference.examples_from_input(request.input)
        response = classification_pb2.ClassificationResponse()
        response.result.CopyFrom(inference.classify(servable, request.model_spec.signature_name, examples))
        inference.set_model_spec(response.model_spec, servable, request.model_spec.signature_name)
        return response

    def _regress(self, request) -> regression_pb2.RegressionResponse:
        servable = self.registry.get(*_model_lookup(request.model_spec))
        examples = inference.examples_from_input(request.input)
        response = regression_pb2.RegressionResponse()
        response.result.CopyFrom(inference.regress(servable, request.model_spec.signature_name, examples))
        inference.set_model_spec(response.model_spec, servable, request.model_spec.signature_name)
        return response

    def _multi_inference(self, request):
        inference.check_multi_inference_model(request)
        servable = self.registry.get(*_model_lookup(request.tasks[0].model_spec))
        examples = inference.examples_from_input(request.input)
        return inference.multi_inference(servable, request, examples)

    async def GetModelMetadata(self, request, context):  # noqa: N802 - the gRPC method name
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field.")
            unsupported = [f for f in fields if f != _SIGNATURE_DEF]
            if unsupported:
                raise InvalidArgument(f"Metadata field {unsupported[0]} is not supported; use {_SIGNATURE_DEF!r}.")
            servable = self.registry.get(*_model_lookup(request.model_spec))
        except ServingError as error:
            await _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[_SIGNATURE_DEF].Pack(servable.signature_def_map)
        return response


def _input_bytes(request) -> int:
    return sum(proto.ByteSize() for proto in request.inputs.values())


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: `GetModelStatus`."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    async def GetModelStatus(self, request, context):  # noqa: N802 - the gRPC method name
        try:
            return self.registry.status(*_model_lookup(request.model_spec))
        except ServingError as error:
            await _abort(context, error)

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802 - the gRPC method name
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
