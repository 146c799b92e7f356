"""One loaded model version: its signatures, their input checks and its warmup.

A `Servable` is what TF Serving calls a servable: one version directory of a
model. A TF2 SavedModel is loaded with `tf.saved_model.load` and called
through its signature functions; a TF1 graph (no object graph: reference
variables, `ParseExample` on inputs of unknown rank, ...) runs, as in TF
Serving, in a `tf.compat.v1.Session` over its MetaGraph. The signatures are
described by the `SignatureDef`s of `saved_model.pb` (the source of truth
for names and dtypes, as in TF Serving). Shapes are left to TensorFlow, as
TF Serving does, and its refusal becomes a 400; `strict=True` checks them
against the signature first, with an error that names the expected and the
received shape.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tfcv import _compat, bundle
from tfcv.bundle import SERVING_DEFAULT as DEFAULT_SIGNATURE
from tfcv.serving.batching import Batcher, BatchingOptions
from tfcv.serving.errors import InvalidArgument, ServingError, SignatureNotFound

__all__ = ["DEFAULT_SIGNATURE", "Servable", "Signature", "TensorInfo"]

logger = logging.getLogger("tfcv.serving")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and shape of one signature input or output.

    Args:
        name: `str`. The key of the tensor in the signature.
        dtype: `tf.DType`.
        shape: Tuple of ints and `None` (any size), or `None` for an
            unknown rank.
        tensor_name: `str`. The graph tensor, e.g. `"x:0"`.
    """

    name: str
    dtype: tf.DType
    shape: tuple[int | None, ...] | None
    tensor_name: str = ""

    @classmethod
    def from_proto(cls, name: str, info: meta_graph_pb2.TensorInfo) -> TensorInfo:
        shape = None
        if not info.tensor_shape.unknown_rank:
            shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
        # TF1 graphs declare reference dtypes (DT_FLOAT_REF) for variables;
        # what is fed and fetched is the base dtype.
        return cls(name, tf.dtypes.as_dtype(info.dtype).base_dtype, shape, info.name)

    @property
    def dtype_name(self) -> str:
        return types_pb2.DataType.Name(self.dtype.as_datatype_enum)

    @property
    def shape_string(self) -> str:
        if self.shape is None:
            return "[?]"
        return format_shape(-1 if d is None else d for d in self.shape)

    @property
    def batched(self) -> bool:
        """Whether the leading dimension is a batch of any size."""
        return bool(self.shape) and self.shape[0] is None


def format_shape(shape: Iterable[int]) -> str:
    """Formats a shape as TF Serving does: `[-1,8,8,1]`."""
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


class Signature:
    """One signature of a servable: checks inputs, runs the model.

    Args:
        name: `str`. The signature key, e.g. `"serving_default"`.
        fn: The concrete function from `loaded.signatures[name]`, or a
            callable taking a dict of NumPy arrays (and `outputs`, the
            output names wanted) and returning a dict of NumPy arrays.
        signature_def: The `SignatureDef` proto from `saved_model.pb`.
        batching: A `BatchingOptions` to batch concurrent calls, or `None`
            to call the model once per request.
    """

    def __init__(self, name: str, fn, signature_def: meta_graph_pb2.SignatureDef,
                 batching: BatchingOptions | None = None):
        self.name = name
        self.fn = fn
        self._session_run = not isinstance(fn, tf.types.experimental.ConcreteFunction)
        self._flat = None if self._session_run else _flat_parameters(fn, signature_def)
        self._executor = None if self._session_run else _SINGLE_THREADED
        self.method_name = signature_def.method_name
        self.inputs = {k: TensorInfo.from_proto(k, v) for k, v in sorted(signature_def.inputs.items())}
        self.outputs = {k: TensorInfo.from_proto(k, v) for k, v in sorted(signature_def.outputs.items())}
        self._batcher = Batcher(self._call, batching) if batching is not None and self.batchable else None

    def __repr__(self) -> str:
        inputs = ", ".join(f"{k}: {v.dtype_name}{v.shape_string}" for k, v in self.inputs.items())
        return f"Signature(name={self.name!r}, inputs=({inputs}), outputs={list(self.outputs)})"

    @property
    def batchable(self) -> bool:
        """Whether requests can be concatenated: every tensor has a batch axis and fixed rest."""
        tensors = [*self.inputs.values(), *self.outputs.values()]
        return bool(self.inputs) and all(t.batched for t in tensors) and all(
            None not in t.shape[1:] for t in self.inputs.values()
        )

    @property
    def batched(self) -> bool:
        """Whether calls go through a `Batcher`."""
        return self._batcher is not None

    def check_inputs(self, inputs: Mapping[str, np.ndarray], *, allow_nonfinite: bool = True,
                     strict: bool | None = None) -> dict:
        """Checks input names and dtypes (and shapes, if strict) against the signature.

        Args:
            inputs: Dict of NumPy arrays keyed by input name.
            allow_nonfinite: `bool`. Whether NaN and Infinity are accepted in
                floating-point inputs. Defaults to `True`, as TF Serving.
            strict: `bool`. Check shapes and batch sizes against the
                signature too. Defaults to `not allow_nonfinite`: TF
                Serving leaves shapes to TensorFlow.

        Returns:
            The same arrays, in a new dict.

        Raises:
            InvalidArgument: naming the input, and the expected and received
                names, dtypes or shapes.
        """
        strict = not allow_nonfinite if strict is None else strict
        self.check_names(inputs)
        checked = {}
        for name, info in self.inputs.items():
            value = np.asarray(inputs[name])
            where = f"Input `{name}` of signature `{self.name}`"
            if not _dtype_matches(value.dtype, info.dtype):
                raise InvalidArgument(
                    f"{where} expects dtype {info.dtype_name}, received {_dtype_name(value.dtype)}."
                )
            checked[name] = value
            if not strict:
                continue
            if info.batched and value.ndim >= 1 and value.shape[0] == 0:
                raise InvalidArgument(
                    f"{where} received an empty batch (shape {format_shape(value.shape)}); "
                    f"send at least one instance of shape {format_shape(_dims(info.shape[1:]))}."
                )
            _check_shape(where, info, value.shape)
            if not allow_nonfinite and value.dtype.kind == "f" and not np.isfinite(value).all():
                raise InvalidArgument(f"{where} contains NaN or Infinity, which this server refuses (--strict).")
        if not strict:
            return checked
        batch_sizes = {name: v.shape[0] for name, v in checked.items() if self.inputs[name].batched}
        if len(set(batch_sizes.values())) > 1:
            raise InvalidArgument(
                f"Inputs of signature `{self.name}` have different batch sizes: {batch_sizes}."
            )
        return checked

    def check_names(self, received: Iterable[str], *, where: str = "The request") -> None:
        """Raises `InvalidArgument` unless `received` are exactly the input names."""
        expected, received = set(self.inputs), set(received)
        if received != expected:
            unknown, missing = sorted(received - expected), sorted(expected - received)
            problem = f"unknown input name(s) {unknown}" if unknown else f"missing input(s) {missing}"
            raise InvalidArgument(
                f"{where} has {problem} for signature `{self.name}`. Expected inputs: {sorted(expected)}."
            )

    def predict(self, inputs: Mapping[str, np.ndarray], *, output_filter: Iterable[str] = (),
                allow_nonfinite: bool = True, strict: bool | None = None) -> dict[str, np.ndarray]:
        """Checks `inputs` and runs the signature (batched when enabled).

        Args:
            inputs: Dict of NumPy arrays keyed by input name.
            output_filter: Names of the outputs to return. Defaults to all.
            allow_nonfinite: `bool`. See `check_inputs`.
            strict: `bool`. See `check_inputs`.

        Returns:
            Dict of NumPy arrays keyed by output name, sorted by name.
        """
        wanted = list(output_filter)
        unknown = sorted(set(wanted) - set(self.outputs))
        if unknown:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be in the set "
                f"{{{','.join(sorted(self.outputs))}}}."
            )
        if len(set(wanted)) != len(wanted):
            raise InvalidArgument(f"duplicate output tensor alias: {wanted[0]}")
        checked = self.check_inputs(inputs, allow_nonfinite=allow_nonfinite, strict=strict)
        if wanted and self._session_run:
            # A session fetches only what is asked for, as TF Serving does
            # (an output may be an op with side effects, as in TF1 counters).
            outputs = self._call(checked, sorted(wanted))
        else:
            future = self._batcher.try_submit(checked) if self._batcher is not None else None
            outputs = self._call(checked) if future is None else future.result()
        return {k: outputs[k] for k in sorted(outputs) if not wanted or k in wanted}

    def try_predict_batched(self, inputs: Mapping[str, np.ndarray], *, allow_nonfinite: bool = True,
                            strict: bool | None = None) -> concurrent.futures.Future | None:
        """Checks `inputs` and queues them for a batch, without waiting.

        For callers that must not block (an event loop awaits the future
        with `asyncio.wrap_future`).

        Args:
            inputs: Dict of NumPy arrays keyed by input name.
            allow_nonfinite: `bool`. See `check_inputs`.
            strict: `bool`. See `check_inputs`.

        Returns:
            A `concurrent.futures.Future` of the dict of all outputs, or
            `None` when this call is not batched (batching off, or a request
            the batcher runs on its own): call `predict` instead.

        Raises:
            InvalidArgument: as `check_inputs`.
        """
        if self._batcher is None:
            return None
        return self._batcher.try_submit(self.check_inputs(inputs, allow_nonfinite=allow_nonfinite, strict=strict))

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    def _call(self, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        try:
            if self._session_run:
                return self.fn(inputs, outputs or list(self.outputs))
            result = self._call_function(inputs)
        except tf.errors.InvalidArgumentError as error:
            raise InvalidArgument(f"Signature `{self.name}` refused the input: {_op_message(error)}") from None
        except tf.errors.OpError as error:
            raise ServingError(f"Signature `{self.name}` failed: {_op_message(error)}") from None
        except (TypeError, ValueError) as error:
            # The signature function refuses shapes it was not traced for
            # before running; TF Serving would answer the same 400.
            raise InvalidArgument(f"Signature `{self.name}` refused the input: {_first_line(error)}") from None
        return {k: v.numpy() for k, v in result.items()}

    def _call_function(self, inputs: Mapping[str, np.ndarray]):
        if self._flat is not None and self._flat[0] is self.fn:
            tensors = _flat_tensors(self._flat[1], inputs)

            def call():
                return _compat.call_with_captures(self.fn, tensors, self.fn.captured_inputs)
        else:
            def call():
                return self.fn(**{k: tf.constant(v) for k, v in inputs.items()})
        executor = self._executor
        if executor is None:
            return call()
        try:
            with tf.experimental.function_executor_type(executor):
                return call()
        except tf.errors.FailedPreconditionError as error:
            # The single-threaded executor refuses TF1 control flow (Switch,
            # Merge) when it builds the graph, before any op has run, so the
            # call can be made again with TensorFlow's default executor.
            if _SINGLE_THREADED_REFUSAL not in error.message:
                raise
            self._executor = None
            logger.info("Signature `%s` runs with TensorFlow's default executor: %s", self.name,
                        _first_line(error))
            return call()


# A small model's kernels cost less than handing them to TensorFlow's
# inter-op threads and waiting for them (and those threads spin between
# calls): the single-threaded executor runs a function's ops in the calling
# thread. Concurrency comes from the batch threads (or the request threads).
_SINGLE_THREADED = "SINGLE_THREADED_EXECUTOR"
_SINGLE_THREADED_REFUSAL = "Single-threaded executor does not support"


def _flat_parameters(fn, signature_def) -> tuple | None:
    """`(fn, [(name, spec), ...])` in `fn`'s flat input order, or `None`.

    Calling a signature by keyword binds the arguments to its
    `FunctionType` on every call, about 40 us of Python (a tenth of a
    one-row call of a small CNN, measured); `_compat.call_with_captures`
    takes the tensors in parameter order instead. `None` (keyword calls)
    when this TensorFlow cannot (`_compat.can_call_with_captures`) or a
    parameter is not one tensor per input.
    """
    specs = [(p.name, p.annotation) for p in fn.function_type.parameters.values()]
    if {name for name, _ in specs} != set(signature_def.inputs) or not all(
        isinstance(spec, tf.TensorSpec) for _, spec in specs
    ):
        return None
    if not _compat.can_call_with_captures(fn):
        logger.warning("This TensorFlow cannot call a signature with flat tensors; signatures are called by keyword, "
                       "about 40 us slower per model call.")
        return None
    return fn, specs


def _flat_tensors(specs: list, inputs: Mapping[str, np.ndarray]) -> list:
    tensors = []
    for name, spec in specs:
        tensor = tf.constant(inputs[name])
        # What binding the keywords would check: the flat call runs any
        # shape through the graph.
        if not spec.shape.is_compatible_with(tensor.shape):
            raise ValueError(
                f"Input `{name}` has shape {format_shape(tensor.shape)}, which the signature's "
                f"{format_shape(_dims(spec.shape))} does not accept (-1: any size)."
            )
        tensors.append(tensor)
    return tensors


# What TensorFlow wraps an op's own message in when a function fails: a
# preamble, where the node was defined (never known for a loaded
# SavedModel), node names and the traced function's id. A client can do
# nothing with them; TF Serving answers with the op's message.
_TF_WRAPPING = re.compile(
    r"^\s*Graph execution error:"
    r"|Detected at node \S+ defined at \(most recent call last\):\s*<stack traces unavailable>"
    r"|\[\[\{\{[^\]]*\}\}\]\]"
    r"|\[Op:[^\]]*\]"
)


def _op_message(error: tf.errors.OpError) -> str:
    """The message of the op that refused or failed, on one line."""
    return " ".join(_TF_WRAPPING.sub(" ", error.message).split()) or error.message


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return " ".join(text.split()) if len(text) < 400 else text.splitlines()[0]


class _GraphSession:
    """A TF1 SavedModel run as TF Serving runs it: a session over the MetaGraph."""

    def __init__(self, path: str):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, [bundle.SERVE_TAG], path)
        self._callables: dict = {}

    def runner(self, signature_def: meta_graph_pb2.SignatureDef):
        """A callable `(inputs, outputs) -> dict` feeding and fetching by tensor name."""
        feeds = {k: v.name for k, v in signature_def.inputs.items()}
        fetches = {k: v.name for k, v in signature_def.outputs.items()}
        session = self.session

        def run(inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
            names = sorted(inputs)
            key = (id(signature_def), tuple(names), tuple(outputs))
            call = self._callables.get(key)
            if call is None:
                call = _compat.session_callable(session, [feeds[k] for k in names], [fetches[k] for k in outputs])
                self._callables[key] = call
            values = call(*(inputs[k] for k in names))
            return {k: np.asarray(v) for k, v in zip(outputs, values, strict=True)}

        return run

    def close(self) -> None:
        self.session.close()


class Servable:
    """One model version loaded from `path` and ready to serve.

    Args:
        name: `str`. The model name.
        version: `int`. The version number (the directory name).
        path: `str`. The version directory holding `saved_model.pb`.
        batching: A `BatchingOptions`, or `None` to disable batching.

    Example:

    >>> servable = Servable("digits", 1, "models/digits/1")
    >>> servable.warmup()
    >>> servable.signature("serving_default").predict({"image": x})
    """

    def __init__(self, name: str, version: int, path: str, *, batching: BatchingOptions | None = None):
        self.name = name
        self.version = int(version)
        self.path = path
        self.signature_def_map = bundle.read_signature_def_map(path)
        self._session = None
        if bundle.is_tf1_saved_model(path):
            self._session = _GraphSession(path)
            defs = self.signature_def_map.signature_def
            self.signatures = {
                key: Signature(key, self._session.runner(defs[key]), defs[key], batching)
                for key in sorted(defs) if defs[key].outputs and not key.startswith("__")
            }
        else:
            self._loaded = tf.saved_model.load(path, tags=[bundle.SERVE_TAG])
            self.signatures = {
                key: Signature(key, fn, self.signature_def_map.signature_def[key], batching)
                for key, fn in sorted(self._loaded.signatures.items())
                if key in self.signature_def_map.signature_def
            }

    def __repr__(self) -> str:
        return f"Servable(name={self.name!r}, version={self.version}, signatures={sorted(self.signatures)})"

    def signature(self, signature_name: str = "") -> Signature:
        """The signature `signature_name` (`""` means `serving_default`).

        Raises:
            SignatureNotFound: if the model has no such signature.
        """
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise SignatureNotFound(
                f'Serving signature name: "{key}" not found in signature def of model `{self.name}` '
                f"version {self.version}. Signatures: {sorted(self.signatures)}."
            )
        return self.signatures[key]

    def warmup(self) -> int:
        """Replays the bundle's warmup records, as TF Serving does before serving.

        Every kind TF Serving replays is replayed: predict, classify,
        regress and multi-inference.

        Returns:
            The number of records replayed (0 when the bundle has none).

        Raises:
            ValueError: if the warmup file cannot be read (a
                `tfcv.bundle.BundleError`) or a request fails.
        """
        # inference.py builds on this module (classify and regress run a
        # Signature), so it is imported here rather than at the top.
        from tfcv.serving.inference import replay_warmup_log

        path = os.path.join(self.path, bundle.WARMUP_PATH)
        logs = bundle.read_warmup_logs(self.path)
        for count, log in enumerate(logs, start=1):
            try:
                replay_warmup_log(self, log)
            except ServingError as error:
                raise ValueError(f"Warmup record {count} of {path} failed: {error.message}") from None
        return len(logs)

    def close(self) -> None:
        """Stops the batch threads; requests already queued still get answers."""
        for signature in self.signatures.values():
            signature.close()
        if self._session is not None:
            self._session.close()


def tensor_protos_to_arrays(protos: Mapping, signature: Signature, *,
                            max_bytes: int | None = None, strict: bool = True) -> dict[str, np.ndarray]:
    """Converts a map of `TensorProto`s (a `PredictRequest.inputs`) to arrays.

    Every proto is checked against `signature` before any is converted: its
    name, its dtype (exactly the input's, as TF Serving requires) and its
    declared shape. A few bytes of proto can declare a huge shape filled
    with one value (`tf.make_ndarray` repeats the last value to the full
    shape), so the size the arrays will take is computed from the declared
    shapes and bounded by `max_bytes` before anything is allocated.

    Args:
        protos: Map of input name to `TensorProto`.
        signature: The `Signature` the request is for.
        max_bytes: `int` or `None`. Largest size the converted inputs may
            take together (strings count `_STRING_ELEMENT_BYTES` per
            element plus their contents). `None` for no limit.
        strict: `bool`. Check declared shapes against the signature.
            Defaults to `True`; TF Serving leaves them to TensorFlow.

    Raises:
        InvalidArgument: for an unknown or missing input name, a wrong or
            unknown dtype, a shape that does not fit the signature, a
            malformed proto, or inputs above `max_bytes`.
    """
    signature.check_names(protos)
    total = 0
    for name, info in signature.inputs.items():
        where = f"Input `{name}` of signature `{signature.name}`"
        dims = _check_proto(where, protos[name], info, strict=strict)
        if max_bytes is None:
            continue
        size = _converted_bytes(protos[name], dims)
        total += size
        if total > max_bytes:
            others = f" ({total} bytes with the inputs before it)" if total != size else ""
            raise InvalidArgument(
                f"{where} of shape {format_shape(dims)} would take {size} bytes once converted{others}, "
                f"above the limit of {max_bytes} bytes (--max_body_bytes)."
            )
    arrays = {}
    for name in signature.inputs:
        try:
            arrays[name] = tf.make_ndarray(protos[name])
        except (TypeError, ValueError) as error:
            raise InvalidArgument(f"Input `{name}` is not a valid TensorProto: {error}") from None
    return arrays


# Whatever its length, one string element costs its pointer in the NumPy
# object array (8 bytes) and its tstring in the tensor the model is called
# with (24 bytes).
_STRING_ELEMENT_BYTES = 32


def _check_proto(where: str, proto, info: TensorInfo, *, strict: bool = True) -> list[int]:
    """Checks the dtype and declared shape of `proto`; returns its dims."""
    if proto.dtype != info.dtype.as_datatype_enum:
        try:
            received = types_pb2.DataType.Name(proto.dtype)
        except ValueError:
            received = f"an unknown dtype enum {proto.dtype}"
        raise InvalidArgument(f"{where} expects dtype {info.dtype_name}, received {received}.")
    if proto.tensor_shape.unknown_rank:
        raise InvalidArgument(f"{where} declares an unknown rank; a tensor needs its shape.")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise InvalidArgument(f"{where} has a negative dimension in its shape {format_shape(dims)}.")
    if strict:
        _check_shape(where, info, dims)
    return dims


def _converted_bytes(proto, dims: list[int]) -> int:
    """The bytes `tf.make_ndarray(proto)` and the model's input tensor take."""
    count = math.prod(dims)
    if proto.dtype != types_pb2.DT_STRING:
        return count * max(tf.dtypes.as_dtype(proto.dtype).size, 1)
    values = proto.string_val
    # The last value is repeated up to the declared count, and each copy
    # is a string of its own in the tensor.
    repeated = max(count - len(values), 0) * (len(values[-1]) if values else 0)
    return count * _STRING_ELEMENT_BYTES + sum(len(v) for v in values[:count]) + repeated


def _check_shape(where: str, info: TensorInfo, shape: Iterable[int]) -> None:
    shape = tuple(shape)
    if info.shape is not None and (
        len(shape) != len(info.shape)
        or any(e is not None and e != g for e, g in zip(info.shape, shape, strict=True))
    ):
        raise InvalidArgument(
            f"{where} expects shape {info.shape_string} (-1: any size), received shape {format_shape(shape)}."
        )


def _dims(shape) -> list[int]:
    return [-1 if d is None else d for d in shape]


def _dtype_matches(received: np.dtype, expected: tf.DType) -> bool:
    if expected == tf.string:
        return received.kind in "OS"
    return received == np.dtype(expected.as_numpy_dtype)


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.kind in "OSU":
        return "DT_STRING" if dtype.kind != "O" else "objects (DT_STRING or null)"
    try:
        return types_pb2.DataType.Name(tf.dtypes.as_dtype(dtype).as_datatype_enum)
    except TypeError:
        return str(dtype)
